package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

// ---- a three-server NATS cluster with JetStream, in the test process ----

// jsCluster is three nats-servers ("n1", "n2", "n3", index 0 to 2) with
// JetStream, routed to each other. A server stopped with stop starts
// again with start on the same ports and store directory.
type jsCluster struct {
	client  [3]int // client ports
	route   [3]int // cluster ports
	dirs    [3]string
	mu      sync.Mutex
	srvs    [3]*server.Server
	log     *clusterLog
	started time.Time
}

func clusterName(i int) string { return fmt.Sprintf("n%d", i+1) }

// startJSCluster starts the cluster and waits until it has a JetStream
// meta leader that knows all three servers.
func startJSCluster(t *testing.T) *jsCluster {
	t.Helper()
	c := &jsCluster{started: time.Now()}
	c.log = &clusterLog{start: c.started}
	// Six free ports, held open together so that none is handed out twice.
	var lns []net.Listener
	for range 6 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	for i := range 3 {
		c.client[i] = lns[i].Addr().(*net.TCPAddr).Port
		c.route[i] = lns[3+i].Addr().(*net.TCPAddr).Port
		c.dirs[i] = t.TempDir()
	}
	for _, ln := range lns {
		ln.Close()
	}
	t.Cleanup(func() {
		for i := range 3 {
			c.stop(i)
		}
		if t.Failed() {
			t.Logf("NATS cluster log (since the cluster started):\n%s", c.log.String())
		}
	})
	for i := range 3 {
		c.start(t, i)
	}
	c.waitMetaLeader(t)
	return c
}

// options builds server i's configuration (a fresh one each start:
// nats-server changes the options it is given).
func (c *jsCluster) options(i int) *server.Options {
	var routes []*url.URL
	for k := range 3 {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", c.route[k])})
	}
	return &server.Options{
		ServerName:         clusterName(i),
		Host:               "127.0.0.1",
		Port:               c.client[i],
		NoSigs:             true,
		JetStream:          true,
		StoreDir:           c.dirs[i],
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 30,
		Cluster:            server.ClusterOpts{Name: "wsfleet-test", Host: "127.0.0.1", Port: c.route[i]},
		Routes:             routes,
	}
}

// start starts (or starts again) server i.
func (c *jsCluster) start(t *testing.T, i int) {
	t.Helper()
	s, err := server.NewServer(c.options(i))
	if err != nil {
		t.Fatal(err)
	}
	s.SetLoggerV2(c.log.of(clusterName(i)), false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("nats-server %s did not start", clusterName(i))
	}
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
	c.log.add("test", "%s started", clusterName(i))
}

// stop shuts server i down (a no-op when it is not running).
func (c *jsCluster) stop(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s == nil {
		return
	}
	c.log.add("test", "stopping %s", clusterName(i))
	s.Shutdown()
	s.WaitForShutdown()
	c.log.add("test", "%s stopped", clusterName(i))
}

func (c *jsCluster) server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srvs[i]
}

func (c *jsCluster) url(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.client[i]) }

// urls lists every server's URL, server first first (for a connection
// with nats.DontRandomize that connects to first and fails over to the
// others).
func (c *jsCluster) urls(first int) string {
	u := []string{c.url(first)}
	for i := range 3 {
		if i != first {
			u = append(u, c.url(i))
		}
	}
	return strings.Join(u, ",")
}

// clusterIndex is the index of a server by name, -1 for a name not in the
// cluster.
func clusterIndex(name string) int {
	for i := range 3 {
		if clusterName(i) == name {
			return i
		}
	}
	return -1
}

// waitMetaLeader waits until a server leads the JetStream meta group,
// knows the three servers, and every running server is current with it.
func (c *jsCluster) waitMetaLeader(t *testing.T) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		leader := ""
		for i := range 3 {
			s := c.server(i)
			if s == nil {
				continue
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current with the meta group", clusterName(i))
			}
			if s.JetStreamIsLeader() {
				if n := len(s.JetStreamClusterPeers()); n != 3 {
					return fmt.Errorf("meta leader %s knows %d peers", clusterName(i), n)
				}
				leader = clusterName(i)
			}
		}
		if leader == "" {
			return fmt.Errorf("no JetStream meta leader")
		}
		return nil
	})
}

// clusterStreamInfo asks for the stream's info (answered by its leader: nobody
// answers while it has none, hence the timeout).
func clusterStreamInfo(js jetstream.JetStream, name string, timeout time.Duration) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return st.CachedInfo(), nil
}

// streamHealth returns the stream's leader when it has one and every
// running server is a current replica.
func (c *jsCluster) streamHealth(js jetstream.JetStream, name string) (leader int, err error) {
	info, err := clusterStreamInfo(js, name, 500*time.Millisecond)
	if err != nil {
		return -1, err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("stream %s has no leader", name)
	}
	for i := range 3 {
		if s := c.server(i); s != nil && !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, name) {
			return -1, fmt.Errorf("%s is not a current replica of %s", clusterName(i), name)
		}
	}
	for _, r := range info.Cluster.Replicas {
		k := clusterIndex(r.Name)
		if k < 0 {
			return -1, fmt.Errorf("replica %q of %s is not a server of the cluster", r.Name, name)
		}
		if c.server(k) != nil && (!r.Current || r.Offline) {
			return -1, fmt.Errorf("replica %s of %s: current %v, offline %v", r.Name, name, r.Current, r.Offline)
		}
	}
	if k := clusterIndex(info.Cluster.Leader); k >= 0 {
		return k, nil
	}
	return -1, fmt.Errorf("stream %s led by %q, not a server of the cluster", name, info.Cluster.Leader)
}

// waitStreamHealthy waits until the stream has a leader and every running
// server is a current replica; it returns the leader's index.
func (c *jsCluster) waitStreamHealthy(t *testing.T, js jetstream.JetStream, name string) int {
	t.Helper()
	leader := -1
	checkFor(t, 20*time.Second, func() (err error) {
		leader, err = c.streamHealth(js, name)
		return err
	})
	return leader
}

// moveStreamLeader makes server i the stream's leader (a stepdown that
// prefers it) and waits until every replica is current.
func (c *jsCluster) moveStreamLeader(t *testing.T, nc *nats.Conn, js jetstream.JetStream, name string, i int) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": clusterName(i)}})
	for attempt := 0; ; attempt++ {
		if c.waitStreamHealthy(t, js, name) == i {
			c.log.add("test", "stream %s led by %s", name, clusterName(i))
			return
		}
		if attempt == 5 {
			t.Fatalf("stream %s: %s did not become its leader", name, clusterName(i))
		}
		m, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+name, req, 2*time.Second)
		if err != nil {
			c.log.add("test", "stepdown towards %s: %v", clusterName(i), err)
			continue
		}
		c.log.add("test", "stepdown towards %s: %s", clusterName(i), m.Data)
		// The new leader is elected within a few hundred milliseconds.
		_ = clusterPoll(5*time.Second, func() error {
			if l, err := c.streamHealth(js, name); err != nil || l != i {
				return fmt.Errorf("leader %d (%v)", l, err)
			}
			return nil
		})
	}
}

// clusterPoll polls f until it returns nil or timeout passes, and returns
// its last error.
func clusterPoll(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clusterLog keeps the servers' notices, warnings and errors (the last
// ones), printed when a test fails.
type clusterLog struct {
	start time.Time
	mu    sync.Mutex
	lines []string
}

const clusterLogLines = 600

func (l *clusterLog) add(who, format string, a ...any) {
	line := fmt.Sprintf("%8.3fs [%s] %s", time.Since(l.start).Seconds(), who, fmt.Sprintf(format, a...))
	l.mu.Lock()
	if len(l.lines) == clusterLogLines {
		l.lines = slices.Delete(l.lines, 0, clusterLogLines/4)
	}
	l.lines = append(l.lines, line)
	l.mu.Unlock()
}

func (l *clusterLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *clusterLog) of(name string) server.Logger { return serverLog{l: l, name: name} }

type serverLog struct {
	l    *clusterLog
	name string
}

func (s serverLog) Noticef(f string, a ...any) { s.l.add(s.name, f, a...) }
func (s serverLog) Warnf(f string, a ...any)   { s.l.add(s.name, "WRN "+f, a...) }
func (s serverLog) Fatalf(f string, a ...any)  { s.l.add(s.name, "FTL "+f, a...) }
func (s serverLog) Errorf(f string, a ...any)  { s.l.add(s.name, "ERR "+f, a...) }
func (s serverLog) Debugf(string, ...any)      {}
func (s serverLog) Tracef(string, ...any)      {}

// clusterHistory is the history configuration of the cluster tests: three
// replicas on files, and a per-user limit no test reaches.
func clusterHistory() history.Config {
	return history.Config{Storage: "file", Replicas: 3, MaxBytes: 64 << 20, MaxPerUser: 100000}
}

// ensureClusterStream creates the history stream through nc (before any
// gateway starts, so that the test knows its leader first) and waits until
// every replica is current; it returns the leader's index.
func ensureClusterStream(t *testing.T, c *jsCluster, nc *nats.Conn, js jetstream.JetStream) int {
	t.Helper()
	cfg := clusterHistory()
	cfg.SetDefaults()
	checkFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := history.Ensure(ctx, nc, cfg)
		return err
	})
	return c.waitStreamHealthy(t, js, history.StreamName("wsfleet"))
}

// clusterGateway starts a node with --resume whose NATS connection tries
// the cluster's servers in order, gw first; pinned: it knows only gw (a
// node next to its NATS server, waiting for it to come back).
func clusterGateway(t *testing.T, c *jsCluster, gw int, pinned bool) *gateway.Server {
	t.Helper()
	srv := resumeGateway(t, c.urls(gw), func(o *gateway.Options) {
		o.History = clusterHistory()
		o.NATSOptions = []nats.Option{nats.DontRandomize()}
		if pinned {
			o.NATSURL = c.url(gw)
			o.NATSOptions = append(o.NATSOptions, nats.IgnoreDiscoveredServers())
		}
	})
	if got := srv.NATSConn().ConnectedServerName(); got != clusterName(gw) {
		t.Fatalf("gateway connected to %s, want %s", got, clusterName(gw))
	}
	return srv
}

// clusterNATS connects a service to the cluster, server first first.
func clusterNATS(t *testing.T, c *jsCluster, first int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.urls(first), nats.DontRandomize(), nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got := nc.ConnectedServerName(); got != clusterName(first) {
		t.Fatalf("service connected to %s, want %s", got, clusterName(first))
	}
	return nc, newJS(t, nc)
}

// ---- a publisher at a steady pace ----

// pubRecord is one acknowledged publish.
type pubRecord struct {
	subj, data string
	seq        uint64 // the ack's sequence
	retries    int    // publishes repeated (same Nats-Msg-Id) before the ack
	phase      string // what the cluster was going through when it was first sent
}

// clusterPublisher publishes, one at a time every couple of milliseconds,
// to its subjects in turn, each message with a Nats-Msg-Id: a publish that
// fails (no stream leader for a moment, a timeout) is repeated with the
// same id until acknowledged, so the ack's sequence is the message's
// whether or not the first try was stored.
type clusterPublisher struct {
	js       jetstream.JetStream
	subjects []string
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	mu       sync.Mutex
	acked    []pubRecord
	lastErr  error
	err      error  // fatal: a message not acknowledged within 20 s
	phase    string // set by the test: what the cluster goes through
}

// setPhase labels the messages published from now on.
func (p *clusterPublisher) setPhase(phase string) {
	p.mu.Lock()
	p.phase = phase
	p.mu.Unlock()
}

// startClusterPublisher starts publishing; it stops at the end of the
// test at the latest.
func startClusterPublisher(t *testing.T, js jetstream.JetStream, subjects []string) *clusterPublisher {
	p := &clusterPublisher{js: js, subjects: subjects, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	t.Cleanup(p.halt)
	return p
}

// halt stops the publisher and waits for it.
func (p *clusterPublisher) halt() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

func (p *clusterPublisher) run() {
	defer close(p.done)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		subj := p.subjects[n%len(p.subjects)]
		data := fmt.Sprintf(`{"n":%d,"to":%q}`, n, subj)
		deadline := time.Now().Add(20 * time.Second)
		p.mu.Lock()
		phase := p.phase
		p.mu.Unlock()
		for tries := 0; ; tries++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ack, err := p.js.Publish(ctx, subj, []byte(data), jetstream.WithMsgID(fmt.Sprintf("cluster-%d", n)))
			cancel()
			p.mu.Lock()
			if err == nil {
				p.acked = append(p.acked, pubRecord{subj: subj, data: data, seq: ack.Sequence, retries: tries, phase: phase})
				p.mu.Unlock()
				break
			}
			p.lastErr = err
			if time.Now().After(deadline) {
				p.err = fmt.Errorf("message %d to %s not acknowledged within 20s: %v", n, subj, err)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			time.Sleep(20 * time.Millisecond) // a pause before the retry, not a synchronisation
		}
	}
}

// waitAcked waits until n more messages than before are acknowledged.
func (p *clusterPublisher) waitAcked(t *testing.T, n int) {
	t.Helper()
	p.mu.Lock()
	want := len(p.acked) + n
	p.mu.Unlock()
	checkFor(t, 20*time.Second, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err != nil {
			t.Fatalf("publisher: %v", p.err)
		}
		if len(p.acked) < want {
			return fmt.Errorf("%d of %d messages acknowledged (last error: %v)", len(p.acked), want, p.lastErr)
		}
		return nil
	})
}

// finish stops the publisher and returns what it published.
func (p *clusterPublisher) finish(t *testing.T) []pubRecord {
	t.Helper()
	p.halt()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		t.Fatalf("publisher: %v", p.err)
	}
	return p.acked
}

// ---- clients that resume ----

// clusterDelivery is a message frame a client received.
type clusterDelivery struct {
	seq  uint64
	data string
	conn int       // the client's connection that received it (0: the first)
	at   time.Time // when it was read
}

// clusterClient is one user's client: it reads every frame in a goroutine
// and, when its connection ends, connects again with "since" the id of the
// last message it received (as README.md tells clients to).
type clusterClient struct {
	user, tok, url string
	pos            uint64 // the first welcome's position
	mu             sync.Mutex
	ws             *wstest.Conn
	got            []clusterDelivery
	conns          int
	events         []string // reconnections, frames of another type
	stopping       bool
	done           chan struct{}
}

// startClusterClient connects a client and starts its reader.
func startClusterClient(t *testing.T, srv *gateway.Server, user string) *clusterClient {
	t.Helper()
	c := &clusterClient{user: user, tok: token(t, user), url: wsURL(srv), done: make(chan struct{})}
	ws, w, err := clusterDial(c.url, c.tok, "")
	if err != nil {
		t.Fatalf("%s: %v", user, err)
	}
	c.ws, c.pos = ws, seqOf(t, w["position"])
	go c.read()
	t.Cleanup(c.stop)
	return c
}

// clusterDial connects and authenticates (with since unless it is "") and
// returns the connection and its welcome; it fails with an error, not the
// test, so that goroutines may use it.
func clusterDial(url, tok, since string) (*wstest.Conn, map[string]any, error) {
	ws, _, err := wstest.DefaultDialer.Dial(url, nil)
	if err != nil {
		return nil, nil, err
	}
	f := map[string]any{"type": "auth", "token": tok}
	if since != "" {
		f["since"] = since
	}
	if err := ws.WriteJSON(f); err != nil {
		ws.Close()
		return nil, nil, err
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			ws.Close()
			return nil, nil, fmt.Errorf("waiting for the welcome: %w", err)
		}
		switch m["type"] {
		case protocol.TypePing:
		case protocol.TypeWelcome:
			return ws, m, nil
		default:
			ws.Close()
			return nil, nil, fmt.Errorf("got %v before the welcome", m)
		}
	}
}

func (c *clusterClient) read() {
	defer close(c.done)
	for {
		c.mu.Lock()
		ws := c.ws
		c.mu.Unlock()
		ws.SetReadDeadline(time.Now().Add(time.Minute))
		_, b, err := ws.ReadMessage()
		if err != nil {
			if !c.reconnect(err) {
				return
			}
			continue
		}
		var m struct {
			Type string          `json:"type"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			c.event("frame %q is not JSON", b)
			continue
		}
		switch m.Type {
		case protocol.TypePing:
		case protocol.TypeMessage:
			seq, err := strconv.ParseUint(m.ID, 10, 64)
			if err != nil {
				c.event("message id %q is not a sequence", m.ID)
				continue
			}
			c.mu.Lock()
			c.got = append(c.got, clusterDelivery{seq: seq, data: string(m.Data), conn: c.conns, at: time.Now()})
			c.mu.Unlock()
		default:
			c.event("unexpected frame %s", b)
		}
	}
}

// reconnect connects again after the connection ended with err, with
// since the last id received; false once the client is stopped or cannot
// connect within 20 s.
func (c *clusterClient) reconnect(cause error) bool {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return false
	}
	since := c.pos
	if len(c.got) > 0 {
		since = c.got[len(c.got)-1].seq
	}
	c.mu.Unlock()
	c.event("connection %d ended (%v); connecting again since %d", c.conns, cause, since)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			return false
		}
		ws, w, err := clusterDial(c.url, c.tok, strconv.FormatUint(since, 10))
		if err == nil {
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				ws.Close()
				return false
			}
			c.ws = ws
			c.conns++
			c.mu.Unlock()
			if w["recovered"] != true {
				c.event("welcome since %d not recovered: %v", since, w)
			}
			return true
		}
		if time.Now().After(deadline) {
			c.event("could not connect again: %v", err)
			return false
		}
		time.Sleep(100 * time.Millisecond) // a pause between attempts, not a synchronisation
	}
}

func (c *clusterClient) event(format string, a ...any) {
	c.mu.Lock()
	c.events = append(c.events, fmt.Sprintf(format, a...))
	c.mu.Unlock()
}

// stop closes the client and waits for its reader.
func (c *clusterClient) stop() {
	c.mu.Lock()
	c.stopping = true
	ws := c.ws
	c.mu.Unlock()
	ws.Close()
	<-c.done
}

// received is a copy of the deliveries so far.
func (c *clusterClient) received() []clusterDelivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// ---- what the stream holds, and what each client is owed ----

type clusterStored struct{ subj, data string }

// readClusterStream reads every message of the stream, one by one from its
// leader ($JS.API.STREAM.MSG.GET: not a direct get, which any replica may
// answer): the test's oracle of what was stored, at which sequence.
func readClusterStream(t *testing.T, nc *nats.Conn, js jetstream.JetStream, name string) map[uint64]clusterStored {
	t.Helper()
	info, err := clusterStreamInfo(js, name, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]clusterStored{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		req, _ := json.Marshal(map[string]uint64{"seq": seq})
		var resp struct {
			Error *struct {
				Code        int    `json:"code"`
				Description string `json:"description"`
			} `json:"error"`
			Message struct {
				Subject string `json:"subject"`
				Data    []byte `json:"data"`
			} `json:"message"`
		}
		err := clusterPoll(10*time.Second, func() error {
			m, err := nc.Request("$JS.API.STREAM.MSG.GET."+name, req, time.Second)
			if err != nil {
				return err
			}
			resp.Error = nil
			return json.Unmarshal(m.Data, &resp)
		})
		switch {
		case err != nil:
			t.Fatalf("reading message %d of the stream: %v", seq, err)
		case resp.Error != nil && resp.Error.Code == 404:
			continue // deleted
		case resp.Error != nil:
			t.Fatalf("reading message %d of the stream: %s", seq, resp.Error.Description)
		}
		out[seq] = clusterStored{subj: resp.Message.Subject, data: string(resp.Message.Data)}
	}
	if uint64(len(out)) != info.State.Msgs {
		t.Fatalf("read %d messages from the stream, it holds %d", len(out), info.State.Msgs)
	}
	return out
}

// clusterOwed is what a client of user (welcomed at pos) must receive: every
// stored message of its user and every broadcast after pos.
func clusterOwed(stored map[uint64]clusterStored, userSubj string, pos uint64) map[uint64]bool {
	o := map[uint64]bool{}
	for seq, m := range stored {
		if seq > pos && (m.subj == userSubj || m.subj == "wsfleet.broadcast") {
			o[seq] = true
		}
	}
	return o
}

// clusterMissing lists the owed ids not among got, ascending.
func clusterMissing(o map[uint64]bool, got []clusterDelivery) []uint64 {
	have := map[uint64]bool{}
	for _, d := range got {
		have[d.seq] = true
	}
	var out []uint64
	for seq := range o {
		if !have[seq] {
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out
}

// checkClusterClient reports, precisely, every way c's deliveries differ
// from what it is owed: a lost id, an id twice, an id it is not owed, data
// that is not the stored message's, ids going back on a subject within a
// connection. notes says when and how an id was published.
func checkClusterClient(t *testing.T, c *clusterClient, stored map[uint64]clusterStored, notes map[uint64]string) {
	t.Helper()
	userSubj := userSubject(t, c.user)
	o := clusterOwed(stored, userSubj, c.pos)
	got := c.received()
	c.mu.Lock()
	events := slices.Clone(c.events)
	c.mu.Unlock()
	var problems []string
	first := map[uint64]int{} // id → index in got
	type chainKey struct {
		conn  int
		bcast bool
	}
	lastOn := map[chainKey]uint64{}
	for i, d := range got {
		m, inStream := stored[d.seq]
		switch {
		case !inStream:
			problems = append(problems, fmt.Sprintf("id %d (#%d, connection %d) is not in the stream", d.seq, i, d.conn))
			continue
		case !o[d.seq]:
			problems = append(problems, fmt.Sprintf("id %d (#%d, connection %d) is not owed to it: stored on %s (position %d)", d.seq, i, d.conn, m.subj, c.pos))
		case d.data != m.data:
			problems = append(problems, fmt.Sprintf("id %d (#%d) carries %s, the stream holds %s", d.seq, i, d.data, m.data))
		}
		if j, dup := first[d.seq]; dup {
			problems = append(problems, fmt.Sprintf("id %d twice: #%d (connection %d) and #%d (connection %d)", d.seq, j, got[j].conn, i, d.conn))
		} else {
			first[d.seq] = i
		}
		k := chainKey{d.conn, m.subj == "wsfleet.broadcast"}
		if prev := lastOn[k]; d.seq <= prev {
			problems = append(problems, fmt.Sprintf("id %d (#%d) after %d on the %s subject of connection %d", d.seq, i, prev, m.subj, d.conn))
		}
		lastOn[k] = max(lastOn[k], d.seq)
	}
	lost := clusterMissing(o, got)
	if len(lost) > 0 {
		var desc []string
		for i, seq := range lost {
			if i == 30 {
				desc = append(desc, fmt.Sprintf("… %d more", len(lost)-i))
				break
			}
			desc = append(desc, fmt.Sprintf("%d (%s %s%s)", seq, stored[seq].subj, stored[seq].data, notes[seq]))
		}
		problems = append(problems, fmt.Sprintf("%d of %d ids lost: %s", len(lost), len(o), strings.Join(desc, ", ")))
	}
	if len(problems) == 0 {
		return
	}
	const most = 30
	if len(problems) > most {
		problems = append(problems[:most], fmt.Sprintf("… %d more", len(problems)-most))
	}
	// What it received around the trouble, in the order received.
	focus := slices.Clone(lost)
	for seq, i := range first {
		if _, ok := stored[seq]; !ok || !o[seq] || got[i].data != stored[seq].data {
			focus = append(focus, seq)
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i].seq <= got[i-1].seq {
			focus = append(focus, got[i].seq)
		}
	}
	lo, hi := uint64(0), uint64(1<<63)
	if len(focus) > 0 {
		lo, hi = slices.Min(focus), slices.Max(focus)
		lo -= min(lo, 30)
		hi += 30
	}
	var ids []string
	for _, d := range got {
		if d.seq >= lo && d.seq <= hi {
			ids = append(ids, fmt.Sprintf("%d/c%d", d.seq, d.conn))
		}
	}
	t.Errorf("user %s (position %d, %d connections, events %q):\n  %s\n  received (id/connection) with ids %d to %d, in order: %s",
		c.user, c.pos, c.conns+1, events, strings.Join(problems, "\n  "), lo, hi, strings.Join(ids, " "))
}

// ---- the proofs ----

// clusterRole names a server of the cluster by what it is when a case starts.
type clusterRole int

const (
	roleLeader   clusterRole = iota // the history stream's leader
	roleFollower                    // a replica that is not the leader
	roleOther                       // the remaining replica
)

// A server of a three-server cluster with an R3 history stream stops
// while messages are published at a steady pace, and starts again: each
// client still receives every message of its user and every broadcast
// after its position, exactly once, each subject's ids ascending.
func TestResumeClusterServerRestart(t *testing.T) {
	cases := []struct {
		name               string
		gateway, publisher clusterRole
		stopped            clusterRole
		pinned             bool // the gateway knows only its server
	}{
		{name: "a follower", gateway: roleFollower, publisher: roleLeader, stopped: roleOther},
		{name: "the stream leader", gateway: roleFollower, publisher: roleOther, stopped: roleLeader},
		{name: "the gateway's server, the stream leader; the gateway fails over", gateway: roleLeader, publisher: roleFollower, stopped: roleLeader},
		{name: "the gateway's server, a follower; the gateway waits for it", gateway: roleFollower, publisher: roleLeader, stopped: roleFollower, pinned: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := startJSCluster(t)
			stream := history.StreamName("wsfleet")
			// The stream first, through a server that stays up, to know
			// its leader before placing the gateway and the publisher.
			setupNC, setupJS := clusterNATS(t, c, 0)
			leader := ensureClusterStream(t, c, setupNC, setupJS)
			others := []int{(leader + 1) % 3, (leader + 2) % 3}
			at := func(r clusterRole) int {
				switch r {
				case roleLeader:
					return leader
				case roleFollower:
					return others[0]
				}
				return others[1]
			}
			gw, pubAt, stopped := at(tc.gateway), at(tc.publisher), at(tc.stopped)
			t.Logf("stream leader %s, gateway on %s (pinned %v), publisher on %s, stopping %s",
				clusterName(leader), clusterName(gw), tc.pinned, clusterName(pubAt), clusterName(stopped))
			srv := clusterGateway(t, c, gw, tc.pinned)
			pubNC, js := clusterNATS(t, c, pubAt)

			const users = 10
			var clients []*clusterClient
			subjects := []string{"wsfleet.broadcast"}
			for i := range users {
				u := fmt.Sprintf("restart%d", i)
				clients = append(clients, startClusterClient(t, srv, u))
				subjects = append(subjects, userSubject(t, u))
			}
			p := startClusterPublisher(t, js, subjects)
			p.setPhase("before the stop")
			p.waitAcked(t, 100)
			p.setPhase(clusterName(stopped) + " stopping")
			c.stop(stopped)
			p.setPhase(clusterName(stopped) + " down")
			p.waitAcked(t, 100)
			p.setPhase(clusterName(stopped) + " starting")
			c.start(t, stopped)
			c.waitStreamHealthy(t, js, stream)
			p.setPhase("after the restart")
			p.waitAcked(t, 150)
			acked := p.finish(t)
			c.log.add("test", "publisher stopped after %d messages", len(acked))

			stored := readClusterStream(t, pubNC, js, stream)
			retried := 0
			notes := map[uint64]string{}
			for _, a := range acked {
				notes[a.seq] = fmt.Sprintf("; published %s, %d retries", a.phase, a.retries)
				if m, ok := stored[a.seq]; !ok || m.subj != a.subj || m.data != a.data {
					t.Errorf("ack %d for %s %s: the stream holds %v (ok %v)", a.seq, a.subj, a.data, m, ok)
				}
				if a.retries > 0 {
					retried++
				}
			}
			if len(stored) != len(acked) {
				t.Logf("the stream holds %d messages for %d acknowledged publishes", len(stored), len(acked))
			}
			// Every client gets everything it is owed; then a moment of
			// quiet shows nothing comes twice late.
			_ = clusterPoll(15*time.Second, func() error {
				for _, cl := range clients {
					if lost := clusterMissing(clusterOwed(stored, userSubject(t, cl.user), cl.pos), cl.received()); len(lost) > 0 {
						return fmt.Errorf("%s misses %d", cl.user, len(lost))
					}
				}
				return nil
			})
			time.Sleep(300 * time.Millisecond) // an observation window for late duplicates, not a synchronisation
			var silence time.Duration          // the longest a client waited between deliveries
			for _, cl := range clients {
				checkClusterClient(t, cl, stored, notes)
				got := cl.received()
				for i := 1; i < len(got); i++ {
					silence = max(silence, got[i].at.Sub(got[i-1].at))
				}
			}
			t.Logf("%d messages (%d publishes retried), longest wait of a client between deliveries %s, gateway: gaps %v, replays %v, replayed messages %v, catch-ups of all %v, NATS reconnects %v",
				len(acked), retried, silence.Round(time.Millisecond),
				metricValue(t, srv, "wsfleet_gateway_resume_gaps_total"),
				metricValue(t, srv, "wsfleet_gateway_replays_total"),
				metricValue(t, srv, "wsfleet_gateway_replayed_messages_total"),
				metricValue(t, srv, "wsfleet_gateway_resume_catch_up_all_total"),
				srv.NATSConn().Stats().Reconnects)
		})
	}
}

// The welcome's promise across a cluster: a message published to a user
// through another server right after the user's welcome reaches it, with
// the id its ack gave, wherever the stream's leader is.
func TestResumeClusterWelcomeThenPublish(t *testing.T) {
	c := startJSCluster(t)
	const pubAt, gw = 0, 2 // n1 and n3
	nc, js := clusterNATS(t, c, pubAt)
	ensureClusterStream(t, c, nc, js)
	srv := clusterGateway(t, c, gw, true)
	stream := history.StreamName("wsfleet")
	cases := []struct {
		name   string
		leader int
	}{
		{"stream leader on the publisher's server", pubAt},
		{"stream leader on neither's server", 1},
		{"stream leader on the gateway's server", gw},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.moveStreamLeader(t, nc, js, stream, tc.leader)
			const users, parallel = 50, 5
			toks, subjs := make([]string, users), make([]string, users)
			for i := range toks {
				toks[i] = token(t, fmt.Sprintf("wtp%d-%d", ci, i))
				subjs[i] = userSubject(t, fmt.Sprintf("wtp%d-%d", ci, i))
			}
			conns := make([]*wstest.Conn, users)
			errs := make(chan error, users)
			var wg sync.WaitGroup
			for w := range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < users; i += parallel {
						ws, err := clusterWelcomeThenPublish(js, wsURL(srv), toks[i], subjs[i], fmt.Sprintf("wtp%d-%d", ci, i))
						conns[i] = ws
						if err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// Nothing more comes: no duplicate, nothing of another user.
			quiet := make(chan error, users)
			for i, ws := range conns {
				if ws == nil {
					continue
				}
				go func() {
					defer ws.Close()
					quiet <- clusterQuiet(ws, 200*time.Millisecond, fmt.Sprintf("wtp%d-%d", ci, i))
				}()
			}
			for _, ws := range conns {
				if ws == nil {
					continue
				}
				if err := <-quiet; err != nil {
					t.Error(err)
				}
			}
		})
	}
	t.Logf("gateway: gaps %v, replays %v",
		metricValue(t, srv, "wsfleet_gateway_resume_gaps_total"),
		metricValue(t, srv, "wsfleet_gateway_replays_total"))
}

// clusterWelcomeThenPublish connects user, publishes to it as soon as the welcome
// is read, and checks that the message arrives with the ack's id.
func clusterWelcomeThenPublish(js jetstream.JetStream, url, tok, subj, user string) (*wstest.Conn, error) {
	ws, w, err := clusterDial(url, tok, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %v", user, err)
	}
	data := fmt.Sprintf(`{"hello":%q}`, user)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ack, err := js.Publish(ctx, subj, []byte(data))
	cancel()
	if err != nil {
		return ws, fmt.Errorf("%s: publish: %v", user, err)
	}
	pos, _ := strconv.ParseUint(fmt.Sprint(w["position"]), 10, 64)
	if ack.Sequence <= pos {
		return ws, fmt.Errorf("%s: ack %d not after the welcome's position %d", user, ack.Sequence, pos)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var m struct {
			Type string          `json:"type"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			return ws, fmt.Errorf("%s: message %d (published after the welcome at position %v) did not arrive: %v", user, ack.Sequence, w["position"], err)
		}
		switch {
		case m.Type == protocol.TypePing:
			continue
		case m.Type != protocol.TypeMessage || m.ID != strconv.FormatUint(ack.Sequence, 10) || string(m.Data) != data:
			return ws, fmt.Errorf("%s: got %s %s %s, want message %d %s", user, m.Type, m.ID, m.Data, ack.Sequence, data)
		}
		return ws, nil
	}
}

// clusterQuiet reads for d and fails on any frame but a ping.
func clusterQuiet(ws *wstest.Conn, d time.Duration, user string) error {
	ws.SetReadDeadline(time.Now().Add(d))
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			return fmt.Errorf("%s: read: %v", user, err)
		}
		if !strings.Contains(string(b), `"type":"ping"`) {
			return fmt.Errorf("%s: unexpected frame %s", user, b)
		}
	}
}

// A client that authenticates while the history stream changes leader (a
// stepdown: the election takes tens of milliseconds) is welcomed at once:
// while no server answers the node's stream info request, the node asks
// again every half second (resumer.streamState) instead of waiting out the
// client's auth timeout.
func TestResumeClusterWelcomeDuringLeaderChange(t *testing.T) {
	c := startJSCluster(t)
	nc, js := clusterNATS(t, c, 0)
	ensureClusterStream(t, c, nc, js)
	stream := history.StreamName("wsfleet")
	srv := clusterGateway(t, c, 2, true)
	for k := range 4 {
		l := c.waitStreamHealthy(t, js, stream)
		next := (l + 1) % 3
		req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": clusterName(next)}})
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ws, _, err := clusterDial(wsURL(srv), token(t, fmt.Sprintf("election%d", k)), "")
		took := time.Since(start)
		if err != nil || took > 2*time.Second {
			t.Errorf("leader %s → %s: welcome after %s: %v", clusterName(l), clusterName(next), took, err)
		}
		if ws != nil {
			ws.Close()
		}
	}
}

// Gateways and routers starting together on a fresh cluster all create the
// history stream at once, each through its own server; every one of them
// gets the stream (an equal create racing another is answered, or, when
// its answer never comes, the stream found on the next attempt).
func TestResumeClusterConcurrentCreate(t *testing.T) {
	c := startJSCluster(t)
	cfg := clusterHistory()
	cfg.SetDefaults()
	const perServer = 3
	errs := make(chan error, 3*perServer)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		for range perServer {
			nc, _ := clusterNATS(t, c, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				t0 := time.Now()
				if _, err := history.Ensure(ctx, nc, cfg); err != nil {
					errs <- fmt.Errorf("through %s: %v after %s", nc.ConnectedServerName(), err, time.Since(t0).Round(time.Millisecond))
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
