package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/protocol"
)

// Every invocation the load tester refuses exits 2, names the flag, and
// is refused before anything starts; the flags are checked before the
// signing key.
func TestBadInvocationsExit2(t *testing.T) {
	dir := t.TempDir()
	key := map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret, "LOADTEST_API_KEY": testAPIKey}
	none := map[string]string{}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error
	}{
		{"unknown flag", []string{"connect", "--nope"}, key, "unknown flag --nope"},
		{"not a number", []string{"connect", "--conns", "many"}, key, "--conns"},
		{"zero for the default", []string{"connect", "--conns", "0"}, key, "--conns"},
		{"zero duration", []string{"deliver", "--duration", "0s"}, key, "--duration"},
		{"negative drain", []string{"deliver", "--drain", "-1s"}, key, "--drain"},
		{"over the cap", []string{"connect", "--conns", "200000"}, key, "--max-conns"},
		{"drop after the end", []string{"storm", "--duration", "2s", "--drop-after", "3s"}, key, "--drop-after"},
		{"wss", []string{"connect", "--url", "wss://127.0.0.1:1/ws"}, key, "--url"},
		{"no host", []string{"connect", "--url", "ws:///ws"}, key, "--url"},
		{"bad workers", []string{"connect", "--workers", "lots"}, key, "--workers"},
		{"bad source address", []string{"connect", "--source-ips", "127.0.0"}, key, "--source-ips"},
		{"bad progress", []string{"connect", "--progress", "loud"}, key, "--progress"},
		{"bad metrics URL", []string{"connect", "--metrics-url", "ftp://x/metrics"}, key, "--metrics-url"},
		{"bad router URL", []string{"deliver", "--router-url", "127.0.0.1:8090"}, key, "--router-url"},
		{"kick more users than there are", []string{"deliver", "--conns", "10", "--kick-users", "11"}, key, "--kick-users"},
		{"kick after the end", []string{"deliver", "--duration", "2s", "--kick-users", "1", "--kick-after", "2s"}, key, "--kick-after"},
		{"no API key", []string{"deliver"}, map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret}, "--api-key"},
		{"no signing key", []string{"connect"}, none, "no signing key"},
		{"a flag before the key: --via", []string{"deliver", "--via", "pigeon"}, none, "--via"},
		{"a flag before the key: --url", []string{"connect", "--url", "wss://127.0.0.1:1/ws"}, none, "--url"},
		{"unwritable --json", []string{"connect", "--json", filepath.Join(dir, "no", "such", "r.json")}, key, "--json"},
		{"unwritable --html", []string{"connect", "--html", filepath.Join(dir, "no", "such", "r.html")}, key, "--html"},
		{"key file missing", []string{"connect", "--jwt-private-key", filepath.Join(dir, "no.pem")}, none, "--jwt-private-key"},
		{"HMAC secret with RS256", []string{"connect", "--jwt-alg", "RS256"}, key, "--jwt-alg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := mainWith(tc.args, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, &out, &errb, false)
			if code != ExitBadFlags {
				t.Fatalf("exit status %d, want %d; stderr: %s", code, ExitBadFlags, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("stderr %q does not name %q", errb.String(), tc.want)
			}
			if strings.Contains(errb.String(), "limits:") || out.Len() > 0 {
				t.Fatalf("the run started: stdout %q, stderr %q", out.String(), errb.String())
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the checks left files behind: %v", ents)
	}
}

// The API key is checked with one request to the router before the ramp:
// a key the router refuses exits 2 with the router's URL, and the gateway
// never sees a connection; a router that is not there exits 1 and says
// where it looked.
func TestRouterCheckedBeforeRamp(t *testing.T) {
	f := startFleet(t)
	dead := "http://127.0.0.1:" + freePort(t)
	for _, tc := range []struct {
		name, router, key string
		exit              int
		want              []string
	}{
		{"wrong key", f.routerURL, "not-the-key", ExitBadFlags, []string{"--api-key", "refused", f.routerURL, "http_401_unauthorized: unknown API key", "WSFLEET_ROUTER_API_KEY"}},
		{"no router", dead, testAPIKey, ExitFailed, []string{"--router-url", "connection refused to " + dead}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret, "LOADTEST_API_KEY": tc.key}
			var out, errb bytes.Buffer
			start := time.Now()
			code := mainWith([]string{"deliver", "--url", f.wsURL, "--router-url", tc.router, "--conns", "50", "--connect-timeout", "500ms", "--progress", "off"},
				func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &out, &errb, false)
			if code != tc.exit {
				t.Fatalf("exit status %d, want %d; stderr: %s", code, tc.exit, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q: %s", w, errb.String())
				}
			}
			if out.Len() > 0 {
				t.Errorf("a report after a refused start: %s", out.String())
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s to refuse", d)
			}
			if s := scrapeOne(context.Background(), f.metrics); s.Error != "" || s.Connections != 0 {
				t.Errorf("the gateway had connections (%+v): the ramp started", s)
			}
		})
	}
}

// A publish to a router that is not there names it.
func TestPublishErrorNamesRouter(t *testing.T) {
	dead := "http://127.0.0.1:" + freePort(t)
	s, err := newSink(PublishConfig{Via: "router", RouterURL: dead, APIKey: testAPIKey, SubjectPrefix: "wsfleet", Timeout: 2 * time.Second, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	want := "connection refused to " + dead
	if got, _ := s.post("/v1/users/a/messages", []byte(`{}`)); got != want {
		t.Fatalf("reason %q, want %q", got, want)
	}
}

// --json writes every documented key whatever the scenario: null for the
// parts that do not apply, [] and {} for empty lists and maps.
func TestJSONKeysAlwaysPresent(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	keys := docJSONKeys(t, string(raw))
	f := startFleet(t)
	cfg := f.config(ScenarioConnect)
	cfg.MetricsURLs = nil
	cfg.Conns, cfg.ConnectRate, cfg.Duration = 5, 1000, 100*time.Millisecond
	cfg.JSONFile = filepath.Join(t.TempDir(), "r.json")
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg.JSONFile)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := top[k]; !ok {
			t.Errorf("no %q key", k)
		}
	}
	for k, want := range map[string]string{
		"messages": "null", "broadcasts": "null", "topics": "null", "storm": "null", "churn": "null", "kicks": "null", "resume": "null",
		"problems": "[]", "failures": "[]", "gateways": "[]", "interrupted": "false",
	} {
		if got := string(top[k]); got != want {
			t.Errorf("%s: %s, want %s", k, got, want)
		}
	}
	var conns map[string]json.RawMessage
	if err := json.Unmarshal(top["connections"], &conns); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"errors": "{}", "refusals": "{}", "tokens_refreshed": "0"} {
		if got := string(conns[k]); got != want {
			t.Errorf("connections.%s: %s, want %s", k, got, want)
		}
	}
	var ramp map[string]json.RawMessage
	if err := json.Unmarshal(conns["ramp"], &ramp); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"backoff", "pushbacks", "rate_cuts", "min_rate", "below_target_s", "paused_s", "in_flight_limit", "held_s"} {
		if _, ok := ramp[k]; !ok {
			t.Errorf("connections.ramp has no %q", k)
		}
	}
}

// Deliveries owed to a session that closed are no longer outstanding
// (a storm's progress showed the deliveries in flight at the drop as
// outstanding to the end): a message acknowledged while the session was
// open is written off when it closes without it, one still unanswered when
// its answer comes.
func TestOutstandingForgetsClosedSessions(t *testing.T) {
	for _, tc := range []struct {
		name        string
		closeBefore bool // the session closes while the publish is unanswered
	}{
		{"acknowledged, then the session closes", false},
		{"the session closes, then the publish is acknowledged", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				<-release
				w.WriteHeader(http.StatusAccepted)
			}))
			defer srv.Close()
			released := false
			open := func() {
				if !released {
					close(release)
					released = true
				}
			}
			defer open()
			sk, err := newSink(PublishConfig{Via: "router", RouterURL: srv.URL, APIKey: "k", SubjectPrefix: "wsfleet", Timeout: 5 * time.Second, Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer sk.close()
			e := &clientSet{userLive: make([]int32, 1), userPubs: make([]uint32, 1)}
			e.pub = newPublisher(sk, "run", []int{0}, []string{"u0"}, e.stamp, &e.eligible)
			s := &slot{l: &loop{e: e}, state: stLive}
			w, from := e.sessionOpened(0, true)
			s.pubFrom = from
			s.msgs.welcome(w)

			e.pub.start(1000, 1)
			waitFor(t, "a publish", func() bool { return e.pub.published.Load() >= 1 })
			if !tc.closeBefore {
				open()
				waitFor(t, "an acknowledgement", func() bool { return e.eligible.Load() >= 1 })
			}
			s.endSession(true) // received nothing
			open()
			e.pub.stopAndWait()
			if e.pub.acked.Load() == 0 {
				t.Fatal("nothing acknowledged: the test shows nothing")
			}
			if got := e.eligible.Load() - e.eligGot.Load(); got != 0 {
				t.Fatalf("%d deliveries outstanding after the only session closed (%d acknowledged)", got, e.pub.acked.Load())
			}
		})
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A storm's drain ends complete, and its last progress frame shows nothing
// outstanding, once the dropped devices are back.
func TestStormOutstandingClears(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioStorm)
	cfg.Conns, cfg.ConnectRate = 200, 3000
	cfg.MsgRate, cfg.Duration, cfg.DropAfter, cfg.DropShare = 400, 3*time.Second, time.Second, 0.5
	cfg.BackoffMin, cfg.BackoffMax = 200*time.Millisecond, time.Second
	cfg.Progress, cfg.ProgressInterval = "bars", 100*time.Millisecond
	cfg.DrainQuiet = 5 * time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Messages
	t.Logf("storm %+v; missed %d; drain %s", res.Storm, m.Counts.Missed, m.DrainEnd)
	checkClean(t, res, m.Counts)
	if m.DrainEnd != "complete" {
		t.Errorf("drain ended %q: deliveries owed to dropped sessions were still outstanding", m.DrainEnd)
	}
	frames := regexp.MustCompile(`([0-9,]+) outstanding`).FindAllStringSubmatch(cfg.Stderr.(*bytes.Buffer).String(), -1)
	if len(frames) == 0 {
		t.Fatal("no progress frame")
	}
	if last := frames[len(frames)-1][1]; last != "0" {
		t.Errorf("the last progress frame shows %s outstanding", last)
	}
}

// writeOff takes a closed session's share off an acknowledged message at
// once, off an unanswered one when it is answered, and never off a failed
// one.
func TestPublisherWriteOff(t *testing.T) {
	subj, _ := protocol.NewSubjects("wsfleet")
	var elig atomic.Int64
	p := newPublisher(&sink{subj: subj}, "run", []int{0}, []string{"u0"}, nil, &elig)
	p.users[0].log = []pubRec{{state: pubAcked}, {state: pubPending}, {state: pubFailed}, {state: pubAcked}}
	elig.Store(10)
	p.writeOff(0, []uint32{1, 2, 3, 5}) // 5: stamped, not yet in the log
	if got := elig.Load(); got != 9 {
		t.Errorf("eligible %d, want 9 (one acknowledged message written off)", got)
	}
	if p.off[[2]int{0, 2}] != 1 || p.off[[2]int{0, 5}] != 1 || len(p.off) != 2 {
		t.Errorf("deferred write-offs %v, want seq 2 and 5", p.off)
	}
}

// --kick-users: the run has the router close the first N users'
// connections within its deliver phase; they come back, and what they
// missed meanwhile is the fleet's doing (exit 3), every time.
func TestKickUsers(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioDeliver)
	cfg.Conns, cfg.ConnectRate = 200, 2000
	cfg.MsgRate, cfg.Duration = 400, 3*time.Second
	cfg.KickUsers, cfg.KickAfter = 20, 500*time.Millisecond
	cfg.BackoffMin, cfg.BackoffMax = time.Second, 2*time.Second
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	k, c, m := res.Kicks, res.Connections, res.Messages
	t.Logf("kicks %+v; closes %v; missed %d (after gateway closes %d)", k, res.Closes, m.Counts.Missed, m.Counts.MissedClosed)
	if k == nil || k.Users != 20 || k.Closed != 20 || k.Failed != 0 {
		t.Fatalf("kicks %+v", k)
	}
	if k.AtSeconds <= 0 || k.AtSeconds+k.Seconds > res.Elapsed {
		t.Errorf("kicked at %.2f s for %.2f s in a run of %.2f s", k.AtSeconds, k.Seconds, res.Elapsed)
	}
	if res.Closes["4403"] != 20 || c.ClosedUnexpectedly != 20 || c.ClosedNotBack != 0 {
		t.Errorf("closes %v, closed by the gateway %d, not back %d", res.Closes, c.ClosedUnexpectedly, c.ClosedNotBack)
	}
	if m.Counts.MissedClosed == 0 || m.Counts.Lost != 0 {
		t.Errorf("missed after gateway closes %d, lost %d", m.Counts.MissedClosed, m.Counts.Lost)
	}
	if res.ExitStatus != ExitDelivery {
		t.Errorf("exit status %d, want %d (failures %q)", res.ExitStatus, ExitDelivery, res.Failures)
	}
	var out bytes.Buffer
	WriteReport(&out, res)
	if !regexp.MustCompile(`kicks +20 users at [0-9.]+ s +20 connections closed +failed 0`).MatchString(out.String()) {
		t.Errorf("report:\n%s", out.String())
	}
}

// The report says which part of the gateway's RSS is fixed (its RSS at the
// start, with no connection), and the memory per connection without and
// with it.
func TestReportFixedRSS(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name                string
		start, peak         Scrape
		fixed, per, withFix float64
		want, wantNot       []string
	}{
		{"fresh gateway", Scrape{RSSBytes: 20 * mib}, Scrape{RSSBytes: 30 * mib, Connections: 1000},
			20 * mib, 10 * mib / 1000.0, 30 * mib / 1000.0,
			[]string{"fixed RSS  20.0 MiB at the start, 0 connections", "10.2 KiB without the fixed RSS", "30.7 KiB with it"}, nil},
		{"gateway with connections at the start", Scrape{RSSBytes: 20 * mib, Connections: 500}, Scrape{RSSBytes: 30 * mib, Connections: 1500},
			0, 10 * mib / 1000.0, 30 * mib / 1500.0,
			[]string{"10.2 KiB (RSS delta / connections delta, start → peak; the gateway held connections at the start)"}, []string{"fixed RSS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := "http://gw/metrics"
			start, peak := tc.start, tc.peak
			r := &runner{cfg: Config{MetricsURLs: []string{u}}, scrapes: map[string][]*Scrape{u: {scrapeStart: &start, scrapePeak: &peak, scrapeEnd: nil, scrapeBeforeClose: nil}}}
			g := r.gatewayFigures()
			if len(g) != 1 || g[0].FixedBytes != tc.fixed || math.Abs(g[0].BytesPerConn-tc.per) > 1e-6 || math.Abs(g[0].BytesPerConnWithFixed-tc.withFix) > 1e-6 {
				t.Fatalf("figures %+v", g)
			}
			res := sampleResult()
			res.Gateways = g
			var out bytes.Buffer
			WriteReport(&out, res)
			txt := regexp.MustCompile(` {2,}`).ReplaceAllString(out.String(), "  ")
			for _, w := range tc.want {
				if !strings.Contains(txt, w) {
					t.Errorf("report lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(txt, w) {
					t.Errorf("report has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// checkRouter takes any answer but 401, 403 and 404 as the key accepted
// (the router checks credentials first), and waits for a router that is
// starting.
func TestCheckRouterAnswers(t *testing.T) {
	for _, tc := range []struct {
		status int
		usage  bool
		ok     bool
	}{
		{http.StatusOK, false, true},
		{http.StatusServiceUnavailable, false, true},
		{http.StatusTooManyRequests, false, true},
		{http.StatusUnauthorized, true, false},
		{http.StatusForbidden, true, false},
		{http.StatusNotFound, true, false},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/stats" || r.Header.Get("Authorization") != "Bearer k" {
					w.WriteHeader(http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(`{"code":"x","reason":"because"}`))
			})}
			port := freePort(t)
			addr := "127.0.0.1:" + port
			go func() {
				time.Sleep(300 * time.Millisecond) // a router starting
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return
				}
				srv.Serve(ln)
			}()
			t.Cleanup(func() { srv.Close() })
			err := checkRouter(context.Background(), PublishConfig{RouterURL: "http://" + addr, APIKey: "k", Timeout: 2 * time.Second}, 5*time.Second)
			var ue *UsageError
			if (err == nil) != tc.ok || errors.As(err, &ue) != tc.usage {
				t.Fatalf("err %v (usage error %v), want ok %v usage %v", err, ue != nil, tc.ok, tc.usage)
			}
		})
	}
}
