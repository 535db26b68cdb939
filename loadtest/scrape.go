package loadtest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wsfleet/wsfleet/internal/promtext"
)

// Scrape is what one gateway's /metrics said at one moment.
type Scrape struct {
	At          time.Time `json:"at"`
	RSSBytes    float64   `json:"rss_bytes"`
	Goroutines  float64   `json:"goroutines"`
	Connections float64   `json:"connections"`
	OpenFDs     float64   `json:"open_fds"`
	CPUSeconds  float64   `json:"cpu_seconds"` // process_cpu_seconds_total: user + system
	Error       string    `json:"error"`       // "": the scrape worked
}

// GatewayFigures are one gateway's scrapes at the start (before the ramp),
// the peak (the ramp done), just before the connections are closed (the
// scenario and its drain done) and the end (connections closed), and the
// memory each connection took: RSS delta over connections delta, start to
// peak. The CPU deltas peak → before close are what the scenario cost the
// gateway (bench-fleet's deliveries per CPU-second).
//
// The RSS at the start is the process's fixed part when it held no
// connection then: its runtime, code, embedded NATS server, pools. It is
// paid once whatever the count, so per connection it is large at a few
// thousand connections and small at a hundred thousand; BytesPerConn
// leaves it out, BytesPerConnWithFixed (peak RSS / peak connections)
// counts it in.
type GatewayFigures struct {
	URL         string  `json:"url"`
	Start       *Scrape `json:"start"` // null: not scraped
	Peak        *Scrape `json:"peak"`
	BeforeClose *Scrape `json:"before_close"`
	End         *Scrape `json:"end"`
	// FixedBytes is the RSS at the start, when the gateway held no
	// connection (0: it held some, or a scrape failed).
	FixedBytes            float64 `json:"fixed_rss_bytes"`
	BytesPerConn          float64 `json:"bytes_per_conn"`
	BytesPerConnWithFixed float64 `json:"bytes_per_conn_with_fixed"`
}

// Scrape points.
const (
	scrapeStart = iota
	scrapePeak
	scrapeEnd
	scrapeBeforeClose
	scrapePoints
)

// metricNames are the series read, summed over their labels.
var metricNames = map[string]func(*Scrape, float64){
	"process_resident_memory_bytes": func(s *Scrape, v float64) { s.RSSBytes = v },
	"go_goroutines":                 func(s *Scrape, v float64) { s.Goroutines = v },
	"wsfleet_gateway_connections":   func(s *Scrape, v float64) { s.Connections = v },
	"process_open_fds":              func(s *Scrape, v float64) { s.OpenFDs = v },
	"process_cpu_seconds_total":     func(s *Scrape, v float64) { s.CPUSeconds = v },
}

var metricList = slices.Sorted(maps.Keys(metricNames))

// parseMetrics reads a /metrics page (the Prometheus text format).
func parseMetrics(r io.Reader) (*Scrape, error) {
	sums, err := promtext.Sum(r, metricList...)
	if err != nil {
		return nil, err
	}
	if len(sums) == 0 {
		return nil, fmt.Errorf("none of the expected series (%s)", strings.Join(metricList, ", "))
	}
	s := &Scrape{At: time.Now()}
	for name, v := range sums {
		metricNames[name](s, v)
	}
	return s, nil
}

func scrapeOne(ctx context.Context, url string) *Scrape {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &Scrape{At: time.Now(), Error: err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &Scrape{At: time.Now(), Error: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &Scrape{At: time.Now(), Error: resp.Status}
	}
	s, err := parseMetrics(resp.Body)
	if err != nil {
		return &Scrape{At: time.Now(), Error: err.Error()}
	}
	return s
}

// scrape reads every --metrics-url at a point (scrapeStart, scrapePeak,
// scrapeBeforeClose or scrapeEnd).
func (r *runner) scrape(ctx context.Context, point int) {
	if len(r.cfg.MetricsURLs) == 0 {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, u := range r.cfg.MetricsURLs {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			s := scrapeOne(ctx, u)
			mu.Lock()
			if r.scrapes[u] == nil {
				r.scrapes[u] = make([]*Scrape, scrapePoints)
			}
			r.scrapes[u][point] = s
			mu.Unlock()
		}(u)
	}
	wg.Wait()
}

// gatewayFigures assembles the scrapes.
func (r *runner) gatewayFigures() []GatewayFigures {
	var out []GatewayFigures
	for _, u := range r.cfg.MetricsURLs {
		s := r.scrapes[u]
		if s == nil {
			continue
		}
		g := GatewayFigures{URL: u, Start: s[scrapeStart], Peak: s[scrapePeak], BeforeClose: s[scrapeBeforeClose], End: s[scrapeEnd]}
		a, b := g.Start, g.Peak
		if a != nil && a.Error == "" && a.Connections == 0 {
			g.FixedBytes = a.RSSBytes
		}
		if a != nil && b != nil && a.Error == "" && b.Error == "" && b.Connections > a.Connections {
			g.BytesPerConn = (b.RSSBytes - a.RSSBytes) / (b.Connections - a.Connections)
			g.BytesPerConnWithFixed = b.RSSBytes / b.Connections
		}
		out = append(out, g)
	}
	return out
}
