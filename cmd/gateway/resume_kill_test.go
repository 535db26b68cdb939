package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/internal/natsembed"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// TestKill9ResumeOnOtherNode kills one of two --resume gateways with
// SIGKILL while messages flow. Its clients reconnect to the other node with
// "since" set to the last id they received and must then have received
// every message of their user and every broadcast published after their
// first welcome's position: none lost, none twice, each connection's ids
// ascending.
func TestKill9ResumeOnOtherNode(t *testing.T) {
	const (
		users      = 20
		total      = 500 // messages published, broadcasts included
		killAt     = total / 2
		bcastEvery = 10 // every tenth message is a broadcast
		pace       = 5 * time.Millisecond
	)
	start := time.Now()
	// The polls give up at pollDeadline; the clients' reads and dials,
	// which must outlive the polls, end at hardDeadline.
	pollDeadline, hardDeadline := start.Add(20*time.Second), start.Add(25*time.Second)

	ns, err := natsembed.Start(natsembed.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)

	env := []string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret}
	args := func(id string) []string {
		return []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--nats-url", ns.ClientURL(), "--node-id", id, "--resume",
			"--history-storage", "memory", "--history-max-bytes", "67108864"}
	}
	nodeA := startNode(t, env, args("kill-a")...)
	logsA := collectLogs(t, nodeA)
	nodeB := startNode(t, env, args("kill-b")...)
	logsB := collectLogs(t, nodeB)

	subjects, err := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// Every client on node A first.
	clients := make([]*killClient, users)
	for i := range clients {
		u := fmt.Sprintf("kill-u%02d", i)
		subj, err := subjects.UserID(u)
		if err != nil {
			t.Fatal(err)
		}
		c := &killClient{user: u, subject: subj, token: mint(t, u), start: start, deadline: hardDeadline, nodeB: nodeB.listen}
		ws, w, err := killDial(nodeA.listen, c.token, "", hardDeadline)
		if err != nil {
			t.Fatalf("%s on node A: %v", u, err)
		}
		pos, err := strconv.ParseUint(fmt.Sprint(w["position"]), 10, 64)
		if err != nil || w["node"] != "kill-a" {
			ws.Close()
			t.Fatalf("%s: welcome %v, want a position from kill-a", u, w)
		}
		c.firstPos = pos
		c.ws = ws
		c.conns = []*killConn{{node: "A", position: pos, welcomed: since(start)}}
		clients[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.run() }()
	}
	stopClients := func() {
		for _, c := range clients {
			c.stop()
		}
		wg.Wait()
	}
	t.Cleanup(stopClients) // on a t.Fatal below

	// The publisher: a steady flow; node A dies in the middle of it.
	pubs := map[uint64]killPub{}
	var order []uint64 // sequences, in publish order
	publish := func(subj, data string) uint64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := js.Publish(ctx, subj, []byte(data))
		if err != nil {
			t.Fatalf("publishing %s at %s: %v", subj, since(start), err)
		}
		return ack.Sequence
	}
	var killedAt time.Duration
	var lastBeforeKill uint64
	nUser := 0 // user messages so far: they go round the users
	tick := time.NewTicker(pace)
	for i := 0; i < total; i++ {
		<-tick.C
		if i == killAt {
			if err := nodeA.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("SIGKILL node A: %v", err)
			}
			killedAt = since(start)
			lastBeforeKill = order[len(order)-1]
		}
		p := killPub{at: since(start), afterKill: i >= killAt}
		if i%bcastEvery == bcastEvery-1 {
			p.user = "" // a broadcast
			p.seq = publish("wsfleet.broadcast", fmt.Sprintf(`{"b":%d}`, i))
		} else {
			c := clients[nUser%users]
			nUser++
			p.user = c.user
			p.seq = publish(c.subject, fmt.Sprintf(`{"u":%q,"n":%d}`, c.user, i))
		}
		pubs[p.seq] = p
		order = append(order, p.seq)
	}
	tick.Stop()
	pubStart, published := pubs[order[0]].at, since(start)

	owed := func(c *killClient) map[uint64]bool {
		o := map[uint64]bool{}
		for seq, p := range pubs {
			if p.user == c.user || (p.user == "" && seq > c.firstPos) {
				o[seq] = true
			}
		}
		return o
	}
	// everyoneHas: every client is on node B and has every id it is owed.
	everyoneHas := func() error {
		var short []string
		for _, c := range clients {
			if err := c.error(); err != nil {
				return fmt.Errorf("%w: %s: %v", errGiveUp, c.user, err)
			}
			got := c.received()
			n := 0
			for seq := range owed(c) {
				if got[seq] == 0 {
					n++
				}
			}
			if !c.onB() || n > 0 {
				short = append(short, fmt.Sprintf("%s (on B: %v, %d missing)", c.user, c.onB(), n))
			}
		}
		if len(short) > 0 {
			return fmt.Errorf("%d clients are short: %s", len(short), strings.Join(short, ", "))
		}
		return nil
	}
	waitErr := pollUntil(t, pollDeadline, everyoneHas)
	if waitErr == nil {
		// A last broadcast as a barrier: once every client has it, anything
		// delivered before it (a late duplicate) has been read too.
		seq := publish("wsfleet.broadcast", `"end"`)
		pubs[seq] = killPub{seq: seq, at: since(start), afterKill: true}
		order = append(order, seq)
		waitErr = pollUntil(t, pollDeadline, everyoneHas)
	}
	stopClients()

	// The verdict, per user, by sequence.
	var problems []string
	reconnects := make([]time.Duration, 0, users)
	for _, c := range clients {
		if p := c.verdict(owed(c), pubs, killedAt); p != "" {
			problems = append(problems, p)
		}
		if len(c.conns) > 1 {
			reconnects = append(reconnects, c.conns[1].welcomed-killedAt)
		}
	}
	sort.Slice(reconnects, func(i, j int) bool { return reconnects[i] < reconnects[j] })
	var nb int
	for _, p := range pubs {
		if p.user == "" {
			nb++
		}
	}
	t.Logf("published %d messages (%d broadcasts, ids %d to %d) from %s to %s; node A killed at %s after id %d; clients welcomed on B %v after the kill",
		len(pubs), nb, order[0], order[len(order)-1], pubStart, published, killedAt, lastBeforeKill, spread(reconnects))
	t.Logf("node B: %s", resumeMetrics(nodeB.admin))
	if waitErr != nil || len(problems) > 0 {
		var b strings.Builder
		if waitErr != nil {
			fmt.Fprintf(&b, "not every client got every id it is owed by %s: %v\n", since(start), waitErr)
		}
		for _, p := range problems {
			b.WriteString(p)
			b.WriteString("\n")
		}
		b.WriteString("node A logs (the last 20 lines before the kill):\n")
		b.WriteString(logsA.lines(20, ""))
		b.WriteString("node B logs (warnings and errors):\n")
		b.WriteString(logsB.lines(50, "warn"))
		t.Fatal(b.String())
	}
}

// killPub is a published message.
type killPub struct {
	seq       uint64
	user      string        // "" for a broadcast
	at        time.Duration // published, from the start of the test
	afterKill bool
}

// killConn is one WebSocket connection of a client and the ids it received.
type killConn struct {
	node      string // "A" or "B"
	since     string // the "since" of its auth frame ("" on A)
	position  uint64 // its welcome's
	welcomed  time.Duration
	ids       []uint64
	ended     string // how it ended, when it did
	nonMsgs   []string
	recovered any
}

// killClient is a user's client: on node A, then on node B from the last
// id it received once its connection to A broke.
type killClient struct {
	user, subject, token string
	nodeB                string
	start, deadline      time.Time
	firstPos             uint64

	mu      sync.Mutex
	ws      *wstest.Conn // the current connection
	conns   []*killConn
	err     error // why it stopped before it was told to
	stopped bool
}

func since(start time.Time) time.Duration { return time.Since(start).Round(time.Millisecond) }

// killDial connects to addr, authenticates (with since unless it is ""),
// and returns the connection and its welcome.
func killDial(addr, token, since string, deadline time.Time) (*wstest.Conn, map[string]any, error) {
	d := &wstest.Dialer{HandshakeTimeout: time.Until(deadline)}
	ws, _, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		return nil, nil, err
	}
	ws.SetReadDeadline(deadline)
	auth := map[string]string{"type": "auth", "token": token}
	if since != "" {
		auth["since"] = since
	}
	if err := ws.WriteJSON(auth); err != nil {
		ws.Close()
		return nil, nil, err
	}
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, nil, fmt.Errorf("before the welcome: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			ws.Close()
			return nil, nil, fmt.Errorf("frame %s: %w", b, err)
		}
		switch m["type"] {
		case "welcome":
			return ws, m, nil
		case "ping":
		default:
			ws.Close()
			return nil, nil, fmt.Errorf("%s before the welcome", b)
		}
	}
}

// run reads until stopped; when the connection to node A breaks it
// reconnects to node B.
func (c *killClient) run() {
	for {
		c.mu.Lock()
		ws, cur := c.ws, c.conns[len(c.conns)-1]
		c.mu.Unlock()
		_, b, err := ws.ReadMessage()
		if err == nil {
			var m struct {
				Type string `json:"type"`
				ID   string `json:"id"`
			}
			if json.Unmarshal(b, &m) != nil {
				c.fail(fmt.Errorf("frame %s is not JSON", b))
				return
			}
			c.mu.Lock()
			switch m.Type {
			case "message":
				seq, err := strconv.ParseUint(m.ID, 10, 64)
				if err != nil {
					c.mu.Unlock()
					c.fail(fmt.Errorf("message id %q is not a sequence: %s", m.ID, b))
					return
				}
				cur.ids = append(cur.ids, seq)
			case "ping":
			default:
				cur.nonMsgs = append(cur.nonMsgs, string(b))
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			return
		}
		cur.ended = fmt.Sprintf("at %s: %v", since(c.start), err)
		onB := cur.node == "B"
		sinceID := strconv.FormatUint(c.firstPos, 10) // nothing received yet: the welcome's position
		for _, k := range c.conns {
			if len(k.ids) > 0 {
				sinceID = strconv.FormatUint(k.ids[len(k.ids)-1], 10)
			}
		}
		c.mu.Unlock()
		if onB {
			c.fail(fmt.Errorf("the connection to node B broke %s", cur.ended))
			return
		}
		ws.Close()
		var w map[string]any
		for attempt := 1; ; attempt++ {
			ws, w, err = killDial(c.nodeB, c.token, sinceID, c.deadline)
			if err == nil || attempt == 5 || time.Now().After(c.deadline) {
				break
			}
			time.Sleep(time.Duration(attempt) * 50 * time.Millisecond) // back-off before a retry
		}
		if err != nil {
			c.fail(fmt.Errorf("reconnecting to node B with since %s: %v", sinceID, err))
			return
		}
		k := &killConn{node: "B", since: sinceID, welcomed: since(c.start), recovered: w["recovered"]}
		k.position, _ = strconv.ParseUint(fmt.Sprint(w["position"]), 10, 64)
		if w["recovered"] != true || fmt.Sprint(w["position"]) != sinceID || w["node"] != "kill-b" {
			ws.Close()
			c.fail(fmt.Errorf("welcome on node B with since %s: %v, want recovered:true, position %s, node kill-b", sinceID, w, sinceID))
			return
		}
		c.mu.Lock()
		if c.stopped {
			c.mu.Unlock()
			ws.Close()
			return
		}
		c.ws = ws
		c.conns = append(c.conns, k)
		c.mu.Unlock()
	}
}

func (c *killClient) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

func (c *killClient) error() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// stop ends the client's reading.
func (c *killClient) stop() {
	c.mu.Lock()
	c.stopped = true
	if c.ws != nil {
		c.ws.Close()
	}
	c.mu.Unlock()
}

func (c *killClient) onB() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[len(c.conns)-1].node == "B"
}

// received counts each id over every connection.
func (c *killClient) received() map[uint64]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := map[uint64]int{}
	for _, k := range c.conns {
		for _, seq := range k.ids {
			got[seq]++
		}
	}
	return got
}

// verdict describes what is wrong with what the client received ("" when
// nothing is): ids missing, received twice, not owed to it, or out of order
// on a connection. Call it once the client is stopped.
func (c *killClient) verdict(owed map[uint64]bool, pubs map[uint64]killPub, killedAt time.Duration) string {
	var missing, unowed []uint64
	dups := map[uint64][]string{} // id → the connections that received it
	var disorder []string
	for i, k := range c.conns {
		name := fmt.Sprintf("%s#%d", k.node, i)
		for j, seq := range k.ids {
			dups[seq] = append(dups[seq], name)
			if !owed[seq] {
				unowed = append(unowed, seq)
			}
			if j > 0 && seq <= k.ids[j-1] {
				chain := "across the user and broadcast chains"
				if (pubs[seq].user == "") == (pubs[k.ids[j-1]].user == "") {
					chain = "on one chain"
				}
				disorder = append(disorder, fmt.Sprintf("%s: %d after %d (%s)", name, seq, k.ids[j-1], chain))
			}
		}
	}
	for seq := range owed {
		if len(dups[seq]) == 0 {
			missing = append(missing, seq)
		}
	}
	var twice []string
	for seq, on := range dups {
		if len(on) > 1 {
			twice = append(twice, fmt.Sprintf("%d %s", seq, describe(pubs, seq, killedAt)+" on "+strings.Join(on, ",")))
		}
	}
	if c.err == nil && len(missing) == 0 && len(unowed) == 0 && len(twice) == 0 && len(disorder) == 0 {
		return ""
	}
	sortSeqs(missing)
	sortSeqs(unowed)
	sort.Strings(twice)
	var b strings.Builder
	fmt.Fprintf(&b, "user %s (first position %d, %d ids owed):", c.user, c.firstPos, len(owed))
	if c.err != nil {
		fmt.Fprintf(&b, "\n  client error: %v", c.err)
	}
	if len(missing) > 0 {
		var d []string
		for _, seq := range missing {
			d = append(d, fmt.Sprintf("%d %s", seq, describe(pubs, seq, killedAt)))
		}
		fmt.Fprintf(&b, "\n  missing %d: %s", len(missing), strings.Join(d, "; "))
	}
	if len(twice) > 0 {
		fmt.Fprintf(&b, "\n  duplicated %d: %s", len(twice), strings.Join(twice, "; "))
	}
	if len(unowed) > 0 {
		fmt.Fprintf(&b, "\n  not owed to it: %v", unowed)
	}
	if len(disorder) > 0 {
		fmt.Fprintf(&b, "\n  out of order: %s", strings.Join(disorder, "; "))
	}
	for i, k := range c.conns {
		fmt.Fprintf(&b, "\n  %s#%d: since %q, position %d, recovered %v, welcomed at %s, %d ids %v", k.node, i, k.since, k.position, k.recovered, k.welcomed, len(k.ids), k.ids)
		if k.ended != "" {
			fmt.Fprintf(&b, ", ended %s", k.ended)
		}
		if len(k.nonMsgs) > 0 {
			fmt.Fprintf(&b, ", other frames %v", k.nonMsgs)
		}
	}
	return b.String()
}

// describe says what a sequence was: whose message, published when.
func describe(pubs map[uint64]killPub, seq uint64, killedAt time.Duration) string {
	p, ok := pubs[seq]
	if !ok {
		return "(not published by the test)"
	}
	what := "broadcast"
	if p.user != "" {
		what = "for " + p.user
	}
	when := "before"
	if p.afterKill {
		when = "after"
	}
	return fmt.Sprintf("(%s, published at %s, %s the kill at %s)", what, p.at, when, killedAt)
}

func sortSeqs(s []uint64) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }

func spread(d []time.Duration) string {
	if len(d) == 0 {
		return "(none)"
	}
	return fmt.Sprintf("from %s to %s", d[0].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}

// errGiveUp, wrapped by an error of a pollUntil condition, ends the poll.
var errGiveUp = errors.New("giving up")

// pollUntil calls f every 20 ms until it returns nil or an error wrapping
// errGiveUp, or deadline passes, and returns its last error.
func pollUntil(t *testing.T, deadline time.Time, f func() error) error {
	t.Helper()
	for {
		err := f()
		if err == nil || errors.Is(err, errGiveUp) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeLogs keeps a node's log lines after "gateway started".
type nodeLogs struct {
	mu  sync.Mutex
	all []map[string]any
}

func collectLogs(t *testing.T, n *node) *nodeLogs {
	t.Helper()
	l := &nodeLogs{}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case m := <-n.logs:
				l.mu.Lock()
				l.all = append(l.all, m)
				l.mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	return l
}

// lines formats the last max lines of level at least minLevel ("": any).
func (l *nodeLogs) lines(max int, minLevel string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sel []string
	for _, m := range l.all {
		lv := fmt.Sprint(m["level"])
		if minLevel == "warn" && lv != "warn" && lv != "error" && lv != "dpanic" && lv != "fatal" {
			continue
		}
		b, _ := json.Marshal(m)
		sel = append(sel, "  "+string(b))
	}
	if len(sel) > max {
		sel = sel[len(sel)-max:]
	}
	if len(sel) == 0 {
		return "  (none)\n"
	}
	return strings.Join(sel, "\n") + "\n"
}

// resumeMetrics reads a node's resume and replay counters.
func resumeMetrics(admin string) string {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "wsfleet_gateway_re") || strings.HasPrefix(line, "wsfleet_gateway_dropped") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return "no resume metrics"
	}
	return strings.Join(out, ", ")
}
