package loadtest

import (
	"strings"
	"testing"
)

func TestParseSourceIPs(t *testing.T) {
	got, err := parseSourceIPs("127.0.0.2-127.0.0.4, 10.0.0.1,127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "127.0.0.2,127.0.0.3,127.0.0.4,10.0.0.1" {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"x", "127.0.0.5-127.0.0.1", "127.0.0.1-::1"} {
		if _, err := parseSourceIPs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPlanWorkersAdvice(t *testing.T) {
	lim := Limits{FDHard: 20000, PortLow: 1024, PortHigh: 61023} // 60,000 ports
	err := planWorkers(&lim, 1_000_000, "auto", DefaultConnsPerWorker, 1)
	if err == nil {
		t.Fatal("1,000,000 connections from one source address accepted")
	}
	if lim.Workers != 53 {
		t.Errorf("workers %d, want 53", lim.Workers)
	}
	if !strings.Contains(err.Error(), "N=1,000,000 needs 18 source IPs for ports") {
		t.Errorf("advice: %v", err)
	}
	lim = Limits{FDHard: 20000, PortLow: 32768, PortHigh: 60999}
	lim.SourceIPs = make([]string, 40)
	if err := planWorkers(&lim, 1_000_000, "auto", DefaultConnsPerWorker, 1); err != nil {
		t.Fatal(err)
	}
	lim = Limits{FDHard: 20000, PortLow: 32768, PortHigh: 60999}
	if err := planWorkers(&lim, 5000, "auto", DefaultConnsPerWorker, 1); err != nil || lim.Workers != 1 || lim.Processes != 0 {
		t.Fatalf("5000: %v %+v", err, lim)
	}
	if err := planWorkers(&lim, 50000, "2", DefaultConnsPerWorker, 1); err == nil || !strings.Contains(err.Error(), "needs 3 workers") {
		t.Fatalf("50000 on 2 workers: %v", err)
	}
}
