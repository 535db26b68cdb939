package gateway

// SetSnapshotChunkUsers sets the users per presence snapshot reply, for
// tests that need a snapshot of many replies from a few users; the
// returned function restores it.
func SetSnapshotChunkUsers(n int) (restore func()) {
	old := snapshotChunkUsers
	snapshotChunkUsers = n
	return func() { snapshotChunkUsers = old }
}
