package hostinfo

import "testing"

func TestParsePortRange(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		lo, hi   int
	}{
		{"the file's format", "32768\t60999\n", 32768, 60999},
		{"widened", "1024 65535", 1024, 65535},
		{"one number", "1024", DefaultPortLow, DefaultPortHigh},
		{"reversed", "60999 32768", DefaultPortLow, DefaultPortHigh},
		{"not numbers", "a b", DefaultPortLow, DefaultPortHigh},
		{"out of range", "0 70000", DefaultPortLow, DefaultPortHigh},
		{"empty", "", DefaultPortLow, DefaultPortHigh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if lo, hi := ParsePortRange(tc.in); lo != tc.lo || hi != tc.hi {
				t.Fatalf("ParsePortRange(%q) = %d, %d; want %d, %d", tc.in, lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

func TestHostReadings(t *testing.T) {
	if lo, hi := PortRange(); lo < 1 || hi > 65535 || lo > hi {
		t.Fatalf("PortRange() = %d, %d", lo, hi)
	}
	if n := CPUs(); n < 1 {
		t.Fatalf("CPUs() = %d", n)
	}
}
