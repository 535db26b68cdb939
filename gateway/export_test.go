package gateway

// SetSnapshotChunkUsers sets the users per presence snapshot reply, for
// tests that need a snapshot of many replies from a few users; the
// returned function restores it.
func SetSnapshotChunkUsers(n int) (restore func()) {
	old := snapshotChunkUsers
	snapshotChunkUsers = n
	return func() { snapshotChunkUsers = old }
}

// SetDirectGetSubject makes the node send the history stream's direct gets
// to subj, where a test can answer as a lagging replica would.
func SetDirectGetSubject(o *Options, subj string) { o.directGetSubject = subj }
