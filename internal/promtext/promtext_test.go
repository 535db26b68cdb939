package promtext

import (
	"strconv"
	"strings"
	"testing"
)

func TestSum(t *testing.T) {
	const page = `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
wsfleet_gateway_connections{loop="0"} 600
wsfleet_gateway_connections{loop="1"} 400
wsfleet_gateway_connections_total{x="y"} 7
# TYPE lat histogram
lat_bucket{le="1"} 3
lat_bucket{le="+Inf"} 4
lat_sum 2
lat_count 4
`
	for _, tc := range []struct {
		name  string
		names []string
		want  map[string]float64
	}{
		{"a gauge", []string{"go_goroutines"}, map[string]float64{"go_goroutines": 42}},
		{"a counter", []string{"process_cpu_seconds_total"}, map[string]float64{"process_cpu_seconds_total": 12.5}},
		{"untyped, summed over labels, not confused with a longer name", []string{"wsfleet_gateway_connections"}, map[string]float64{"wsfleet_gateway_connections": 1000}},
		{"absent and histogram names are left out", []string{"nope", "lat"}, map[string]float64{}},
		{"several", []string{"go_goroutines", "wsfleet_gateway_connections_total"}, map[string]float64{"go_goroutines": 42, "wsfleet_gateway_connections_total": 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Sum(strings.NewReader(page), tc.names...)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestSumBy(t *testing.T) {
	const page = `# TYPE shed_total counter
shed_total{reason="pending",loop="0"} 2
shed_total{reason="pending",loop="1"} 3
shed_total{reason="nats_lag",loop="0"} 1
# TYPE up gauge
up 1
`
	got, err := SumBy(strings.NewReader(page), []string{"reason"}, "shed_total", "up", "absent")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"shed_total": 6, `shed_total{reason="pending"}`: 5, `shed_total{reason="nats_lag"}`: 1, "up": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := SumBy(strings.NewReader("up{ 1\n"), []string{"reason"}, "up"); err == nil {
		t.Fatal("malformed input: no error")
	}
}

func TestSumMalformed(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"no value", "go_goroutines\n"},
		{"bad value", "go_goroutines abc\n"},
		{"unclosed labels", `go_goroutines{a="b" 1` + "\n"},
		{"type after samples", "x 1\n# TYPE x gauge\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := Sum(strings.NewReader(tc.text), "go_goroutines", "x"); err == nil {
				t.Fatalf("accepted %q: %v", tc.text, got)
			}
		})
	}
}

// FuzzSum: no panic on any text, and a series written with a value reads
// back as that value.
func FuzzSum(f *testing.F) {
	f.Add("# TYPE a gauge\na 1\na{x=\"}\"} 2\n", 1.5)
	f.Add("a{le=\"+Inf\"} NaN\n\x00", -3.0)
	f.Add("a 1e400\n", 0.0)
	f.Fuzz(func(t *testing.T, text string, v float64) {
		_, _ = Sum(strings.NewReader(text), "a")
		if v != v {
			return
		}
		got, err := Sum(strings.NewReader("a "+strconv.FormatFloat(v, 'g', -1, 64)+"\n"), "a")
		if err != nil || got["a"] != v {
			t.Fatalf("a %v read as %v, %v", v, got, err)
		}
	})
}
