package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
)

func direct(o *gateway.Options) { o.ClientTopicPublish = "direct" }

// checkTopicRun asserts a topic run delivered every acknowledged message
// to every connection it was owed to, exactly once and in order.
func checkTopicRun(t *testing.T, res *Result, perMsg int64) {
	t.Helper()
	tp := res.Topics
	if tp == nil {
		t.Fatal("no topic figures")
	}
	checkClean(t, res, tp.Counts)
	if tp.Subscribed != int64(res.Connections.Target) || tp.AllSubscribedSeconds < 0 {
		t.Errorf("subscribed %d of %d (all after %.2f s)", tp.Subscribed, res.Connections.Target, tp.AllSubscribedSeconds)
	}
	if tp.Acked == 0 || tp.Failed != 0 || tp.Published != tp.Acked {
		t.Errorf("published %d, acknowledged %d, failed %d (%v)", tp.Published, tp.Acked, tp.Failed, tp.PubErrors)
	}
	// every connection was subscribed before the first publish: each
	// message is owed to all of its topic's subscribers
	c := tp.Counts
	if c.Expected != tp.Acked*perMsg || c.Delivered != c.Expected || c.Missed+c.Early+c.Unconfirmed+c.Unknown != 0 {
		t.Errorf("acknowledged %d × %d: counts %+v", tp.Acked, perMsg, c)
	}
	if tp.Latency.Count != c.Delivered || tp.SubscribeLatency.Count != tp.Subscribed {
		t.Errorf("latency samples %d (delivered %d), subscribe samples %d", tp.Latency.Count, c.Delivered, tp.SubscribeLatency.Count)
	}
	if len(tp.Errors) != 0 || tp.Foreign+tp.Misrouted != 0 || tp.DrainEnd != "complete" {
		t.Errorf("errors %v, foreign %d, misrouted %d, drain %s", tp.Errors, tp.Foreign, tp.Misrouted, tp.DrainEnd)
	}
}

// The live scenario: every connection subscribes to the topic, the run
// publishes to it through NATS (two worker processes, two devices per
// user) and through the router; every subscriber gets every message once,
// in order, and each message's fan-out is measured over every connection.
func TestLiveScenario(t *testing.T) {
	f := startFleet(t)
	for _, tc := range []struct {
		via     string
		workers string
	}{{"nats", "2"}, {"router", "auto"}} {
		t.Run(tc.via, func(t *testing.T) {
			cfg := f.config(ScenarioLive)
			cfg.Conns, cfg.Devices, cfg.ConnectRate = 300, 2, 3000
			cfg.MsgRate, cfg.Duration = 200, 2*time.Second
			cfg.Publish.Via, cfg.Workers = tc.via, tc.workers
			cfg.JSONFile = filepath.Join(t.TempDir(), "live.json")
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tp := res.Topics
			out := cfg.Stdout.(*bytes.Buffer).String()
			t.Logf("processes %d, acked %d, delivered %d, e2e p50 %.2f p99 %.2f ms, fan-out p50 %.2f p99 %.2f max %.2f ms",
				res.CPU.Processes, tp.Acked, tp.Counts.Delivered, tp.Latency.P50, tp.Latency.P99, tp.Fanout.Last.P50, tp.Fanout.Last.P99, tp.Fanout.Last.Max)
			checkTopicRun(t, res, 300)
			if tc.workers == "2" && res.Limits.Processes != 2 {
				t.Errorf("processes %d, want 2", res.Limits.Processes)
			}
			// 200/s for 2 s, but what the publisher fell behind on (a
			// router request at a time, under -race) it skips
			if tp.Acked+tp.Skipped < 360 || tp.Acked < 100 || tp.Topic != "live.prices" || tp.Order != "topic" || tp.Via != tc.via {
				t.Errorf("topic %+v", tp)
			}
			fo := tp.Fanout
			if fo == nil || fo.Messages != tp.Acked || fo.MinReceivers != 300 || fo.MaxReceivers != 300 || fo.Last.Count != tp.Acked ||
				fo.Last.Max < fo.First.Max || len(fo.Histogram) == 0 {
				t.Errorf("fan-out %+v", fo)
			}
			for _, row := range []string{"topic live.prices (via " + tc.via, "subscribed", "subscribe (sent → subscribed)", "fan-out (publish → last receipt)",
				"receivers per message", "lost 0", "duplicated 0", "out of order 0", "counts add up", "passed (exit status 0)"} {
				if !strings.Contains(out, row) {
					t.Errorf("the report has no %q:\n%s", row, out)
				}
			}
			back, err := ReadResult(cfg.JSONFile)
			if err != nil || back.Topics == nil || back.Topics.Counts != tp.Counts || back.Topics.Fanout.Last != fo.Last {
				t.Fatalf("json: %v %+v", err, back)
			}
		})
	}
}

// The rooms scenario: rooms of 10 (devices of 2), each member publishing
// its own frames to its room (gateways with --client-topic-publish
// direct; two worker processes), or the run publishing on the members'
// behalf through the router or NATS. Every member of a room, the sender
// included, gets each of the room's messages once and in order.
func TestRoomsScenario(t *testing.T) {
	f := startFleet(t, direct)
	for _, tc := range []struct {
		mode, workers string
	}{{RoomPublishClient, "2"}, {RoomPublishRouter, "auto"}, {RoomPublishNATS, "auto"}} {
		t.Run(tc.mode, func(t *testing.T) {
			cfg := f.config(ScenarioRooms)
			cfg.Conns, cfg.Devices, cfg.ConnectRate = 300, 2, 3000
			cfg.MsgRate, cfg.Duration = 300, 2*time.Second
			cfg.RoomPublish, cfg.Workers = tc.mode, tc.workers
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tp := res.Topics
			out := cfg.Stdout.(*bytes.Buffer).String()
			t.Logf("processes %d, acked %d, delivered %d, e2e p50 %.2f p99 %.2f p99.9 %.2f ms", res.CPU.Processes, tp.Acked, tp.Counts.Delivered, tp.Latency.P50, tp.Latency.P99, tp.Latency.P999)
			checkTopicRun(t, res, 10)
			wantOrder := map[string]string{RoomPublishClient: "sender", RoomPublishRouter: "room", RoomPublishNATS: "room"}[tc.mode]
			if tp.Acked+tp.Skipped < 540 || tp.Acked < 150 || tp.Topics != 30 || tp.RoomSize != 10 || tp.RoomsFailed != 0 || tp.Order != wantOrder || tp.Via != tc.mode || tp.Fanout != nil {
				t.Errorf("rooms %+v", tp)
			}
			if tc.mode == RoomPublishClient {
				if p := tp.Probe; p == nil || p.Failed || p.Sent != 30 || p.Back != 30 {
					t.Errorf("client publish check %+v", p)
				}
				if res.Limits.Processes != 2 {
					t.Errorf("processes %d, want 2", res.Limits.Processes)
				}
			} else if tp.Probe != nil {
				t.Errorf("a client publish check with --room-publish %s", tc.mode)
			}
			if !strings.Contains(out, "rooms (30 rooms of 10 members, publish "+tc.mode+", target 300/s)") || !strings.Contains(out, "room."+res.RunID+".0 … room."+res.RunID+".29") ||
				!strings.Contains(out, "rooms failed") || !strings.Contains(out, "out of order counted per "+wantOrder) {
				t.Errorf("report:\n%s", out)
			}
		})
	}
}

// Against gateways that hand client publish frames to a service (the
// default --client-topic-publish service), --room-publish client fails
// before it publishes anything, saying why; against a fleet of which one
// gateway does, the failure names that gateway.
func TestRoomsClientAgainstServiceMode(t *testing.T) {
	t.Run("service", func(t *testing.T) {
		f := startFleet(t)
		cfg := f.config(ScenarioRooms)
		cfg.Conns, cfg.ConnectRate = 100, 3000
		cfg.MsgRate, cfg.Duration = 100, 20*time.Second
		cfg.ConnectTimeout = 2 * time.Second
		start := time.Now()
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("took %s; failures %q", took, res.Failures)
		if took > 10*time.Second {
			t.Errorf("the run took %s: it did not stop before its 20 s of publishing", took)
		}
		if res.ExitStatus != ExitFailed || len(res.Failures) != 1 || !strings.Contains(res.Failures[0], "none of the 10 test messages") ||
			!strings.Contains(res.Failures[0], "--client-topic-publish direct") {
			t.Fatalf("exit status %d, failures %q", res.ExitStatus, res.Failures)
		}
		if tp := res.Topics; tp.Published != 0 || tp.Probe == nil || !tp.Probe.Failed || tp.Probe.Back != 0 || tp.Probe.NotBack[f.wsURL] != 10 {
			t.Errorf("topics %+v, check %+v", tp, tp.Probe)
		}
		if out := cfg.Stdout.(*bytes.Buffer).String(); !strings.Contains(out, "FAILED: --room-publish client: none of the 10") {
			t.Errorf("report:\n%s", out)
		}
	})
	t.Run("one gateway of two", func(t *testing.T) {
		f := startFleet(t, direct)
		svc := f.startGateway(t, "svc", func(*gateway.Options) {})
		cfg := f.config(ScenarioRooms)
		cfg.URLs = []string{f.wsURL, svc}
		cfg.Conns, cfg.ConnectRate = 100, 3000
		cfg.MsgRate, cfg.Duration = 100, 20*time.Second
		cfg.ConnectTimeout = 2 * time.Second
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failures %q", res.Failures)
		p := res.Topics.Probe
		if res.ExitStatus != ExitFailed || p == nil || p.Sent != 20 || p.Back != 10 || p.NotBack[svc] != 10 || len(p.NotBack) != 1 ||
			!strings.Contains(res.Failures[0], "sent through "+svc) || !strings.Contains(res.Failures[0], "--client-topic-publish direct") {
			t.Fatalf("exit status %d, check %+v, failures %q", res.ExitStatus, p, res.Failures)
		}
	})
}

// A subscription the fleet ends in the middle of a live run (a service
// unsubscribes a user through the router) fails the run: the messages its
// devices then miss were the fleet's doing (exit 3).
func TestLiveUnsubscribedByTheFleet(t *testing.T) {
	f := startFleet(t)
	cfg := f.config(ScenarioLive)
	cfg.Conns, cfg.ConnectRate = 50, 3000
	cfg.MsgRate, cfg.Duration = 100, 3*time.Second
	cfg.Publish.Via = "nats"
	go func() {
		// lt-0 and lt-1 are unsubscribed about 1.5 s into publishing
		time.Sleep(1500 * time.Millisecond)
		for _, u := range []string{"lt-0", "lt-1"} {
			req, _ := http.NewRequest(http.MethodDelete, f.routerURL+"/v1/users/"+u+"/topics/live.prices", nil)
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp := res.Topics
	t.Logf("counts %+v, errors %v, failures %q", tp.Counts, tp.Errors, res.Failures)
	c := tp.Counts
	if tp.Errors["unsubscribed_by_gateway"] != 2 || c.MissedClosed == 0 || c.MissedClosed != c.Missed || c.Lost != 0 || res.ExitStatus != ExitDelivery {
		t.Fatalf("exit status %d, counts %+v, errors %v", res.ExitStatus, c, tp.Errors)
	}
	var unsub, missed bool
	for _, l := range res.Failures {
		unsub = unsub || l == "the gateway ended 2 subscriptions (unsubscribed)"
		missed = missed || strings.HasSuffix(l, "topic deliveries were missed because the gateway closed connections")
	}
	if !unsub || !missed {
		t.Errorf("failures %q", res.Failures)
	}
}

// topicTrack.account, which walks ranges, classifies exactly as
// devTrack.account, which walks every message, over random histories.
func TestTopicTrackMatchesDevTrack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 3000; iter++ {
		n := rng.IntN(60)
		log := make([]pubRec, n)
		tm := int64(0)
		for i := range log {
			tm += int64(rng.IntN(3)) // equal times happen
			st := pubAcked
			switch rng.IntN(8) {
			case 0:
				st = pubFailed
			case 1:
				st = pubPending
			}
			log[i] = pubRec{t: tm, state: st}
		}
		var dt devTrack
		var tt topicTrack
		tm = -1
		open := false
		for k := rng.IntN(40); k > 0; k-- {
			switch x := rng.IntN(10); {
			case x == 0 && !open:
				tm += int64(rng.IntN(int(max(2*n/3, 1)) + 1))
				dt.welcome(tm)
				tt.welcome(tm, 1)
				open = true
			case x == 1 && open:
				unexp := rng.IntN(2) == 0
				dt.closed(unexp)
				tt.closed(unexp)
				open = false
			case open:
				seq := uint32(rng.IntN(n+3) + 1)
				d1, o1 := dt.receive(seq)
				d2, o2 := tt.receive(seq, 0)
				if d1 != d2 || o1 != o2 {
					t.Fatalf("iteration %d: receive %d: devTrack %v %v, topicTrack %v %v", iter, seq, d1, o1, d2, o2)
				}
			}
		}
		for s := uint32(1); s <= uint32(n+4); s++ {
			if dt.seen.has(s) != tt.has(s) {
				t.Fatalf("iteration %d: has(%d) %v, want %v (holes %v, top %d)", iter, s, tt.has(s), dt.seen.has(s), tt.holes, tt.top)
			}
		}
		openAtEnd := open && rng.IntN(4) > 0
		want := dt.account(log, openAtEnd)
		got := tt.account(newTopicLog(log), openAtEnd)
		if got.Pending > got.Lost {
			t.Fatalf("iteration %d: pending %d > lost %d", iter, got.Pending, got.Lost)
		}
		got.Pending = 0 // devTrack counts it only with --resume
		if got != want {
			t.Fatalf("iteration %d: log %v, holes %v top %d: got %+v, want %+v", iter, log, tt.holes, tt.top, got, want)
		}
	}
}

// Out of order is counted per order key: per sender in a room whose
// members publish their own frames.
func TestTopicTrackOrderPerKey(t *testing.T) {
	var d topicTrack
	d.welcome(1, 3)
	for _, r := range []struct {
		seq     uint32
		key     int
		dup, oo bool
	}{{2, 0, false, false}, {1, 1, false, false}, {4, 1, false, false}, {3, 0, false, false}, {3, 1, true, false}, {5, 0, false, false}, {4, 0, true, false}, {6, 2, false, false}, {7, 1, false, false}, {9, 1, false, false}, {8, 1, false, true}} {
		dup, ooo := d.receive(r.seq, r.key)
		if dup != r.dup || ooo != r.oo {
			t.Fatalf("receive %d from %d: dup %v ooo %v, want %v %v", r.seq, r.key, dup, ooo, r.dup, r.oo)
		}
	}
	if d.dup != 2 || d.ooo != 1 || d.top != 9 || len(d.holes) != 0 {
		t.Fatalf("%+v", d)
	}
}

// The topic scenarios' bad invocations exit 2 and name the flag.
func TestTopicBadInvocations(t *testing.T) {
	key := func(k string) (string, bool) {
		v, ok := map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret, "LOADTEST_API_KEY": testAPIKey}[k]
		return v, ok
	}
	secretOnly := func(k string) (string, bool) {
		if k == "LOADTEST_JWT_HS256_SECRET" {
			return testSecret, true
		}
		return "", false
	}
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) (string, bool)
		want string
	}{
		{"room of one", []string{"rooms", "--room-size", "1"}, key, "--room-size 1"},
		{"room of zero", []string{"rooms", "--room-size", "0"}, key, "--room-size"},
		{"room too large", []string{"rooms", "--room-size", "1001", "--conns", "2000"}, key, "--room-size 1001"},
		{"room larger than the run", []string{"rooms", "--conns", "10", "--room-size", "20"}, key, "--room-size 20 is more than --conns 10"},
		{"room splits a user", []string{"rooms", "--room-size", "5", "--devices-per-user", "2"}, key, "--devices-per-user"},
		{"bad room publisher", []string{"rooms", "--room-publish", "pigeon"}, key, "--room-publish"},
		{"empty room publisher", []string{"rooms", "--room-publish", ""}, key, "--room-publish"},
		{"rooms has no --via", []string{"rooms", "--via", "nats"}, key, "--via"},
		{"bad room prefix", []string{"rooms", "--room-prefix", "room.*"}, key, "--room-prefix"},
		{"rooms through the router need a key", []string{"rooms", "--room-publish", "router"}, secretOnly, "--room-publish router needs --api-key"},
		{"bad topic", []string{"live", "--topic", "prices..eur"}, key, "--topic"},
		{"topic with a wildcard", []string{"live", "--topic", "prices.>"}, key, "--topic"},
		{"empty topic", []string{"live", "--topic", ""}, key, "--topic"},
		{"no messages", []string{"live", "--msg-rate", "0"}, key, "--msg-rate"},
		{"too many messages", []string{"live", "--msg-rate", "1000", "--duration", "1h"}, key, "--msg-rate"},
		{"live via a pigeon", []string{"live", "--via", "pigeon"}, key, "--via"},
		{"resume", []string{"live", "--resume"}, key, "--resume"},
		{"resume rooms", []string{"rooms", "--resume"}, key, "--resume"},
		{"one claim for both", []string{"rooms", "--jwt-publish-claim", "topics"}, key, "--jwt-publish-claim"},
		{"a registered claim", []string{"live", "--jwt-topics-claim", "sub"}, key, "--jwt-topics-claim"},
		{"live has no --room-size", []string{"live", "--room-size", "5"}, key, "--room-size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := mainWith(tc.args, tc.env, &out, &errb, false)
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
}

// A topic run's delivery failures fail it with exit status 3, its other
// failures with 1; its figures are in --json under "topics".
func TestTopicVerdict(t *testing.T) {
	base := func() *Result {
		return &Result{Scenario: ScenarioRooms, Connections: ConnResult{Target: 10, EverWelcomed: 10, RampDone: true},
			Topics:     &TopicResult{Subscribed: 10, Counts: SeqCounts{Expected: 100, Delivered: 100, Receipts: 100}, Errors: map[string]int64{}},
			Accounting: Accounting{OK: true}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Result)
		exit int
		want string
	}{
		{"clean", func(*Result) {}, ExitOK, ""},
		{"lost", func(r *Result) { r.Topics.Counts.Lost, r.Topics.Counts.Delivered = 1, 99 }, ExitDelivery, "1 of 100 expected topic deliveries were lost"},
		{"duplicated", func(r *Result) { r.Topics.Counts.Duplicated = 2 }, ExitDelivery, "2 topic receipts were duplicates"},
		{"out of order", func(r *Result) { r.Topics.Counts.OutOfOrder = 3 }, ExitDelivery, "3 topic deliveries arrived out of order"},
		{"never subscribed", func(r *Result) {
			r.Topics.Subscribed = 7
			r.Topics.Errors["subscribe_refused_forbidden"] = 3
		}, ExitFailed, "3 of 10 welcomed connections were never subscribed to their topic (forbidden)"},
		{"publish frames refused", func(r *Result) { r.Topics.Errors["publish_refused_overloaded"] = 4 }, ExitFailed, "the gateways refused 4 publish frames to a room (overloaded)"},
		{"publishes failed", func(r *Result) {
			r.Topics.Published, r.Topics.Failed, r.Topics.PubErrors = 5, 5, map[string]int64{"nats_flush": 5}
		}, ExitFailed, "5 of 5 topic publishes failed (nats_flush)"},
		{"check refused", func(r *Result) {
			r.Topics.Probe = &ProbeResult{Sent: 3, WaitSeconds: 5, Failed: true, Refused: map[string]int64{"forbidden": 3}}
		}, ExitFailed, "--room-publish client: none of the 3 test messages the members published to their rooms came back within 5.0 s: the gateways refused 3 of them (forbidden)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.mod(r)
			fails := Verdict(r)
			if got := ExitStatus(r); got != tc.exit {
				t.Fatalf("exit status %d, want %d (%q)", got, tc.exit, fails)
			}
			if tc.want == "" && len(fails) > 0 || tc.want != "" && (len(fails) == 0 || !strings.HasPrefix(fails[0], tc.want)) {
				t.Fatalf("failures %q, want %q", fails, tc.want)
			}
		})
	}
	r := base()
	path := filepath.Join(t.TempDir(), "r.json")
	if err := writeJSON(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil || len(top["topics"]) < 10 {
		t.Fatalf("topics in --json: %v %s", err, top["topics"])
	}
}
