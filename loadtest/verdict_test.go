package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// passing returns the result of a run that passed, for scenario.
func passing(scenario string) *Result {
	res := &Result{
		Scenario:    scenario,
		Connections: ConnResult{Target: 100, Peak: 100, OpenAtEnd: 100, Attempts: 100, Welcomes: 100, EverWelcomed: 100, RampDone: true},
		Closes:      map[string]int64{},
		Accounting:  Accounting{OK: true},
	}
	switch scenario {
	case ScenarioDeliver, ScenarioStorm, ScenarioChurn:
		res.Messages = &MsgResult{Via: "router", Published: 1000, Acked: 1000,
			Counts: SeqCounts{Expected: 1000, Delivered: 1000, Receipts: 1000}}
	case ScenarioBroadcast:
		res.Broadcasts = &BcastResult{Via: "router", Each: []BcastEach{{Seq: 1, Acked: true, Receivers: 100}, {Seq: 2, Acked: true, Receivers: 100}},
			Counts: SeqCounts{Expected: 200, Delivered: 200, Receipts: 200}}
	}
	switch scenario {
	case ScenarioStorm:
		res.Storm = &StormResult{Share: 0.5, Dropped: 50, Recovered: 50, RecoverySeconds: 1.2}
	case ScenarioChurn:
		res.Churn = &ChurnResult{RateTarget: 10, Closed: 20, Rate: 10}
	}
	return res
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name     string
		scenario string
		edit     func(r *Result)
		want     []string
		status   int
	}{
		{name: "connect passed", scenario: ScenarioConnect, want: []string{}, status: 0},
		{name: "deliver passed", scenario: ScenarioDeliver, want: []string{}, status: 0},
		{name: "broadcast passed", scenario: ScenarioBroadcast, want: []string{}, status: 0},
		{
			name: "gateway and router down", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Connections = ConnResult{Target: 2, Attempts: 24, Failures: 24, Errors: map[string]int64{"connect_ECONNREFUSED": 24}}
				r.Messages = &MsgResult{Via: "router", Published: 10, Failed: 10, Errors: map[string]int64{"http_error": 10}}
			},
			want: []string{
				"no connection was welcomed: 0 of 2 (connect_ECONNREFUSED 24)",
				"10 of 10 publishes failed (http_error)",
			},
			status: ExitFailed,
		},
		{
			name: "retried attempts that were welcomed in the end pass", scenario: ScenarioConnect,
			edit: func(r *Result) {
				r.Connections.Attempts, r.Connections.Failures = 112, 12
				r.Connections.Errors = map[string]int64{"http_503_node_full": 12}
			},
			want: []string{}, status: 0,
		},
		{
			name: "ramp short of --conns", scenario: ScenarioConnect,
			edit: func(r *Result) {
				r.Connections.RampDone, r.Connections.EverWelcomed, r.Connections.Peak = false, 90, 90
				r.Connections.Errors = map[string]int64{"timeout_welcome": 30, "connect_ETIMEDOUT": 5}
			},
			want:   []string{"the ramp did not reach --conns: 10 of 100 connections were never welcomed (timeout_welcome 30, connect_ETIMEDOUT 5)"},
			status: ExitFailed,
		},
		{
			name: "some publishes failed", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Messages.Published, r.Messages.Failed = 1003, 3
				r.Messages.Errors = map[string]int64{"http_timeout": 1, "http_429_rate_limited": 2}
			},
			want:   []string{"3 of 1,003 publishes failed (http_429_rate_limited 2, http_timeout 1)"},
			status: ExitFailed,
		},
		{
			name: "broadcast not acknowledged", scenario: ScenarioBroadcast,
			edit: func(r *Result) {
				r.Broadcasts.Each[1] = BcastEach{Seq: 2, Error: "http_503"}
				r.Broadcasts.Counts = SeqCounts{Expected: 100, Delivered: 100, Receipts: 100}
			},
			want:   []string{"1 of 2 broadcasts failed (http_503)"},
			status: ExitFailed,
		},
		{
			name: "lost", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 997, Lost: 3, Receipts: 997}
			},
			want:   []string{"3 of 1,000 expected messages were lost"},
			status: ExitDelivery,
		},
		{
			name: "duplicated and out of order", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 1000, Duplicated: 2, OutOfOrder: 4, Receipts: 1002}
			},
			want:   []string{"2 messages were duplicated", "4 messages arrived out of order"},
			status: ExitDelivery,
		},
		{
			name: "broadcast lost", scenario: ScenarioBroadcast,
			edit: func(r *Result) {
				r.Broadcasts.Counts = SeqCounts{Expected: 200, Delivered: 199, Lost: 1, Receipts: 199}
			},
			want:   []string{"1 of 200 expected broadcast deliveries were lost"},
			status: ExitDelivery,
		},
		{
			name: "missed after slow-consumer closes", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 995, Missed: 5, MissedClosed: 5, Receipts: 995}
				r.Closes = map[string]int64{"4500": 2}
				r.Connections.ClosedUnexpectedly = 2
			},
			want:   []string{"5 messages were missed because the gateway closed connections (closes by the gateway: 4500×2)"},
			status: ExitDelivery,
		},
		{
			name: "storm: missed while dropped is expected", scenario: ScenarioStorm,
			edit: func(r *Result) {
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 950, Missed: 50, Receipts: 950}
				r.Storm.Missed = 50
				r.Connections.Welcomes = 150
			},
			want: []string{}, status: 0,
		},
		{
			name: "storm: not all back", scenario: ScenarioStorm,
			edit: func(r *Result) {
				r.Storm.Recovered, r.Storm.RecoverySeconds = 47, -1
				r.Connections.OpenAtEnd = 97
			},
			want:   []string{"storm: 3 of 50 dropped connections did not come back by the end"},
			status: ExitFailed,
		},
		{
			name: "churn: its own closes and the messages missed meanwhile are expected", scenario: ScenarioChurn,
			edit: func(r *Result) {
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 980, Missed: 20, Receipts: 980}
				r.Churn.Missed = 20
				r.Connections.OpenAtEnd, r.Connections.Welcomes = 96, 116
			},
			want: []string{}, status: 0,
		},
		{
			name: "token expiry the run asked for is expected", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Closes = map[string]int64{"4401": 100}
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 990, Missed: 10, Receipts: 990}
				r.Connections.OpenAtEnd = 99
			},
			want: []string{}, status: 0,
		},
		{
			name: "connections the gateway closed are still down", scenario: ScenarioConnect,
			edit: func(r *Result) {
				r.Closes = map[string]int64{"1006": 40}
				r.Connections.ClosedUnexpectedly, r.Connections.ClosedNotBack, r.Connections.OpenAtEnd = 40, 40, 60
			},
			want:   []string{"40 connections the gateway closed were not open again at the end (closes by the gateway: 1006×40)"},
			status: ExitFailed,
		},
		{
			name: "closed by the gateway but back again", scenario: ScenarioConnect,
			edit: func(r *Result) {
				r.Closes = map[string]int64{"1012": 40}
				r.Connections.ClosedUnexpectedly, r.Connections.Welcomes = 40, 140
			},
			want: []string{}, status: 0,
		},
		{
			name: "counts do not add up", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Accounting = Accounting{Checks: []string{"FAILED: publishes 1000 = acknowledged 999 + failed 0"}}
			},
			want:   []string{"the counts do not add up (see the accounting lines)"},
			status: ExitDelivery,
		},
		{
			name: "a worker died", scenario: ScenarioConnect,
			edit: func(r *Result) {
				r.Problems = []string{"worker 1: worker pid 42: signal: killed"}
			},
			want:   []string{"the run had 1 problem(s) (see the problem lines): its figures may be incomplete"},
			status: ExitFailed,
		},
		{
			name: "a delivery problem wins over a run problem", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Messages.Published, r.Messages.Failed = 1001, 1
				r.Messages.Errors = map[string]int64{"http_timeout": 1}
				r.Messages.Counts = SeqCounts{Expected: 1000, Delivered: 999, Lost: 1, Receipts: 999}
			},
			want:   []string{"1 of 1,001 publishes failed (http_timeout)", "1 of 1,000 expected messages were lost"},
			status: ExitDelivery,
		},
		{
			name: "interrupted during the ramp", scenario: ScenarioDeliver,
			edit: func(r *Result) {
				r.Interrupted = true
				r.Connections.RampDone, r.Connections.EverWelcomed, r.Connections.Peak = false, 40, 40
			},
			want:   []string{"the ramp did not reach --conns: 60 of 100 connections were never welcomed"},
			status: ExitInterrupted,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := passing(tc.scenario)
			if tc.edit != nil {
				tc.edit(r)
			}
			if got := Verdict(r); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("verdict\ngot  %q\nwant %q", got, tc.want)
			}
			if got := ExitStatus(r); got != tc.status {
				t.Errorf("exit status %d, want %d", got, tc.status)
			}
			var out bytes.Buffer
			WriteReport(&out, r)
			rep := out.String()
			for _, f := range tc.want {
				if !strings.Contains(rep, "\nFAILED: "+f+"\n") {
					t.Errorf("report lacks %q:\n%s", "FAILED: "+f, rep)
				}
			}
			if want := fmt.Sprintf("(exit status %d)", tc.status); !strings.Contains(rep, want) {
				t.Errorf("report lacks %q:\n%s", want, rep)
			}
			if len(tc.want) == 0 && strings.Contains(rep, "FAILED") {
				t.Errorf("a passing run's report says FAILED:\n%s", rep)
			}
			var page bytes.Buffer
			if err := WriteHTML(&page, r); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.want {
				if !strings.Contains(page.String(), "<li>"+htmlEscape(f)+"</li>") {
					t.Errorf("page lacks the failure %q", f)
				}
			}
		})
	}
}

func htmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&#34;")
		case '\'':
			b.WriteString("&#39;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// The review's case: deliver with the gateway and the router both down
// exits 1 before its ramp, saying where it found no router; it writes no
// report, as it made no run.
func TestMainNothingListening(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "r.json")
	router := "http://" + freeAddr(t)
	args := []string{ScenarioDeliver, "--url", "ws://" + freeAddr(t) + "/ws", "--router-url", router,
		"--jwt-hs256-secret", testSecret, "--api-key", testAPIKey, "--conns", "2", "--connect-rate", "100",
		"--connect-timeout", "500ms", "--backoff-min", "50ms", "--backoff-max", "200ms",
		"--msg-rate", "10", "--duration", "1s", "--drain", "1s", "--drain-quiet", "200ms", "--publish-timeout", "1s",
		"--progress", "off", "--json", jsonPath}
	var out, errb bytes.Buffer
	if code := mainWith(args, func(string) (string, bool) { return "", false }, &out, &errb, false); code != ExitFailed {
		t.Errorf("exit status %d, want %d", code, ExitFailed)
	}
	if want := "loadtest: --router-url " + router + ": connection refused to " + router; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, errb.String())
	}
	if out.Len() > 0 {
		t.Errorf("a report of a run that was not made:\n%s", out.String())
	}
	if _, err := os.Stat(jsonPath); !os.IsNotExist(err) {
		t.Errorf("--json written (%v) for a run that was not made", err)
	}
}

// captureStdout runs f with os.Stdout and os.Stderr going to files and
// returns what it wrote to stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	dir := t.TempDir()
	so, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	se, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = so, se
	defer func() {
		os.Stdout, os.Stderr = oldOut, oldErr
		so.Close()
		se.Close()
		if t.Failed() {
			b, _ := os.ReadFile(se.Name())
			t.Logf("stderr:\n%s", b)
		}
	}()
	f()
	b, _ := os.ReadFile(so.Name())
	return string(b)
}

// The gateway closes connections in the middle of a deliver run (a kick
// through the router, close 4403): the messages their devices missed
// while reconnecting are missed because of the gateway, and the run fails
// with exit status 3. Churn's own closes, in TestChurnScenario, do not.
func TestMissedAfterGatewayClose(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioDeliver)
	cfg.Conns, cfg.ConnectRate = 50, 2000
	cfg.MsgRate, cfg.Duration = 500, 2*time.Second
	cfg.BackoffMin, cfg.BackoffMax = time.Second, 2*time.Second
	cfg.Publish.Via = "nats"
	kicked := make(chan int, 1)
	go func() {
		n := 0
		defer func() { kicked <- n }()
		// kick every user once the connections are up and messages flow
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if s := scrapeOne(context.Background(), f.metrics); s.Error == "" && s.Connections >= 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		for u := 0; u < 50; u++ {
			req, _ := http.NewRequest(http.MethodDelete, f.routerURL+"/v1/users/lt-"+fmt.Sprint(u)+"/connections", nil)
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("kick: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				n++
			}
		}
	}()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := <-kicked; n != 50 {
		t.Fatalf("kicked %d users of 50", n)
	}
	c, m := res.Connections, res.Messages.Counts
	t.Logf("closes %v, closed unexpectedly %d, not back %d, counts %+v, failures %q", res.Closes, c.ClosedUnexpectedly, c.ClosedNotBack, m, res.Failures)
	if res.Closes["4403"] != 50 || c.ClosedUnexpectedly != 50 || c.ClosedNotBack != 0 {
		t.Errorf("closes %v, closed unexpectedly %d, not back %d", res.Closes, c.ClosedUnexpectedly, c.ClosedNotBack)
	}
	if m.Lost != 0 || m.MissedClosed == 0 || m.MissedClosed != m.Missed || !res.Accounting.OK {
		t.Errorf("counts %+v, accounting %v", m, res.Accounting.Checks)
	}
	if res.ExitStatus != ExitDelivery || len(res.Failures) != 1 ||
		res.Failures[0] != th(m.MissedClosed)+" messages were missed because the gateway closed connections (closes by the gateway: 4403×50)" {
		t.Errorf("exit status %d, failures %q", res.ExitStatus, res.Failures)
	}
	back, err := json.Marshal(res)
	if err != nil || !bytes.Contains(back, []byte(`"failures":[`)) || !bytes.Contains(back, []byte(`"missed_closed":`)) {
		t.Errorf("json: %v %s", err, back)
	}
}
