package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wsfleet/wsfleet/internal/promtext"
)

// PhaseDiag says why a --million phase went as it did: what the gateways
// refused and why, whether any client was welcomed on an unconfirmed
// subscription, how the NATS server and the router's NATS link fared.
// Counters are the phase's increase, summed over the gateways.
type PhaseDiag struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"`
	// Refusals by the gateways: 503 overloaded by reason
	// (wsfleet_gateway_connections_shed_total), every HTTP refusal by
	// status, and 1013 closes (auth queue full, or no confirmation in time).
	Shed       map[string]float64 `json:"shed_by_reason,omitempty"`
	Rejections map[string]float64 `json:"handshake_rejections_by_status,omitempty"`
	Closes1013 float64            `json:"closes_1013"`
	// Welcomes written on a subscription NATS had not confirmed (must be
	// 0), and confirmation round trips that failed.
	Unconfirmed     float64 `json:"welcomes_unconfirmed"`
	ConfirmFailures float64 `json:"confirm_failures"`
	// The NATS server's "Readloop processing time" warnings: a client's
	// input took it over 2 s to process.
	NATSSlowReads int `json:"nats_slow_reads"`
	// The router's NATS link: the share of 1 s samples it was down, its
	// reconnects, and gateway nodes its presence dropped, by reason.
	RouterNATSDownSamples int                `json:"router_nats_down_samples"`
	RouterNATSSamples     int                `json:"router_nats_samples"`
	RouterReconnects      float64            `json:"router_nats_reconnects"`
	RouterNodesDropped    map[string]float64 `json:"router_nodes_dropped_by_reason,omitempty"`
	RouterProbes          map[string]float64 `json:"router_presence_probes_by_result,omitempty"`
}

// The series read for PhaseDiag.
const (
	mShed        = "wsfleet_gateway_connections_shed_total"
	mRejects     = "wsfleet_gateway_handshake_rejections_total"
	mCloses      = "wsfleet_gateway_closes_total"
	mUnconfirmed = "wsfleet_gateway_welcomes_unconfirmed_total"
	mConfirmFail = "wsfleet_gateway_subscription_confirm_failures_total"
	mRouterUp    = "wsfleet_router_nats_connected"
	mRouterRecon = "wsfleet_router_nats_reconnects_total"
	mRouterDrop  = "wsfleet_router_presence_nodes_expired_total"
	mRouterProbe = "wsfleet_router_presence_probes_total"
)

// counters is one reading of the fleet's diagnostic series.
type counters struct {
	at       time.Time
	gw       map[string]float64 // summed over the gateways
	router   map[string]float64
	natsWarn int // slow-read lines in the NATS log so far
}

// readCounters scrapes every gateway and the router once. A gateway or
// router that does not answer leaves its series out (the diagnosis is
// partial, the run goes on).
func readCounters(ctx context.Context, f *fleet) counters {
	c := counters{at: time.Now(), gw: map[string]float64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range f.admins {
		wg.Add(1)
		go func(a string) {
			defer wg.Done()
			m, err := scrapeBy(ctx, a, []string{"reason", "status", "code"}, mShed, mRejects, mCloses, mUnconfirmed, mConfirmFail)
			if err != nil {
				return
			}
			mu.Lock()
			for k, v := range m {
				c.gw[k] += v
			}
			mu.Unlock()
		}(a)
	}
	wg.Wait()
	if f.routerAdmin != "" {
		c.router, _ = scrapeBy(ctx, f.routerAdmin, []string{"reason", "result"}, mRouterUp, mRouterRecon, mRouterDrop, mRouterProbe)
	}
	if f.nats != nil {
		c.natsWarn = countLines(f.nats.log, "Readloop processing time")
	}
	return c
}

func scrapeBy(ctx context.Context, admin string, labels []string, names ...string) (map[string]float64, error) {
	resp, err := get(ctx, admin+"/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return promtext.SumBy(resp.Body, labels, names...)
}

// countLines counts the lines of a file holding s.
func countLines(path, s string) int {
	fh, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer fh.Close()
	n := 0
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// diagBetween is the phase from a to b; routerUp are the router's NATS
// link samples taken during it (1 up, 0 down).
func diagBetween(phase string, a, b counters, routerUp []float64) PhaseDiag {
	d := PhaseDiag{Phase: phase, Seconds: b.at.Sub(a.at).Seconds()}
	d.Shed = labelled(a.gw, b.gw, mShed, "reason")
	d.Rejections = labelled(a.gw, b.gw, mRejects, "status")
	d.Closes1013 = b.gw[mCloses+`{code="1013"}`] - a.gw[mCloses+`{code="1013"}`]
	d.Unconfirmed = b.gw[mUnconfirmed] - a.gw[mUnconfirmed]
	d.ConfirmFailures = b.gw[mConfirmFail] - a.gw[mConfirmFail]
	d.NATSSlowReads = b.natsWarn - a.natsWarn
	d.RouterReconnects = b.router[mRouterRecon] - a.router[mRouterRecon]
	d.RouterNodesDropped = labelled(a.router, b.router, mRouterDrop, "reason")
	d.RouterProbes = labelled(a.router, b.router, mRouterProbe, "result")
	for _, up := range routerUp {
		d.RouterNATSSamples++
		if up < 1 {
			d.RouterNATSDownSamples++
		}
	}
	return d
}

// labelled is the increase of name's series per value of label.
func labelled(a, b map[string]float64, name, label string) map[string]float64 {
	prefix := name + "{" + label + `="`
	out := map[string]float64{}
	for k, v := range b {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if d := v - a[k]; d != 0 {
				out[strings.TrimSuffix(rest, `"}`)] = d
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// String is the phase in one line.
func (d PhaseDiag) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-9s %4.0f s: shed %s; HTTP refusals %s; 1013 closes %.0f; welcomed unconfirmed %.0f; confirm failures %.0f; NATS slow reads %d; router NATS down %d/%d samples, %.0f reconnects; nodes dropped %s; probes %s",
		d.Phase, d.Seconds, kv(d.Shed), kv(d.Rejections), d.Closes1013, d.Unconfirmed, d.ConfirmFailures, d.NATSSlowReads,
		d.RouterNATSDownSamples, d.RouterNATSSamples, d.RouterReconnects, kv(d.RouterNodesDropped), kv(d.RouterProbes))
	return b.String()
}

func kv(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// routerWatch samples the router's NATS link every second until stop.
type routerWatch struct {
	mu   sync.Mutex
	up   []float64
	stop chan struct{}
	done chan struct{}
}

func watchRouter(ctx context.Context, f *fleet) *routerWatch {
	w := &routerWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if m, err := scrapeBy(ctx, f.routerAdmin, nil, mRouterUp); err == nil {
				if v, ok := m[mRouterUp]; ok {
					w.mu.Lock()
					w.up = append(w.up, v)
					w.mu.Unlock()
				}
			}
			select {
			case <-t.C:
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

// take returns the samples since the last take.
func (w *routerWatch) take() []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	up := w.up
	w.up = nil
	return up
}

func (w *routerWatch) close() {
	close(w.stop)
	<-w.done
}
