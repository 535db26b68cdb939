package loadtest

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseMetrics feeds arbitrary Prometheus text: no panic, and a series
// the scraper reads comes back with the value written.
func FuzzParseMetrics(f *testing.F) {
	f.Add("# HELP x\nprocess_resident_memory_bytes 1.5e+07\ngo_goroutines 12\n", 42.0)
	f.Add(`wsfleet_gateway_connections{a="}"} 3`+"\n", 1.0)
	f.Add("process_cpu_seconds_total 1e400\n\x00", 0.5)
	f.Fuzz(func(t *testing.T, text string, v float64) {
		parseMetrics(strings.NewReader(text))
		if v != v || v > 1e300 || v < -1e300 {
			return
		}
		s, err := parseMetrics(strings.NewReader("go_goroutines " + formatFloat(v) + "\n"))
		if err != nil || s.Goroutines != v {
			t.Fatalf("go_goroutines %v read as %+v, %v", v, s, err)
		}
	})
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// FuzzParseSourceIPs: no panic; every address returned is a valid, unique IP.
func FuzzParseSourceIPs(f *testing.F) {
	for _, s := range []string{"127.0.0.2-127.0.0.60", "10.0.0.1,10.0.0.2", "::1", "1.2.3.4-1.2.3.3", "a-b", "127.0.0.1-127.1.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ips, err := parseSourceIPs(spec)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, ip := range ips {
			if _, err := netip.ParseAddr(ip); err != nil || seen[ip] {
				t.Fatalf("%q gave %q", spec, ip)
			}
			seen[ip] = true
		}
	})
}

// FuzzMessageBody: whatever a body holds, the fields a device reads are
// read without panics, and a body the publisher writes reads back exactly.
func FuzzMessageBody(f *testing.F) {
	f.Add([]byte(`{"lt":"run","u":7,"s":3,"t":123}`), uint32(5), int64(99), 7, 64)
	f.Add([]byte(`"u":`), uint32(1), int64(0), 0, 0)
	f.Fuzz(func(t *testing.T, junk []byte, seq uint32, ts int64, user, size int) {
		jsonUint(junk, `"t":`)
		jsonUint(junk, `,"u":`)
		header(junk, "retry-after")
		if ts < 0 || user < 0 || size < 0 || size > 1<<16 {
			return
		}
		b := appendBody(nil, "r1", user, false, seq, ts, size)
		if u, ok := jsonUint(b, `,"u":`); !ok || u != uint64(user) {
			t.Fatalf("user %d read as %d from %s", user, u, b)
		}
		if s, ok := jsonUint(b, `"s":`); !ok || s != uint64(seq) {
			t.Fatalf("seq %d read as %d", seq, s)
		}
		if got, ok := jsonUint(b, `"t":`); !ok || got != uint64(ts) {
			t.Fatalf("t %d read as %d", ts, got)
		}
	})
}
