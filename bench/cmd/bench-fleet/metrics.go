package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/wsfleet/wsfleet/internal/promtext"
)

// Sample is one gateway's /metrics at one moment, or the sum over the
// gateways of a fleet.
type Sample struct {
	RSS   float64 `json:"rss_bytes"`   // process_resident_memory_bytes
	CPU   float64 `json:"cpu_seconds"` // process_cpu_seconds_total
	Conns float64 `json:"connections"` // wsfleet_gateway_connections
}

// parseSample reads the three series from the Prometheus text format,
// summed over their labels.
func parseSample(r io.Reader) (Sample, error) {
	const rss, cpu, conns = "process_resident_memory_bytes", "process_cpu_seconds_total", "wsfleet_gateway_connections"
	sums, err := promtext.Sum(r, rss, cpu, conns)
	if err != nil {
		return Sample{}, err
	}
	if len(sums) < 3 {
		return Sample{}, fmt.Errorf("want %s, %s and %s, found %d of them", rss, cpu, conns, len(sums))
	}
	return Sample{RSS: sums[rss], CPU: sums[cpu], Conns: sums[conns]}, nil
}

var httpc = &http.Client{Timeout: 30 * time.Second}

func get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp, nil
}

// scrape reads one admin port's /metrics.
func scrape(ctx context.Context, admin string) (Sample, error) {
	resp, err := get(ctx, admin+"/metrics")
	if err != nil {
		return Sample{}, err
	}
	defer resp.Body.Close()
	s, err := parseSample(resp.Body)
	if err != nil {
		return s, fmt.Errorf("%s/metrics: %v", admin, err)
	}
	return s, nil
}

// scrapeAll reads every admin port at once and sums them.
func scrapeAll(ctx context.Context, admins []string) (Sample, []Sample, error) {
	each := make([]Sample, len(admins))
	errs := make([]error, len(admins))
	var wg sync.WaitGroup
	for i, a := range admins {
		wg.Add(1)
		go func(i int, a string) {
			defer wg.Done()
			each[i], errs[i] = scrape(ctx, a)
		}(i, a)
	}
	wg.Wait()
	var sum Sample
	for i := range each {
		if errs[i] != nil {
			return sum, each, errs[i]
		}
		sum.RSS += each[i].RSS
		sum.CPU += each[i].CPU
		sum.Conns += each[i].Conns
	}
	return sum, each, nil
}

// settled reports whether the last readings of a series stopped moving:
// the last three within 0.5 % (and 1 MiB) of each other.
func settled(xs []float64) bool {
	if len(xs) < 3 {
		return false
	}
	last := xs[len(xs)-3:]
	lo, hi := last[0], last[0]
	for _, x := range last {
		lo, hi = min(lo, x), max(hi, x)
	}
	return hi-lo <= max(hi*0.005, 1<<20)
}

// gcAndSettle forces a GC in every gateway (reading the Go runtime's
// MemStats after it), then reads RSS every 500 ms until the sum settles
// (or timeout passes) and returns the last reading.
func gcAndSettle(ctx context.Context, admins []string, timeout time.Duration) (Sample, []Sample, memStats, bool, error) {
	ms, err := gcMemStats(ctx, admins)
	if err != nil {
		return Sample{}, nil, ms, false, err
	}
	deadline := time.Now().Add(timeout)
	var rss []float64
	for {
		sum, each, err := scrapeAll(ctx, admins)
		if err != nil {
			return sum, each, ms, false, err
		}
		rss = append(rss, sum.RSS)
		if settled(rss) {
			return sum, each, ms, true, nil
		}
		if time.Now().After(deadline) {
			return sum, each, ms, false, nil
		}
		select {
		case <-ctx.Done():
			return sum, each, ms, false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
