package loadtest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// KickResult is what --kick-users did: the fleet closed every connection
// of users <user-prefix>0 … Users-1 (DELETE /v1/users/{user}/connections
// through the router, close 4403), AtSeconds into the run.
type KickResult struct {
	Users     int              `json:"users"`
	AtSeconds float64          `json:"at_s"`       // the first request, since the start of the run
	Seconds   float64          `json:"duration_s"` // from the first request to the last answer
	Closed    int64            `json:"closed"`     // connections the fleet said it closed
	Failed    int64            `json:"failed"`     // requests not answered 200
	Errors    map[string]int64 `json:"errors"`     // failed requests by reason
}

// holdKicking waits d, the deliver phase, kicking --kick-users at
// --kick-after into it. The kicks are made by the run itself, so they land
// within the phase whatever the ramp took: the kicked devices come back
// after their back-off while messages are still published to them.
func (r *runner) holdKicking(ctx context.Context, d time.Duration) {
	c := &r.cfg
	if c.KickUsers <= 0 {
		r.sleep(ctx, d)
		return
	}
	start := time.Now()
	r.sleep(ctx, c.KickAfter)
	if ctx.Err() != nil {
		return
	}
	r.kicks = kickUsers(c.Publish, c.UserPrefix, c.KickUsers, r.t0)
	r.sleep(ctx, d-time.Since(start))
}

// kickUsers kicks users prefix0 … n-1 through the router, Concurrency
// requests at a time.
func kickUsers(cfg PublishConfig, prefix string, n int, t0 int64) *KickResult {
	base := strings.TrimRight(cfg.RouterURL, "/")
	client := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}}
	defer client.CloseIdleConnections()
	k := &KickResult{Users: n, AtSeconds: float64(mono()-t0) / 1e9, Errors: map[string]int64{}}
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	users := make(chan int)
	for w := 0; w < min(max(cfg.Concurrency, 1), n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range users {
				closed, reason := kickOne(client, base, cfg.APIKey, userName(prefix, u))
				mu.Lock()
				k.Closed += closed
				if reason != "" {
					k.Failed++
					k.Errors[reason]++
				}
				mu.Unlock()
			}
		}()
	}
	for u := 0; u < n; u++ {
		users <- u
	}
	close(users)
	wg.Wait()
	k.Seconds = time.Since(start).Seconds()
	return k
}

// kickOne closes one user's connections; it returns how many the fleet
// closed, and why the request failed ("": it did not).
func kickOne(client *http.Client, base, apiKey, user string) (int64, string) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodDelete, base+"/v1/users/"+url.PathEscape(user)+"/connections", nil)
	if err != nil {
		return 0, "bad_request"
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := client.Do(req)
	if err != nil {
		return 0, httpReason(err, base)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return 0, statusReason(resp.StatusCode, b)
	}
	var a struct {
		Closed int64 `json:"closed"`
	}
	if json.Unmarshal(b, &a) != nil {
		return 0, "bad_answer"
	}
	return a.Closed, ""
}
