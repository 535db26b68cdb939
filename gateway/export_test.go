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

// SetPresenceBudget sets the bytes of entries one presence message may
// carry (0: half NATS's payload limit), for tests of the split into
// several messages; the returned function restores it.
func SetPresenceBudget(n int) (restore func()) {
	old := presenceBudget
	presenceBudget = n
	return func() { presenceBudget = old }
}
