package loadtest

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/router"
)

// TestResumeAccounting drives one device's tracks through welcomes (with
// the position and recovered a --resume gateway answers), receipts (with
// the frames' ids) and closes, then checks how accountResume classifies
// every message.
func TestResumeAccounting(t *testing.T) {
	// msg builds a log entry: published at t, acknowledged, with the id
	// the publisher learnt (0: unknown).
	msg := func(t int64, id uint64) pubRec { return pubRec{t: t, id: id, state: pubAcked} }
	type ev struct {
		kind  byte   // w: welcome, s: welcome after since, f: since not recovered, r: receipt, c: close
		t     int64  // welcome time; receipt: the message's publish time
		pos   uint64 // welcome position; receipt: the frame's id (0: none)
		seq   uint32 // receipt: the message's number
		noPos bool   // welcome without a position
	}
	W := func(t int64, pos uint64) ev { return ev{kind: 'w', t: t, pos: pos} }
	S := func(t int64) ev { return ev{kind: 's', t: t} }                       // recovered: position = since
	F := func(t int64, pos uint64) ev { return ev{kind: 'f', t: t, pos: pos} } // recovered:false
	R := func(seq uint32, t int64, id uint64) ev { return ev{kind: 'r', seq: seq, t: t, pos: id} }
	C := ev{kind: 'c'}

	for _, tc := range []struct {
		name   string
		log    []pubRec
		events []ev
		open   bool // the last connection is open at the end (default: as the events leave it)
		want   SeqCounts
		since  uint64 // the id the device would resume from at the end
	}{
		{
			name:   "live, ids known",
			log:    []pubRec{msg(10, 101), msg(20, 102)},
			events: []ev{W(5, 100), R(1, 10, 101), R(2, 20, 102)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Receipts: 2, ByID: 2},
			since:  102,
		},
		{
			name: "away, then replayed after since",
			// closed after 101; 102 and 103 published while away; the
			// resumed connection (since 101) gets them first
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103), msg(50, 105)},
			events: []ev{W(5, 100), R(1, 10, 101), C, S(40), R(2, 20, 102), R(3, 30, 103), R(4, 50, 105)},
			want:   SeqCounts{Expected: 4, Delivered: 4, Receipts: 4, Replayed: 2, ByID: 4},
			since:  105,
		},
		{
			name: "without ids: away messages are owed all the same",
			log:  []pubRec{msg(10, 0), msg(20, 0), msg(30, 0)},
			// frames carry ids, the publisher does not know them
			events: []ev{W(5, 100), R(1, 10, 101), C, S(25), R(2, 20, 102), R(3, 30, 104)},
			want:   SeqCounts{Expected: 3, Delivered: 3, Receipts: 3, Replayed: 1},
			since:  104,
		},
		{
			name:   "a message published while away and never replayed is lost",
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103)},
			events: []ev{W(5, 100), R(1, 10, 101), C, S(25), R(3, 30, 103)},
			want:   SeqCounts{Expected: 3, Delivered: 2, Lost: 1, Receipts: 2, ByID: 3},
			since:  103,
		},
		{
			name:   "lost without ids: a later number arrived",
			log:    []pubRec{msg(10, 0), msg(20, 0), msg(30, 0)},
			events: []ev{W(5, 100), R(1, 10, 101), C, S(25), R(3, 30, 103), C},
			want:   SeqCounts{Expected: 3, Delivered: 2, Lost: 1, Receipts: 2},
			since:  103,
		},
		{
			name:   "replayed twice: a duplicate across reconnects",
			log:    []pubRec{msg(10, 101), msg(20, 102)},
			events: []ev{W(5, 100), R(1, 10, 101), R(2, 20, 102), C, S(30), R(2, 20, 102)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Receipts: 3, Duplicated: 1, ByID: 2},
			since:  102,
		},
		{
			name:   "an id below the connection's newest is out of order",
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103)},
			events: []ev{W(5, 100), R(1, 10, 101), R(3, 30, 103), R(2, 20, 102)},
			want:   SeqCounts{Expected: 3, Delivered: 3, Receipts: 3, OutOfOrder: 1, ByID: 3},
			since:  103,
		},
		{
			name: "a new connection starts the order over",
			// the resumed connection's first id is below the last one's
			// newest: a replay, not out of order
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103)},
			events: []ev{W(5, 100), R(1, 10, 101), R(3, 30, 103), C, S(35), R(2, 20, 102)},
			want:   SeqCounts{Expected: 3, Delivered: 3, Receipts: 3, Replayed: 1, ByID: 3},
			since:  103,
		},
		{
			name: "open at the end, the replay not that far yet: lost, pending",
			// resumed from 101 at 40; 102 and 103 were published while
			// away and had not arrived by the end
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103)},
			events: []ev{W(5, 100), R(1, 10, 101), C, S(40)},
			want:   SeqCounts{Expected: 3, Delivered: 1, Lost: 2, Pending: 2, Receipts: 1, ByID: 3},
			since:  101,
		},
		{
			name: "not recovered: the gap is unrecovered, not lost",
			// since 101 answered recovered:false, position 104: 102 and
			// 103 are gone; 105 arrives live
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103), msg(50, 105)},
			events: []ev{W(5, 100), R(1, 10, 101), C, F(40, 104), R(4, 50, 105)},
			want:   SeqCounts{Expected: 4, Delivered: 2, Missed: 2, Unrecovered: 2, Receipts: 2, ByID: 4},
			since:  105,
		},
		{
			name:   "not recovered, without ids: by time",
			log:    []pubRec{msg(10, 0), msg(20, 0), msg(30, 0), msg(50, 0)},
			events: []ev{W(5, 100), R(1, 10, 101), C, F(40, 104), R(4, 50, 105)},
			want:   SeqCounts{Expected: 4, Delivered: 2, Missed: 2, Unrecovered: 2, Receipts: 2},
			since:  105,
		},
		{
			name: "away at the end: owed, not yet lost",
			// 102 was published after the last close: the device would
			// get it when it resumes
			log:    []pubRec{msg(10, 101), msg(20, 102)},
			events: []ev{W(5, 100), R(1, 10, 101), C},
			want:   SeqCounts{Expected: 2, Delivered: 1, Missed: 1, Receipts: 1, ByID: 2},
			since:  101,
		},
		{
			name: "away at the end after skipping one: lost",
			// it received 103 and missed 102: resuming from 103 skips it
			log:    []pubRec{msg(10, 101), msg(20, 102), msg(30, 103)},
			events: []ev{W(5, 100), R(1, 10, 101), R(3, 30, 103), C},
			want:   SeqCounts{Expected: 3, Delivered: 2, Lost: 1, Receipts: 2, ByID: 3},
			since:  103,
		},
		{
			name: "owed by id from the first position",
			// published (stamped) before the welcome at 15 but stored
			// after its position: owed and delivered; 99 was stored
			// before it: not owed (arriving anyway, it is early)
			log:    []pubRec{msg(1, 99), msg(10, 101), msg(20, 102)},
			events: []ev{W(15, 100), R(1, 1, 99), R(2, 10, 101), R(3, 20, 102)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Early: 1, Receipts: 3, ByID: 2},
			since:  102,
		},
		{
			name:   "an id other than the publisher's",
			log:    []pubRec{msg(10, 101), msg(20, 102)},
			events: []ev{W(5, 100), R(1, 10, 101), R(2, 20, 107)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Receipts: 2, ByID: 2, IDMismatch: 1},
			since:  107,
		},
		{
			name:   "a gateway without --resume: no position, payload rules",
			log:    []pubRec{msg(10, 101), msg(20, 102)},
			events: []ev{{kind: 'w', t: 5, noPos: true}, R(1, 10, 0), C},
			want:   SeqCounts{Expected: 2, Delivered: 1, Missed: 1, Receipts: 1},
		},
		{
			name:   "unacknowledged publishes are never expected",
			log:    []pubRec{msg(10, 101), {t: 20, state: pubFailed}},
			events: []ev{W(5, 100), R(1, 10, 101), R(2, 20, 102)},
			want:   SeqCounts{Expected: 1, Delivered: 1, Unconfirmed: 1, Receipts: 2, ByID: 1},
			since:  102,
		},
		{
			name:   "never welcomed",
			log:    []pubRec{msg(10, 101)},
			events: nil,
			want:   SeqCounts{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d devTrack
			var r devResume
			resumed := false
			for _, e := range tc.events {
				switch e.kind {
				case 'w', 's', 'f':
					d.welcome(e.t)
					since, ok := r.since()
					resumed = e.kind != 'w'
					if resumed && !ok {
						t.Fatal("a resumed welcome before any position")
					}
					pos := e.pos
					if e.kind == 's' {
						pos = since
					}
					r.welcomed(e.t, pos, !e.noPos, resumed, e.kind == 's')
				case 'r':
					var ooo bool
					if e.pos != 0 {
						ooo = r.received(e.pos)
					}
					d.receiveResume(e.seq, e.pos, ooo, resumed && e.t < d.w)
				case 'c':
					d.closed(false)
				}
			}
			got := d.accountResume(tc.log, d.open, &r)
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			if got.Expected != got.Delivered+got.Lost+got.Missed || got.Unrecovered > got.Missed || got.Pending > got.Lost ||
				got.Receipts != got.Delivered+got.Early+got.Unconfirmed+got.Unknown+got.Duplicated {
				t.Fatalf("counts do not add up: %+v", got)
			}
			if since, _ := r.since(); since != tc.since {
				t.Fatalf("resumes from %d, want %d", since, tc.since)
			}
		})
	}
}

func TestResumeFrames(t *testing.T) {
	for _, tc := range []struct {
		name           string
		welcome        string
		pos            uint64
		hasPos, rec, r bool
	}{
		{"first welcome", `{"type":"welcome","user":"lt-1","conn_id":"a","node":"n","heartbeat":25,"position":"42"}`, 42, true, false, false},
		{"recovered", `{"type":"welcome","user":"lt-1","conn_id":"a","node":"n","heartbeat":25,"position":"7","recovered":true}`, 7, true, true, true},
		{"not recovered", `{"type":"welcome","user":"lt-1","conn_id":"a","node":"n","heartbeat":25,"position":"90","recovered":false}`, 90, true, false, true},
		{"empty stream", `{"type":"welcome","user":"u","conn_id":"a","node":"n","heartbeat":25,"position":"0"}`, 0, true, false, false},
		{"no resume", `{"type":"welcome","user":"lt-1","conn_id":"a","node":"n","heartbeat":25}`, 0, false, false, false},
		{"not a number", `{"type":"welcome","position":"12a"}`, 0, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pos, hasPos, rec, hasRec := welcomePosition([]byte(tc.welcome))
			if pos != tc.pos || hasPos != tc.hasPos || rec != tc.rec || hasRec != tc.r {
				t.Fatalf("position %d %v, recovered %v %v", pos, hasPos, rec, hasRec)
			}
		})
	}
	for _, tc := range []struct {
		head string
		id   uint64
		ok   bool
	}{
		{`{"type":"message","id":"123",`, 123, true},
		{`{"type":"message","id":"lt.abcd.1.2",`, 0, false}, // a Wsfleet-Msg-Id, not a sequence
		{`{"type":"message",`, 0, false},
		{`{"type":"message","id":"99999999999999999999",`, 0, false}, // past uint64
		{`{"type":"message","id":"18446744073709551615",`, 1<<64 - 1, true},
	} {
		if id, ok := frameID([]byte(tc.head)); id != tc.id || ok != tc.ok {
			t.Errorf("frameID(%s) = %d %v, want %d %v", tc.head, id, ok, tc.id, tc.ok)
		}
	}
	for id, want := range map[string]uint64{"17": 17, "": 0, "3JwqnEBhHGqbHjP1FsFbzk": 0, "0": 0, "12x": 0} {
		if got := streamSeq(id); got != want {
			t.Errorf("streamSeq(%q) = %d, want %d", id, got, want)
		}
	}
}

// A --resume run's verdict: recovered:false fails it as a delivery
// problem that names the history settings, a gateway that gives no
// position as a run problem; lost and duplicated fail it as before.
func TestResumeVerdict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(r *Result)
		want   []string
		status int
	}{
		{name: "clean", edit: func(r *Result) {}, want: []string{}, status: ExitOK},
		{
			name: "not recovered",
			edit: func(r *Result) {
				r.Resume.Reconnects, r.Resume.Recovered, r.Resume.NotRecovered, r.Resume.Unrecovered = 20, 17, 3, 12
				r.Messages.Counts.Delivered, r.Messages.Counts.Missed, r.Messages.Counts.Unrecovered = 988, 12, 12
			},
			want:   []string{"3 of 20 reconnects with since were not recovered: history no longer held every message after their since (12 messages could not be replayed); the gateways' history settings are too small for this run (--history-max-per-user, --history-ttl, --history-max-bytes)"},
			status: ExitDelivery,
		},
		{
			name: "lost and duplicated across reconnects",
			edit: func(r *Result) {
				r.Messages.Counts.Delivered, r.Messages.Counts.Lost, r.Messages.Counts.Duplicated = 998, 2, 5
			},
			want:   []string{"2 of 1,000 expected messages were lost", "5 messages were duplicated"},
			status: ExitDelivery,
		},
		{
			name: "lost, still pending at the end of a drain that timed out",
			edit: func(r *Result) {
				r.Messages.Counts.Delivered, r.Messages.Counts.Lost, r.Messages.Counts.Pending = 990, 10, 10
				r.Messages.DrainEnd = "timeout"
			},
			want:   []string{"10 of 1,000 expected messages were lost (10 of them still pending at the end: their devices' open connections had received nothing after them; drain ended timeout)"},
			status: ExitDelivery,
		},
		{
			name:   "the gateway does not resume",
			edit:   func(r *Result) { r.Resume.NoPosition = 100 },
			want:   []string{"100 welcomes carried no position: the gateway does not run with --resume (start it with --resume, or run without it)"},
			status: ExitFailed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := passing(ScenarioChurn)
			res.Resume = &ResumeResult{Reconnects: 20, Recovered: 20}
			tc.edit(res)
			if got := Verdict(res); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("verdict\n%q\nwant\n%q", got, tc.want)
			}
			if got := ExitStatus(res); got != tc.status {
				t.Fatalf("exit status %d, want %d", got, tc.status)
			}
		})
	}
}

func TestResumeReportRows(t *testing.T) {
	res := sampleResult()
	res.Resume = &ResumeResult{Reconnects: 120, Recovered: 119, NotRecovered: 1, Replayed: 230, Lost: 0, Duplicated: 0,
		Unrecovered: 3, ByID: 2345, Expected: 2400}
	var txt bytes.Buffer
	WriteReport(&txt, res)
	flat := strings.Join(strings.Fields(txt.String()), " ")
	for _, want := range []string{"resume reconnects with since 120 recovered 119 not recovered 1 moved on notice 0",
		"replayed 230 lost 0 duplicated 0 out of order 0", "classified by id 2,345 of 2,400 expected",
		"not delivered unrecovered 3 away at the end 0 lost but pending 0 id mismatches 0", "replay (publish → receipt) –"} {
		if !strings.Contains(flat, want) {
			t.Errorf("report lacks %q:\n%s", want, txt.String())
		}
	}
}

// resumeFleet is a gateway with resumable delivery (Options.Resume) on a
// JetStream nats-server, and two routers, in this process: f.routerURL
// publishes plain NATS messages (the stream stores them, the answer's id
// is a NUID), the second runs with Resume (its answer's id is the stream
// sequence).
func resumeFleet(t *testing.T) (f *fleet, resumeRouterURL string) {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	f = &fleet{natsURL: ns.ClientURL()}
	gw, err := gateway.New(gateway.Options{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: f.natsURL,
		NodeID: "lt-resume", JWT: jwtverify.Config{HS256Secret: testSecret},
		Resume: true, History: testHistory,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	f.gw, f.wsURL = gw, "ws://"+gw.Addr().String()+"/ws"
	f.metrics = "http://" + gw.AdminAddr().String() + "/metrics"
	for _, resume := range []bool{false, true} {
		rt, err := router.New(router.Options{
			Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: f.natsURL, APIKeys: []string{testAPIKey},
			RateLimit: -1, IdempotencyStore: "memory", Resume: resume, History: testHistory,
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		if resume {
			resumeRouterURL = "http://" + rt.Addr().String()
		} else {
			f.rt, f.routerURL = rt, "http://"+rt.Addr().String()
		}
	}
	return f, resumeRouterURL
}

// testHistory is the history stream of the tests' --resume fleet: in
// memory, within the embedded server's 64 MiB.
var testHistory = history.Config{Storage: "memory", MaxBytes: 64 << 20}

// The churn scenario against a --resume gateway on a real JetStream
// server: with --resume every message published while a device was away
// reaches it when it comes back (0 lost, 0 duplicated, the verdict
// passes), counted by id when the publisher knows the ids (JetStream acks,
// a --resume router's answers) and by payload when it does not (a router
// without --resume); without --resume the same run misses what was
// published while devices were away.
func TestResumeChurnEndToEnd(t *testing.T) {
	f, resumeRouter := resumeFleet(t)
	churn := func(t *testing.T, via, routerURL string, resume bool) *Result {
		t.Helper()
		cfg := f.config(ScenarioChurn)
		cfg.MetricsURLs = nil
		cfg.Conns, cfg.Devices, cfg.ConnectRate = 100, 2, 3000
		cfg.MsgRate, cfg.Duration = 200, 2*time.Second
		cfg.ChurnRate, cfg.ChurnDown = 25, 300*time.Millisecond
		cfg.Publish.Via = via
		if routerURL != "" {
			cfg.Publish.RouterURL = routerURL
		}
		cfg.Resume = resume
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		m := res.Messages
		t.Logf("churned %d; messages %+v; resume %+v; drain %s", res.Churn.Closed, m.Counts, res.Resume, m.DrainEnd)
		if res.Churn.Closed < 20 {
			t.Fatalf("churned %d: the run shows nothing", res.Churn.Closed)
		}
		return res
	}
	for _, tc := range []struct {
		name   string
		via    string
		router string
		byID   bool // the publisher learns the ids
	}{
		{"via nats: JetStream acks give the ids", "nats", "", true},
		{"via a --resume router: its answers give the ids", "router", resumeRouter, true},
		{"via a plain router: no ids, payload accounting", "router", "", false},
	} {
		t.Run("resume "+tc.name, func(t *testing.T) {
			res := churn(t, tc.via, tc.router, true)
			m, rs := res.Messages, res.Resume
			checkClean(t, res, m.Counts)
			if rs == nil {
				t.Fatal("no resume result")
			}
			if rs.Lost != 0 || rs.Duplicated != 0 || rs.OutOfOrder != 0 || rs.NotRecovered != 0 || rs.NoPosition != 0 || rs.IDMismatch != 0 {
				t.Errorf("resume %+v", rs)
			}
			// every churned device came back with since, and was recovered
			if rs.Reconnects < res.Churn.Closed-int64(res.Connections.Target)+res.Connections.OpenAtEnd || rs.Recovered != rs.Reconnects || rs.Reconnects == 0 {
				t.Errorf("reconnects %d, recovered %d after %d churned", rs.Reconnects, rs.Recovered, res.Churn.Closed)
			}
			// what was published while away was replayed, not excused
			if rs.Replayed == 0 || m.Counts.Replayed != rs.Replayed {
				t.Errorf("replayed %d (messages %d): nothing published while a device was away?", rs.Replayed, m.Counts.Replayed)
			}
			if m.Counts.Missed != 0 || m.Counts.Delivered != m.Counts.Expected {
				t.Errorf("missed %d, delivered %d of %d", m.Counts.Missed, m.Counts.Delivered, m.Counts.Expected)
			}
			if tc.byID && m.Counts.ByID != m.Counts.Expected {
				t.Errorf("by id %d of %d expected: the publisher's ids were not used", m.Counts.ByID, m.Counts.Expected)
			}
			if !tc.byID && m.Counts.ByID != 0 {
				t.Errorf("by id %d: the router gives no ids", m.Counts.ByID)
			}
			if rs.Latency.Count != rs.Replayed {
				t.Errorf("replay latency samples %d, replayed %d", rs.Latency.Count, rs.Replayed)
			}
			out := res2report(res)
			for _, want := range []string{"\nresume\n", "reconnects with since", "replayed", "passed (exit status 0)"} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q:\n%s", want, out)
				}
			}
		})
	}
	t.Run("without resume the away messages are missed", func(t *testing.T) {
		res := churn(t, "nats", "", false)
		m := res.Messages
		checkClean(t, res, m.Counts)
		if res.Resume != nil || m.Counts.Replayed != 0 {
			t.Errorf("resume %+v, replayed %d without --resume", res.Resume, m.Counts.Replayed)
		}
		if m.Counts.Missed == 0 || m.Counts.Delivered >= m.Counts.Expected {
			t.Errorf("missed %d, delivered %d of %d: the devices away got everything without --resume?", m.Counts.Missed, m.Counts.Delivered, m.Counts.Expected)
		}
	})
}

func res2report(res *Result) string {
	var b bytes.Buffer
	WriteReport(&b, res)
	return b.String()
}

// A node draining sends its clients a reconnect notice (WebSockets) or its
// streams the notice event (--transport sse): with --resume a device
// closes at once, moves to the next --url and resumes there from its last
// id (since, or Last-Event-ID), losing and repeating nothing.
func TestResumeDrainNotice(t *testing.T) {
	for _, transport := range []string{TransportWS, TransportSSE} {
		t.Run(transport, func(t *testing.T) { resumeDrainNotice(t, transport) })
	}
}

func resumeDrainNotice(t *testing.T, transport string) {
	f, _ := resumeFleet(t)
	gw, err := gateway.New(gateway.Options{
		Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: f.natsURL,
		NodeID: "lt-drained", JWT: jwtverify.Config{HS256Secret: testSecret},
		Resume: true, History: testHistory, DrainTimeout: 500 * time.Millisecond,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	cfg := f.config(ScenarioDeliver)
	cfg.Transport = transport
	cfg.MetricsURLs = nil
	// slots alternate between the two nodes: half start on the drained
	// one (over sse, one URL as the SSE endpoint, the other as the gateway's)
	drainedURL := "ws://" + gw.Addr().String() + "/ws"
	if transport == TransportSSE {
		drainedURL = "http://" + gw.Addr().String() + "/sse"
	}
	cfg.URLs = []string{drainedURL, f.wsURL}
	cfg.Conns, cfg.ConnectRate = 100, 3000
	cfg.MsgRate, cfg.Duration = 200, 3*time.Second
	cfg.Publish.Via = "nats"
	cfg.Resume = true
	drained := make(chan error, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond) // the ramp of 100 is done well before
		drained <- gw.Drain(context.Background())
	}()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	m, rs := res.Messages, res.Resume
	t.Logf("messages %+v; resume %+v; closes %v", m.Counts, rs, res.Closes)
	checkClean(t, res, m.Counts)
	if transport == TransportSSE {
		checkSSEReport(t, cfg, res)
	}
	if rs.Moved != 50 || rs.Reconnects < 50 || rs.Recovered != rs.Reconnects {
		t.Errorf("moved %d, reconnects %d, recovered %d: want the 50 devices of the drained node moved and resumed", rs.Moved, rs.Reconnects, rs.Recovered)
	}
	if rs.Lost != 0 || rs.Duplicated != 0 || m.Counts.Missed != 0 || res.Connections.OpenAtEnd != 100 {
		t.Errorf("lost %d, duplicated %d, missed %d, open at end %d", rs.Lost, rs.Duplicated, m.Counts.Missed, res.Connections.OpenAtEnd)
	}
}

// --resume against a fleet that does not resume: a NATS without the
// history stream stops a --via nats run before its ramp, and a gateway
// whose welcomes carry no position fails the run (exit 1).
func TestResumeAgainstPlainFleet(t *testing.T) {
	f := startFleet(t) // no JetStream, no --resume
	t.Run("no history stream", func(t *testing.T) {
		env := map[string]string{"LOADTEST_JWT_HS256_SECRET": testSecret}
		var out, errb bytes.Buffer
		code := mainWith([]string{"churn", "--resume", "--via", "nats", "--nats-url", f.natsURL, "--url", f.wsURL, "--conns", "5",
			"--connect-timeout", "500ms", "--progress", "off"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &out, &errb, false)
		if code != ExitFailed || !strings.Contains(errb.String(), "has no history stream wsfleet_history") || out.Len() > 0 {
			t.Fatalf("exit status %d; stderr %s; stdout %s", code, errb.String(), out.String())
		}
	})
	t.Run("no position", func(t *testing.T) {
		cfg := f.config(ScenarioConnect)
		cfg.MetricsURLs = nil
		cfg.Conns, cfg.ConnectRate, cfg.Duration = 5, 1000, 100*time.Millisecond
		cfg.Resume = true
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Resume == nil || res.Resume.NoPosition != 5 || res.ExitStatus != ExitFailed ||
			len(res.Failures) != 1 || !strings.Contains(res.Failures[0], "the gateway does not run with --resume") {
			t.Fatalf("resume %+v, exit status %d, failures %q", res.Resume, res.ExitStatus, res.Failures)
		}
	})
}
