package loadtest

import "golang.org/x/sys/unix"

// mono returns CLOCK_MONOTONIC in nanoseconds. Unlike time.Now's monotonic
// reading it is the same clock in every process of the machine, so a send
// time stamped by one process and a receive time taken by another compare.
func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}
