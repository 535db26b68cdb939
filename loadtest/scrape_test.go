package loadtest

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	s, err := parseMetrics(strings.NewReader(`# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
process_resident_memory_bytes 1.2345e+08
wsfleet_gateway_connections 1000
wsfleet_gateway_connections_total{x="y"} 7
process_open_fds 1030
process_cpu_seconds_total 12.5
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Goroutines != 42 || s.RSSBytes != 123450000 || s.Connections != 1000 || s.OpenFDs != 1030 || s.CPUSeconds != 12.5 {
		t.Fatalf("%+v", s)
	}
	if _, err := parseMetrics(strings.NewReader("foo 1\n")); err == nil {
		t.Fatal("page without the series accepted")
	}
}
