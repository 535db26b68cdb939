// Command devfleet runs a local wsfleet for development: a gateway with an
// embedded NATS server and a router, with a fresh HS256 secret and API key,
// and prints how to connect, authenticate and publish. `devfleet listen`
// is a small WebSocket client that authenticates and prints what arrives.
//
// It runs the gateway and router binaries that sit next to it (bin/); it is
// not a deployment tool (see helm/ for that).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
	"github.com/wsfleet/wsfleet/internal/wstest"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "listen" {
		os.Exit(listen(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

type settings struct {
	gwListen, gwAdmin, natsListen, rtListen, rtAdmin, user string
}

func run(args []string) int {
	var s settings
	fs := flagenv.New("devfleet", "DEVFLEET_", `Usage: devfleet [flags]
       devfleet listen --url URL --token JWT

Starts a local fleet (gateway with embedded NATS, router) with a fresh
secret and API key, prints a token and a curl command, and stops both on
Ctrl-C.`)
	fs.String(&s.gwListen, "gateway-listen", "127.0.0.1:8080", "gateway WebSocket address")
	fs.String(&s.gwAdmin, "gateway-admin", "127.0.0.1:8081", "gateway admin address")
	fs.String(&s.natsListen, "nats-listen", "127.0.0.1:4222", "embedded NATS address")
	fs.String(&s.rtListen, "router-listen", "127.0.0.1:8090", "router HTTP address")
	fs.String(&s.rtAdmin, "router-admin", "127.0.0.1:8091", "router admin address")
	fs.String(&s.user, "user", "alice", "user to mint a token for")
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 1
	}
	dir := filepath.Dir(exe)
	secret, apiKey := randomHex(32), randomHex(24)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	exited := make(chan string, 2)
	gw := start(filepath.Join(dir, "gateway"), exited, []string{
		"WSFLEET_JWT_HS256_SECRET=" + secret, "WSFLEET_DRAIN_TIMEOUT=2s",
	}, "--listen", s.gwListen, "--admin-listen", s.gwAdmin, "--nats-embedded-listen", s.natsListen,
		"--node-id", "dev-gateway", "--log-format", "console")
	if gw == nil {
		return 1
	}
	defer terminate(gw)
	if !waitReady(ctx, "http://"+s.gwAdmin+"/readyz", exited) {
		fmt.Fprintln(os.Stderr, "devfleet: the gateway did not become ready (see its log above)")
		return 1
	}
	// No per-key rate limit on a development fleet: bin/loadtest may push it.
	rt := start(filepath.Join(dir, "router"), exited, []string{"WSFLEET_API_KEY=" + apiKey, "WSFLEET_RATE_LIMIT=-1"},
		"--listen", s.rtListen, "--admin-listen", s.rtAdmin, "--nats-url", "nats://"+s.natsListen, "--log-format", "console")
	if rt == nil {
		return 1
	}
	defer terminate(rt)
	if !waitReady(ctx, "http://"+s.rtAdmin+"/readyz", exited) {
		fmt.Fprintln(os.Stderr, "devfleet: the router did not become ready (see its log above)")
		return 1
	}
	tok, err := jwtmint.Mint("HS256", []byte(secret), jwtmint.Claims{Subject: s.user, TTL: 24 * time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return 1
	}
	url := "ws://" + s.gwListen + "/ws"
	fmt.Printf(`
wsfleet is running: a gateway (embedded NATS on %[6]s) and a router.

  WebSocket URL     %[1]s
  Token for %-7[2]s %[3]s
  API key           %[4]s

1. Connect as %[2]s (prints every frame; first frame sent is the auth frame):

  bin/devfleet listen --url %[1]s --token %[3]s

2. Publish to %[2]s from another terminal:

  curl -sS -X POST http://%[5]s/v1/users/%[2]s/messages \
    -H 'Authorization: Bearer %[4]s' -H 'Content-Type: application/json' \
    -d '{"text":"hello from curl"}'

3. Load test it (bin/loadtest mints its own tokens with the fleet's secret):

  bin/loadtest deliver --url %[1]s --router-url http://%[5]s \
    --api-key %[4]s --jwt-hs256-secret %[8]s \
    --conns 1000 --msg-rate 200 --duration 10s --metrics-url http://%[7]s/metrics

Any WebSocket client works: connect to the URL and send {"type":"auth","token":"<token>"}.
Services on NATS publish to wsfleet.user.<user> (nats://%[6]s).
Router API: docs/router.md. Gateway metrics: http://%[7]s/metrics. Ctrl-C stops the fleet.

`, url, s.user, tok, apiKey, s.rtListen, s.natsListen, s.gwAdmin, secret)
	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "devfleet: stopping")
		return 0
	case name := <-exited:
		fmt.Fprintf(os.Stderr, "devfleet: %s exited\n", name)
		return 1
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// proc is a fleet binary running under devfleet.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs a fleet binary with its output on ours; its name goes to
// exited when it ends.
func start(path string, exited chan<- string, env []string, args ...string) *proc {
	if _, err := os.Stat(path); err != nil {
		fmt.Fprintf(os.Stderr, "devfleet: %s not found: run `make build` (or `make run`) first\n", path)
		return nil
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "devfleet:", err)
		return nil
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
		exited <- filepath.Base(path)
	}()
	return p
}

// terminate asks p to stop (SIGTERM: the gateway drains) and kills it if it
// has not stopped in 10 seconds.
func terminate(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func waitReady(ctx context.Context, url string, exited <-chan string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case name := <-exited:
			fmt.Fprintf(os.Stderr, "devfleet: %s exited\n", name)
			return false
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// listen connects, authenticates with the first frame, answers pings and
// prints every frame until Ctrl-C or the server closes the connection.
func listen(args []string) int {
	var url, tok string
	fs := flagenv.New("devfleet listen", "DEVFLEET_", "Usage: devfleet listen --url URL --token JWT\n\nConnects, authenticates and prints every frame the gateway sends.")
	fs.String(&url, "url", "ws://127.0.0.1:8080/ws", "gateway WebSocket URL")
	fs.String(&tok, "token", "", "JWT to authenticate with; required")
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devfleet listen:", err)
		return 2
	}
	if tok == "" {
		fmt.Fprintln(os.Stderr, "devfleet listen: --token is required")
		return 2
	}
	ws, _, err := wstest.Dial(url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet listen:", err)
		return 1
	}
	defer ws.Close()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		ws.WriteControl(wstest.CloseMessage, wstest.FormatCloseMessage(wstest.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	}()
	if err := ws.WriteJSON(map[string]string{"type": "auth", "token": tok}); err != nil {
		fmt.Fprintln(os.Stderr, "devfleet listen:", err)
		return 1
	}
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *wstest.CloseError
			if errors.As(err, &ce) {
				fmt.Printf("closed: %d %s\n", ce.Code, ce.Text)
				if ce.Code == wstest.CloseNormalClosure {
					return 0
				}
				return 1
			}
			fmt.Fprintln(os.Stderr, "devfleet listen:", err)
			return 1
		}
		fmt.Println(string(b))
		if string(b) == `{"type":"ping"}` {
			ws.WriteMessage(wstest.TextMessage, []byte(`{"type":"pong"}`))
		}
	}
}
