// Package hostinfo reads what this Linux host allows a load run: the
// ephemeral port range and the CPUs this process may run on. The load
// tester and the fleet benchmark plan their runs with it.
//
// It changes nothing on the host; writing the port range is the fleet
// benchmark's, and only when asked.
package hostinfo

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PortRangeFile is net.ipv4.ip_local_port_range.
const PortRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// The kernel's default ephemeral port range.
const (
	DefaultPortLow  = 32768
	DefaultPortHigh = 60999
)

// PortRange reads the ephemeral port range; the kernel's default when the
// file is missing or unreadable.
func PortRange() (lo, hi int) {
	b, err := os.ReadFile(PortRangeFile)
	if err != nil {
		return DefaultPortLow, DefaultPortHigh
	}
	return ParsePortRange(string(b))
}

// ParsePortRange reads the file's text ("32768\t60999\n"); the kernel's
// default when it is not two ordered port numbers.
func ParsePortRange(s string) (lo, hi int) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return DefaultPortLow, DefaultPortHigh
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || hi < lo {
		return DefaultPortLow, DefaultPortHigh
	}
	return lo, hi
}

// CPUs is the number of CPUs this process may run on (its affinity mask,
// which a container's cpuset narrows); 1 when it cannot be read.
func CPUs() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return max(set.Count(), 1)
	}
	return 1
}
