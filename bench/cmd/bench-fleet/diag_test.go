package main

import (
	"strings"
	"testing"
	"time"
)

func TestDiagBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := counters{at: t0, natsWarn: 2,
		gw: map[string]float64{
			mShed: 5, mShed + `{reason="pending"}`: 5, mCloses + `{code="1013"}`: 1, mConfirmFail: 3,
		},
		router: map[string]float64{mRouterRecon: 1, mRouterDrop + `{reason="gone"}`: 1},
	}
	b := counters{at: t0.Add(90 * time.Second), natsWarn: 7,
		gw: map[string]float64{
			mShed: 12, mShed + `{reason="pending"}`: 5, mShed + `{reason="loop_lag"}`: 7,
			mRejects + `{status="503"}`: 12, mCloses + `{code="1013"}`: 4, mCloses + `{code="1000"}`: 9,
			mConfirmFail: 3, mUnconfirmed: 0,
		},
		router: map[string]float64{mRouterRecon: 2, mRouterDrop + `{reason="gone"}`: 1, mRouterProbe + `{result="late"}`: 6},
	}
	d := diagBetween("ramp", a, b, []float64{1, 1, 0, 1})
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"seconds", d.Seconds, 90.0},
		{"shed by reason, unchanged reasons left out", kv(d.Shed), "loop_lag 7"},
		{"rejections by status", kv(d.Rejections), "503 12"},
		{"1013 closes only", d.Closes1013, 3.0},
		{"confirm failures", d.ConfirmFailures, 0.0},
		{"NATS slow reads", d.NATSSlowReads, 5},
		{"router down samples", d.RouterNATSDownSamples, 1},
		{"router samples", d.RouterNATSSamples, 4},
		{"router reconnects", d.RouterReconnects, 1.0},
		{"nodes dropped: none new", kv(d.RouterNodesDropped), "none"},
		{"probes", kv(d.RouterProbes), "late 6"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if s := d.String(); !strings.HasPrefix(s, "ramp") || !strings.Contains(s, "shed loop_lag 7") {
		t.Errorf("String() = %q", s)
	}
}
