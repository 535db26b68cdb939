// Command devfleet runs a local wsfleet for development: by default a
// gateway with an embedded NATS server and a router; with --gateways and
// --nats-servers, several gateway processes on one port and a cluster of
// NATS server processes. Each run has a fresh HS256 secret and API key; the
// processes log to files, and devfleet prints how to connect, authenticate
// and publish once the fleet is ready. Resumable delivery is on unless
// --resume=false: NATS runs with JetStream (its store in the run
// directory), the gateways and the router with --resume. `devfleet listen` is a small
// WebSocket client that authenticates and prints what arrives;
// `devfleet nats-server` is one NATS server of the fleet.
//
// It runs the gateway and router binaries that sit next to it (bin/); it is
// not a deployment tool (see helm/ for that).
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
	hist "github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/protocol"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "listen":
			os.Exit(listen(os.Args[2:]))
		case "nats-server":
			os.Exit(natsServer(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

const usage = `Usage: devfleet [flags]
       devfleet listen --url URL --token JWT [--since ID]
       devfleet nats-server --name NAME --listen ADDR [flags]

Starts a local fleet from the gateway and router binaries next to this one,
with a fresh HS256 secret and API key:

  devfleet                                 a gateway with NATS embedded, a router
  devfleet --gateways 3 --nats-servers 3   3 NATS server processes routed into
                                           a cluster, 3 gateways sharing one
                                           WebSocket port (SO_REUSEPORT), each
                                           on its own NATS server, a router

Resumable delivery is on (--resume=false turns it off): NATS runs with
JetStream, its store in --run-dir, and the gateways and the router with
--resume, so every message carries an id (its sequence in the history
stream, 3 replicas on 3 or more NATS servers, else 1) and a client that
reconnects with the last id it got receives what it missed.

The processes log to files in --run-dir; once the fleet is ready devfleet
prints a token, a listener command and a curl that publishes to it. Ctrl-C
drains the gateways (their clients get a reconnect notice, then 1012), then
stops the router and NATS; a second Ctrl-C cuts the drain short.`

type config struct {
	gwListen, gwAdmin, rtListen, rtAdmin, demo    string
	natsListen, natsClusterListen, natsHTTPListen string
	user, topics, runDir, infoFile                string
	gateways, natsServers                         int
	drainTimeout                                  time.Duration
	resume                                        bool
}

// plan is where each process of the fleet listens.
type plan struct {
	wsAddr      string   // the gateways' --listen
	gwAdmin     []string // per gateway
	natsClient  []string // per NATS server; the embedded one's without --nats-servers
	natsCluster []string // per NATS server, with more than one
	natsHTTP    []string // per NATS server
	rtListen    string
	rtAdmin     string
	demo        string // "" without the demo page
}

func parseConfig(args []string) (config, error) {
	var c config
	fs := flagenv.New("devfleet", "DEVFLEET_", usage)
	fs.Int(&c.gateways, "gateways", 1, "gateway processes; more than one share --gateway-listen with SO_REUSEPORT")
	fs.Int(&c.natsServers, "nats-servers", 0, "NATS server processes, routed into one cluster (0: NATS embedded in the gateway; with --gateways above 1, one server)")
	fs.String(&c.gwListen, "gateway-listen", "127.0.0.1:8080", "gateway WebSocket address (port 0, here and in every address: a free port)")
	fs.String(&c.gwAdmin, "gateway-admin", "127.0.0.1:8081", "admin address (/metrics, /readyz) of the first gateway; the others take the next ports")
	fs.String(&c.natsListen, "nats-listen", "127.0.0.1:4222", "NATS client address (of the first server; the others take the next ports)")
	fs.String(&c.natsClusterListen, "nats-cluster-listen", "127.0.0.1:6222", "route address of the first NATS server, the others on the next ports (--nats-servers above 1)")
	fs.String(&c.natsHTTPListen, "nats-http-listen", "127.0.0.1:8222", "monitoring address (/routez, /connz, /subsz) of the first NATS server, the others on the next ports (with --nats-servers)")
	fs.String(&c.rtListen, "router-listen", "127.0.0.1:8090", "router HTTP API address")
	fs.String(&c.rtAdmin, "router-admin", "127.0.0.1:8091", "router admin address")
	fs.String(&c.demo, "demo-listen", "127.0.0.1:8070", `address of the demo page, a page that uses the JavaScript client against this fleet ("": none)`)
	fs.String(&c.user, "user", "alice", "user to mint a token for")
	fs.String(&c.topics, "topics", "room.*", `the token's topics claim: the topic patterns it may subscribe to, separated by spaces ("": no claim)`)
	fs.Duration(&c.drainTimeout, "drain-timeout", 2*time.Second, "the gateways' --drain-timeout: how long the drain of Ctrl-C or `gateway drain` takes")
	fs.String(&c.runDir, "run-dir", "", "directory for the processes' logs and the gateways' control sockets, kept after exit (created 0700)")
	fs.ShowDefault("run-dir", "a new directory under $TMPDIR")
	fs.Bool(&c.resume, "resume", true, "resumable delivery: NATS with JetStream (its store in --run-dir), the gateways and the router with --resume; the history stream has 3 replicas with 3 or more --nats-servers, else 1 (--resume=false: no history, no JetStream on --nats-servers)")
	fs.String(&c.infoFile, "info-file", "", `once the fleet is ready, write its addresses, token, secret and API key to this file as JSON (mode 0600; "": none)`)
	if err := fs.Parse(args, nil); err != nil {
		return c, err
	}
	switch {
	case c.gateways < 1:
		return c, fmt.Errorf("--gateways %d: at least 1", c.gateways)
	case c.natsServers < 0:
		return c, fmt.Errorf("--nats-servers %d: 0 or more", c.natsServers)
	case c.drainTimeout <= 0:
		return c, fmt.Errorf("--drain-timeout %s: more than 0", c.drainTimeout)
	}
	if err := protocol.ValidateUserID(c.user); err != nil {
		return c, fmt.Errorf("--user %q: %v", c.user, err)
	}
	for _, p := range strings.Fields(c.topics) {
		if err := protocol.ValidateTopicPattern(p); err != nil {
			return c, fmt.Errorf("--topics: %v", err)
		}
	}
	if c.gateways > 1 && c.natsServers == 0 {
		c.natsServers = 1 // the gateways need a NATS server of their own
	}
	return c, nil
}

// historyReplicas is the history stream's replica count: 3 on a cluster of
// three NATS servers or more, where one server's loss keeps a quorum.
func (c config) historyReplicas() int {
	if c.natsServers >= 3 {
		return 3
	}
	return 1
}

// historyEnv is how the gateways and the router get resumable delivery:
// the shared variables, so both read the same settings from one place
// (the history stream's settings must agree: internal/history.Ensure).
func (c config) historyEnv() []string {
	if !c.resume {
		return nil
	}
	return []string{"WSFLEET_RESUME=true", "WSFLEET_HISTORY_REPLICAS=" + strconv.Itoa(c.historyReplicas())}
}

// storeDir is a JetStream directory of NATS server name, in the run
// directory: nothing of the fleet is left outside it.
func (c config) storeDir(name string) string {
	return filepath.Join(c.runDir, "jetstream", name)
}

// addresses resolves every address of the fleet, and checks that no two
// processes would listen on one.
func (c config) addresses() (plan, error) {
	var p plan
	nNATS := max(c.natsServers, 1)
	var err error
	one := func(flag, addr string) string {
		var a []string
		if err == nil {
			a, err = addrs(flag, addr, 1)
		}
		if err != nil {
			return ""
		}
		return a[0]
	}
	many := func(flag, addr string, n int) []string {
		var a []string
		if err == nil && n > 0 {
			a, err = addrs(flag, addr, n)
		}
		return a
	}
	p.wsAddr = one("gateway-listen", c.gwListen)
	p.gwAdmin = many("gateway-admin", c.gwAdmin, c.gateways)
	p.natsClient = many("nats-listen", c.natsListen, nNATS)
	if c.natsServers > 1 {
		p.natsCluster = many("nats-cluster-listen", c.natsClusterListen, c.natsServers)
	}
	p.natsHTTP = many("nats-http-listen", c.natsHTTPListen, c.natsServers)
	p.rtListen = one("router-listen", c.rtListen)
	p.rtAdmin = one("router-admin", c.rtAdmin)
	if c.demo != "" {
		p.demo = one("demo-listen", c.demo)
	}
	if err != nil {
		return p, err
	}
	used := map[string]string{}
	check := func(what string, as ...string) {
		for _, a := range as {
			if prev, dup := used[a]; dup && err == nil {
				err = fmt.Errorf("%s and %s would both listen on %s: set the address flags apart (see --help)", prev, what, a)
			}
			used[a] = what
		}
	}
	check("--gateway-listen", p.wsAddr)
	check("--gateway-admin", p.gwAdmin...)
	check("--nats-listen", p.natsClient...)
	check("--nats-cluster-listen", p.natsCluster...)
	check("--nats-http-listen", p.natsHTTP...)
	check("--router-listen", p.rtListen)
	check("--router-admin", p.rtAdmin)
	if p.demo != "" {
		check("--demo-listen", p.demo)
	}
	return p, err
}

// info is what --info-file holds, and what the instructions print.
type info struct {
	WSURL          string     `json:"ws_url"`
	User           string     `json:"user"`
	Token          string     `json:"token"`
	UserSubject    string     `json:"user_subject"`
	APIKey         string     `json:"api_key"`
	JWTHS256Secret string     `json:"jwt_hs256_secret"`
	RouterURL      string     `json:"router_url"`
	RouterAdminURL string     `json:"router_admin_url"`
	RouterPID      int        `json:"router_pid"`
	DemoURL        string     `json:"demo_url,omitempty"`
	NATSURLs       []string   `json:"nats_urls"`
	NATSEmbedded   bool       `json:"nats_embedded"`
	Resume         bool       `json:"resume"`
	History        *history   `json:"history,omitempty"` // with Resume
	RunDir         string     `json:"run_dir"`
	Gateways       []nodeInfo `json:"gateways"`
	NATSServers    []natsInfo `json:"nats_servers,omitempty"`
	PID            int        `json:"pid"`
}

// history is the history stream of a fleet with resumable delivery: the
// gateways' and router's --history-* settings (devfleet sets the replicas,
// the others are the defaults).
type history struct {
	Stream     string `json:"stream"`
	Replicas   int    `json:"replicas"`
	TTL        string `json:"ttl"`
	MaxPerUser int    `json:"max_per_user"`
}

type nodeInfo struct {
	Node          string `json:"node"`
	AdminURL      string `json:"admin_url"`
	NATSURL       string `json:"nats_url"`
	ControlSocket string `json:"control_socket"`
	Log           string `json:"log"`
	PID           int    `json:"pid"`
}

type natsInfo struct {
	Name          string `json:"name"`
	URL           string `json:"url"`
	MonitoringURL string `json:"monitoring_url"`
	StoreDir      string `json:"store_dir,omitempty"` // JetStream's, with Resume
	Log           string `json:"log"`
	PID           int    `json:"pid"`
}

func run(args []string) int {
	c, err := parseConfig(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 2
	}
	p, err := c.addresses()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 1
	}
	binDir := filepath.Dir(exe)
	if c.runDir == "" {
		c.runDir, err = os.MkdirTemp("", "devfleet-")
	} else {
		err = os.MkdirAll(c.runDir, 0o700)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet: --run-dir:", err)
		return 1
	}
	if c.runDir, err = filepath.Abs(c.runDir); err != nil {
		fmt.Fprintln(os.Stderr, "devfleet: --run-dir:", err)
		return 1
	}
	say := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format, a...) }

	// One channel for every signal, from here to the end: the first starts
	// the stop, a second cuts it short (fleet.stop), and none ever falls to
	// the default handler, which would end devfleet before its processes.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)

	secret, apiKey := randomHex(32), randomHex(24)
	in := info{
		WSURL: "ws://" + p.wsAddr + "/ws", User: c.user, APIKey: apiKey, JWTHS256Secret: secret,
		RouterURL: "http://" + p.rtListen, RouterAdminURL: "http://" + p.rtAdmin,
		NATSEmbedded: c.natsServers == 0, Resume: c.resume, RunDir: c.runDir, PID: os.Getpid(),
	}
	if c.resume {
		in.History = &history{Stream: hist.StreamName(protocol.DefaultSubjectPrefix), Replicas: c.historyReplicas(),
			TTL: shortDuration(hist.DefaultTTL), MaxPerUser: hist.DefaultMaxPerUser}
	}
	for _, a := range p.natsClient {
		in.NATSURLs = append(in.NATSURLs, "nats://"+a)
	}
	f := newFleet(c.runDir, c.natsServers+c.gateways+1)
	fail := func(err error) int {
		if errors.Is(err, errInterrupted) {
			say("\ndevfleet: interrupted\n")
		} else {
			say("\ndevfleet: %v\n", err)
		}
		f.stop(sig, c.drainTimeout, say)
		say("devfleet: logs in %s\n", c.runDir)
		return 1
	}
	say("devfleet: logs and control sockets in %s\n", c.runDir)

	if n := c.natsServers; n > 0 {
		what := "a NATS server"
		if n > 1 {
			what = fmt.Sprintf("%d NATS servers, routed into a cluster", n)
		}
		if c.resume {
			what += ", with JetStream"
		}
		say("devfleet: starting %s... ", what)
		t0 := time.Now()
		for i := range n {
			name := fmt.Sprintf("nats-%d", i+1)
			args := []string{"nats-server", "--name", name, "--listen", p.natsClient[i], "--http-listen", p.natsHTTP[i]}
			store := ""
			if c.resume {
				store = c.storeDir(name)
				args = append(args, "--store-dir", store)
			}
			if n > 1 {
				var routes []string
				for j, a := range p.natsCluster {
					if j != i {
						routes = append(routes, "nats-route://"+a)
					}
				}
				args = append(args, "--cluster-listen", p.natsCluster[i], "--routes", strings.Join(routes, ","))
			}
			np, err := f.start(name, kindNATS, exe, nil, args...)
			if err != nil {
				return fail(err)
			}
			in.NATSServers = append(in.NATSServers, natsInfo{Name: name, URL: "nats://" + p.natsClient[i],
				MonitoringURL: "http://" + p.natsHTTP[i], StoreDir: store, Log: np.log, PID: np.cmd.Process.Pid})
		}
		// Ready: taking clients, routed to every other server and, with
		// JetStream, in contact with the meta leader (/healthz answers 503
		// until then), which sees every other server as a current peer: the
		// gateways can then create the history stream with its replicas at
		// once.
		ready := func(i int) bool {
			return tcpOpen(p.natsClient[i]) && routedTo(p.natsHTTP[i]) >= n-1 &&
				httpOK("http://"+p.natsHTTP[i]+"/healthz?js-meta-only=true") &&
				(!c.resume || metaReady(p.natsHTTP[i], fmt.Sprintf("nats-%d", i+1), n))
		}
		if err := f.waitReady(f.ofKind(kindNATS), ready, sig, 30*time.Second); err != nil {
			return fail(err)
		}
		say("ready (%s)\n", time.Since(t0).Round(time.Millisecond))
	}

	if c.gateways == 1 {
		if c.natsServers == 0 {
			say("devfleet: starting the gateway, with NATS embedded on %s... ", p.natsClient[0])
		} else {
			say("devfleet: starting the gateway... ")
		}
	} else {
		say("devfleet: starting %d gateways on %s... ", c.gateways, p.wsAddr)
	}
	t0 := time.Now()
	for i := range c.gateways {
		name, node := "gateway", "dev-gateway"
		if c.gateways > 1 {
			name, node = fmt.Sprintf("gateway-%d", i+1), fmt.Sprintf("dev-gateway-%d", i+1)
		}
		sock := filepath.Join(c.runDir, name+".sock")
		args := []string{"--listen", p.wsAddr, "--admin-listen", p.gwAdmin[i], "--node-id", node,
			"--control-socket", sock, "--drain-timeout", c.drainTimeout.String(),
			"--topic-presence", "room.*", "--log-format", "console"}
		natsURL := in.NATSURLs[i%len(in.NATSURLs)]
		if c.natsServers == 0 {
			// JetStream in the run directory, not in a directory of $TMPDIR
			// that a killed gateway would leave behind.
			args = append(args, "--nats-embedded-listen", p.natsClient[0], "--nats-embedded-store-dir", c.storeDir("embedded"))
		} else {
			args = append(args, "--nats-url", natsURL)
		}
		if c.gateways > 1 {
			args = append(args, "--reuseport")
		}
		gp, err := f.start(name, kindGateway, filepath.Join(binDir, "gateway"), append([]string{"WSFLEET_GATEWAY_JWT_HS256_SECRET=" + secret}, c.historyEnv()...), args...)
		if err != nil {
			return fail(err)
		}
		in.Gateways = append(in.Gateways, nodeInfo{Node: node, AdminURL: "http://" + p.gwAdmin[i], NATSURL: natsURL,
			ControlSocket: sock, Log: gp.log, PID: gp.cmd.Process.Pid})
	}
	gwReady := func(i int) bool { return httpOK(in.Gateways[i].AdminURL + "/readyz") }
	if err := f.waitReady(f.ofKind(kindGateway), gwReady, sig, 30*time.Second); err != nil {
		return fail(err)
	}
	say("ready (%s)\n", time.Since(t0).Round(time.Millisecond))

	say("devfleet: starting the router... ")
	t0 = time.Now()
	// No per-key rate limit on a development fleet: bin/loadtest may push it.
	rtArgs := []string{"--listen", p.rtListen, "--admin-listen", p.rtAdmin, "--nats-url", strings.Join(in.NATSURLs, ","),
		"--rate-limit=-1", "--log-format", "console"}
	if c.natsServers > 0 && !c.resume {
		// devfleet's NATS servers run without JetStream.
		rtArgs = append(rtArgs, "--idempotency-store", "memory")
	}
	rp, err := f.start("router", kindRouter, filepath.Join(binDir, "router"), append([]string{"WSFLEET_ROUTER_API_KEY=" + apiKey}, c.historyEnv()...), rtArgs...)
	if err != nil {
		return fail(err)
	}
	in.RouterPID = rp.cmd.Process.Pid
	rtReady := func(int) bool { return httpOK(in.RouterAdminURL + "/readyz") }
	if err := f.waitReady(f.ofKind(kindRouter), rtReady, sig, 30*time.Second); err != nil {
		return fail(err)
	}
	say("ready (%s)\n", time.Since(t0).Round(time.Millisecond))

	tc := jwtmint.Claims{Subject: c.user, TTL: 24 * time.Hour}
	if c.topics != "" {
		tc.Extra = map[string]any{"topics": strings.Fields(c.topics)}
	}
	if in.Token, err = jwtmint.Mint("HS256", []byte(secret), tc); err != nil {
		return fail(err)
	}
	subjects, err := protocol.NewSubjects(protocol.DefaultSubjectPrefix)
	if err != nil {
		return fail(err)
	}
	if in.UserSubject, err = subjects.UserID(c.user); err != nil {
		return fail(err)
	}
	if p.demo != "" {
		ln, err := net.Listen("tcp", p.demo)
		if err != nil {
			return fail(fmt.Errorf("--demo-listen: %w", err))
		}
		defer serveDemo(ln, in, secret, strings.Fields(c.topics)).Close()
		in.DemoURL = "http://" + ln.Addr().String() + "/"
	}
	if c.infoFile != "" {
		if err := writeInfo(c.infoFile, in); err != nil {
			return fail(fmt.Errorf("--info-file: %w", err))
		}
	}
	printInstructions(os.Stdout, in, displayDir(binDir), c.drainTimeout)

	for {
		select {
		case <-sig:
			say("\n")
			f.stop(sig, c.drainTimeout, say)
			say("devfleet: stopped; logs in %s\n", c.runDir)
			return 0
		case gone := <-f.exited:
			say("devfleet: %s exited (%s); %s\n", gone.name, exitStatus(gone.err), tail(gone))
			if gone.kind == kindRouter || f.running(gone.kind) == 0 {
				say("devfleet: the fleet cannot run without it; stopping\n")
				f.stop(sig, c.drainTimeout, say)
				say("devfleet: logs in %s\n", c.runDir)
				return 1
			}
			say("devfleet: the fleet runs on without it\n")
		}
	}
}

// routedTo is how many other servers the NATS server whose monitoring
// address is addr has a route to.
func routedTo(addr string) int {
	hc := http.Client{Timeout: time.Second}
	resp, err := hc.Get("http://" + addr + "/routez")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var rz struct {
		Routes []struct {
			RemoteID string `json:"remote_id"`
		} `json:"routes"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rz) != nil {
		return -1
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true // with route pooling, several routes per server
	}
	return len(ids)
}

// metaReady reports whether the JetStream meta group of n servers has a
// leader, and, asking server name (monitoring address addr) when it is the
// leader, whether it sees the n-1 others as current peers (the followers'
// view of one another says nothing). A single server has no meta group.
func metaReady(addr, name string, n int) bool {
	if n == 1 {
		return true
	}
	get := func(addr string, v any) bool {
		hc := http.Client{Timeout: time.Second}
		resp, err := hc.Get("http://" + addr + "/jsz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
	}
	var jsz struct {
		Meta *struct {
			Leader   string `json:"leader"`
			Size     int    `json:"cluster_size"`
			Replicas []struct {
				Current bool `json:"current"`
				Offline bool `json:"offline"`
			} `json:"replicas"`
		} `json:"meta_cluster"`
	}
	if !get(addr, &jsz) || jsz.Meta == nil || jsz.Meta.Leader == "" || jsz.Meta.Size < n {
		return false
	}
	if jsz.Meta.Leader != name {
		return true // the check on the leader decides
	}
	if len(jsz.Meta.Replicas) < n-1 {
		return false
	}
	for _, r := range jsz.Meta.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// writeInfo writes in to path as JSON, readable by this user only, and
// atomically: a script that polls for the file reads it whole.
func writeInfo(path string, in info) error {
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// displayDir is dir as the instructions show it: relative to the working
// directory when it is under it (bin), else absolute.
func displayDir(dir string) string {
	wd, err := os.Getwd()
	if err != nil {
		return dir
	}
	rel, err := filepath.Rel(wd, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return dir
	}
	return rel
}

func printInstructions(w io.Writer, in info, bin string, drain time.Duration) {
	multi := len(in.Gateways) > 1
	var metrics []string
	for _, g := range in.Gateways {
		metrics = append(metrics, g.AdminURL+"/metrics")
	}
	pr := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	pr("\n")
	switch {
	case multi:
		pr("wsfleet is running: %d gateways sharing one port, %s and a router.\n\n", len(in.Gateways), natsWhat(len(in.NATSServers)))
	case in.NATSEmbedded:
		pr("wsfleet is running: a gateway, with NATS embedded in it, and a router.\n\n")
	default:
		pr("wsfleet is running: a gateway, %s and a router.\n\n", natsWhat(len(in.NATSServers)))
	}
	ws := in.WSURL
	if multi {
		ws += "  (SO_REUSEPORT: the kernel spreads connections over the gateways)"
	}
	if in.DemoURL != "" {
		pr("  Demo page         %s  (open it in a browser)\n", in.DemoURL)
	}
	pr("  WebSocket URL     %s\n", ws)
	pr("  Token for %-7s %s\n", in.User, in.Token)
	pr("  API key           %s\n", in.APIKey)
	pr("  Router API        %s  (docs/router.md)\n", in.RouterURL)
	pr("  NATS              %s\n", strings.Join(in.NATSURLs, ","))
	if h := in.History; h != nil {
		replicas := strconv.Itoa(h.Replicas) + " replica"
		if h.Replicas != 1 {
			replicas += "s"
		}
		pr("  History           %s (JetStream): %d messages per user for %s, %s\n", h.Stream, h.MaxPerUser, h.TTL, replicas)
	}
	if !multi {
		pr("  Gateway metrics   %s\n", metrics[0])
	}
	pr("  Logs              %s/\n", in.RunDir)
	if multi || len(in.NATSServers) > 0 {
		pr("\n  %-15s %-32s %-23s %s\n", "node", "metrics", "NATS server", "control socket")
		for _, g := range in.Gateways {
			pr("  %-15s %-32s %-23s %s\n", g.Node, g.AdminURL+"/metrics", g.NATSURL, g.ControlSocket)
		}
		for _, n := range in.NATSServers {
			pr("  %-15s %s\n", n.Name, n.MonitoringURL+"/routez")
		}
	}
	userPath := url.PathEscape(in.User)
	example, _ := protocol.EncodeUserToken("bob.smith")
	pr(`
1. Connect as %[1]s; it prints every frame (the first it sends is the auth frame):

  %[2]s/devfleet listen --url %[3]s --token %[4]s

2. Publish to %[1]s from another terminal, through the router:

  curl -sS -X POST %[5]s/v1/users/%[6]s/messages \
    -H 'Authorization: Bearer %[7]s' -H 'Content-Type: application/json' \
    -d '{"text":"hello from curl"}'

   A service on NATS publishes the JSON data to %[8]s instead: the
   subject ends with the user id in a subject-safe encoding (protocol.EncodeUserToken:
   bytes other than A-Z a-z 0-9 - become _ and two hex digits: bob.smith is %[11]s).

3. A chat room: the token's topics claim allows room.* (devfleet --topics). Listen
   in room.42 from two terminals, then publish to the room:

  %[2]s/devfleet listen --url %[3]s --token %[4]s --topic room.42

  curl -sS -X POST %[5]s/v1/topics/room.42/messages \
    -H 'Authorization: Bearer %[7]s' -H 'Content-Type: application/json' \
    -d '{"text":"hello, room"}'

   Every connection subscribed to room.42 gets it, on any node; a service on NATS
   publishes to wsfleet.topic.room.42. Who is in the room:

  curl -sS %[5]s/v1/topics/room.42/presence -H 'Authorization: Bearer %[7]s'


4. Load test it (bin/loadtest mints its own tokens with the fleet's secret):

  %[2]s/loadtest deliver --url %[3]s --router-url %[5]s \
    --api-key %[7]s --jwt-hs256-secret %[9]s \
    --conns 1000 --msg-rate 200 --duration 10s --metrics-url %[10]s
`, in.User, bin, in.WSURL, in.Token, in.RouterURL, userPath, in.APIKey, in.UserSubject, in.JWTHS256Secret, strings.Join(metrics, ","), example)
	if multi {
		pr(`
5. See on which nodes %[1]s is connected (presence, kept by the router from every node):

  curl -sS %[2]s/v1/users/%[3]s/presence -H 'Authorization: Bearer %[4]s'

6. Drain a node: its clients get a reconnect notice and move to the other nodes
   (devfleet listen follows and says where to); the node stays up, empty, until Ctrl-C:

  %[5]s/gateway drain --control-socket %[6]s
`, in.User, in.RouterURL, userPath, in.APIKey, bin, in.Gateways[0].ControlSocket)
	}
	pr(`
Any WebSocket client works: connect to the URL and send {"type":"auth","token":"<token>"}.
`)
	if in.Resume {
		pr(`Messages carry ids; reconnecting with {"type":"auth","token":"<token>","since":"<last id>"}
delivers what was missed first (devfleet listen --since <last id>).
`)
	}
	pr(`Ctrl-C drains %s over %s (clients get a reconnect notice, then 1012) and stops the fleet.
`, plural(len(in.Gateways), "gateway"), drain)
}

func natsWhat(n int) string {
	if n == 1 {
		return "a NATS server"
	}
	return "a cluster of " + strconv.Itoa(n) + " NATS servers"
}

func plural(n int, what string) string {
	if n == 1 {
		return "the " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// shortDuration is d without the zero units Duration.String ends with:
// 24h, not 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
