package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A million connections on loopback are 2,000,000 TCP sockets in one
// network namespace. The kernel looks every arriving segment up in the
// namespace's established-connection hash, which the host sized at boot
// for its memory (262,144 buckets on this machine): eight sockets a
// bucket at a million, and the lookup shows in the profile of every
// delivery. Linux (6.1 and later) gives a namespace created after
// net.ipv4.tcp_child_ehash_entries is set a hash of that size, so
// --netns re-runs bench-fleet in a namespace of its own, with its own
// loopback and a hash of ehashBuckets, and everything it starts there.

// ehashBuckets holds 2,000,000 sockets at about one a bucket.
const ehashBuckets = 1 << 21

// netnsEnv marks the bench-fleet process that runs inside the namespace.
const netnsEnv = "BENCHFLEET_IN_NETNS" // not BENCH_FLEET_*: that is the flags' namespace

const childEhashPath = "/proc/sys/net/ipv4/tcp_child_ehash_entries"

// inNetns reports whether this process is the one re-run in the namespace.
func inNetns() bool { return os.Getenv(netnsEnv) == "1" }

// runInNetns re-runs bench-fleet with args in a new network namespace
// whose established hash has ehashBuckets, and returns its exit status.
// The host's tcp_child_ehash_entries is restored once the namespace
// exists. An error means nothing was started: the caller says why and
// runs in the host's namespace.
func runInNetns(args []string) (int, error) {
	old, err := os.ReadFile(childEhashPath)
	if err != nil {
		return 0, fmt.Errorf("this kernel cannot size a namespace's TCP hash (%v)", err)
	}
	if err := os.WriteFile(childEhashPath, []byte(strconv.Itoa(ehashBuckets)), 0o644); err != nil {
		return 0, fmt.Errorf("setting net.ipv4.tcp_child_ehash_entries: %v", err)
	}
	restore := func() { _ = os.WriteFile(childEhashPath, []byte(strings.TrimSpace(string(old))), 0o644) }
	exe, err := os.Executable()
	if err != nil {
		restore()
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	// The child handles Ctrl-C itself (the terminal sends it to both); a
	// SIGTERM or SIGHUP sent to this process only is passed on.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	err = cmd.Start()
	restore() // the namespace exists (or never will)
	if err != nil {
		return 0, fmt.Errorf("starting bench-fleet in a new network namespace: %v", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sig:
				if s != syscall.SIGINT {
					_ = cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	case errors.As(err, &ee):
		return 1, nil // killed by a signal
	}
	return 1, err
}

// loopbackUp brings the namespace's loopback up (a new namespace starts
// with it down); 127.0.0.0/8 is routed on it once it is up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// ehashSize is the established hash of this process's namespace, 0 if
// the kernel does not say.
func ehashSize() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_ehash_entries")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if n < 0 {
		n = -n // the host's table, shared: negative by the kernel's convention
	}
	return n
}
