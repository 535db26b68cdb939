package chartcheck

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
)

// The gateway and router binaries start with the environment the chart
// gives their pods (only the listen addresses, the NATS servers and the
// JWKS locations are swapped for local ones), answer the probes on the
// paths and ports the chart names, and deliver a message published through
// the router to a client authenticated with the chart's keys. NATS servers
// in this process stand in for the release's (standInNATS): the bundled
// cluster's, each server with the rendered nats.conf, so the history stream
// the binaries create with resume must fit its servers and JetStream
// limits. With resume the message's id is its stream sequence, the stream
// has the release's settings, and a client reconnecting with "since" gets
// the message again.
func TestBinariesRunRenderedConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binaries")
	}
	b := getBinaries(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks := jwksOf(&key.PublicKey)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			dir := t.TempDir()
			jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(jwks)
			}))
			defer jwksSrv.Close()

			// Secrets the chart does not render (existingSecret) hold test keys.
			external := map[string]string{}
			secretFor := func(name, key string) string {
				if v, ok := external[name+"/"+key]; ok {
					return v
				}
				v := "smoke-" + name + "-" + key + "-0123456789abcdefghijklmnopqrstuvwxyz"
				external[name+"/"+key] = v
				return v
			}
			natsURLs, natsSrvs := standInNATS(t, o)
			local := func(spec *corev1.PodSpec, c string, env map[string]string) (admin string) {
				adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
				pfx := "WSFLEET_" + strings.ToUpper(c) + "_" // the binary's environment namespace
				env[pfx+"LISTEN"] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
				env[pfx+"ADMIN_LISTEN"] = adminAddr
				if env[pfx+"JWT_JWKS_URL"] != "" {
					env[pfx+"JWT_JWKS_URL"] = jwksSrv.URL
					env[pfx+"JWT_JWKS_ALLOW_HTTP"] = "true" // the local server is plain http
				}
				if sock := env[pfx+"CONTROL_SOCKET"]; sock != "" {
					env[pfx+"CONTROL_SOCKET"] = standInVolumePath(t, spec, c, sock)
				}
				if p := env[pfx+"JWT_JWKS_FILE"]; p != "" {
					env[pfx+"JWT_JWKS_FILE"] = writeMounted(t, o, spec, c, p, dir, jwks)
				}
				return adminAddr
			}

			gwDep := o.deployments[name("gateway")]
			gwSpec := &gwDep.Spec.Template.Spec
			gwEnv := o.env(t, gwSpec, "gateway", name("gateway")+"-7d9c6b5f4-x2x9q", secretFor)
			gwAdmin := local(gwSpec, "gateway", gwEnv)
			if gwEnv["WSFLEET_GATEWAY_NATS_URL"] == "" {
				t.Fatal("gateway without --nats-url")
			}
			gwEnv["WSFLEET_GATEWAY_NATS_URL"] = strings.Join(natsURLs, ",")
			gw := start(t, b.path("gateway"), gwEnv)
			waitProbes(t, gw, container(gwSpec, "gateway"), gwAdmin)

			resp, err := http.Get("http://" + gwEnv["WSFLEET_GATEWAY_LISTEN"] + "/ws")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUpgradeRequired {
				t.Errorf("a plain GET on the WebSocket port got %d, want the gateway's 400 bad_handshake", resp.StatusCode)
			}

			rtDep := o.deployments[name("router")]
			rtSpec := &rtDep.Spec.Template.Spec
			rtEnv := o.env(t, rtSpec, "router", name("router")+"-5f7d8c9b6-q8w7e", secretFor)
			rtAdmin := local(rtSpec, "router", rtEnv)
			if rtEnv["WSFLEET_ROUTER_NATS_URL"] == "" {
				t.Fatal("router without --nats-url")
			}
			rtEnv["WSFLEET_ROUTER_NATS_URL"] = strings.Join(natsURLs, ",")
			rt := start(t, b.path("router"), rtEnv)
			waitProbes(t, rt, container(rtSpec, "router"), rtAdmin)

			// A token the gateway accepts: HS256 from the chart's secret, or
			// RS256 with the key behind the JWKS.
			var token string
			if gwEnv["WSFLEET_GATEWAY_JWT_HS256_SECRET"] != "" {
				cmd := exec.Command(b.path("gateway"), "token", "--sub", "alice", "--ttl", "5m")
				cmd.Env = envList(gwEnv)
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("gateway token: %v", err)
				}
				token = strings.TrimSpace(string(out))
			} else {
				token = signRS256(t, key, gwEnv["WSFLEET_GATEWAY_JWT_ISSUER"], gwEnv["WSFLEET_GATEWAY_JWT_AUDIENCE"], "alice")
			}
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+gwEnv["WSFLEET_GATEWAY_LISTEN"]+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteJSON(map[string]string{"type": "auth", "token": token}); err != nil {
				t.Fatal(err)
			}
			var welcome map[string]any
			if err := ws.ReadJSON(&welcome); err != nil || welcome["type"] != "welcome" || welcome["node"] != gwEnv["WSFLEET_GATEWAY_NODE_ID"] {
				t.Fatalf("welcome: %v %v (gateway output:\n%s)", welcome, err, gw.out.String())
			}
			// Without resume the welcome covers the gateway's own NATS
			// server; the message enters the cluster through the router's.
			// A subscription spreads over the routes within moments, and a
			// message published on a server it has not reached yet is not
			// delivered (at most once), so wait for every server to know
			// the node's interest. With resume the welcome's position
			// covers the whole cluster: no wait.
			if gwEnv["WSFLEET_RESUME"] != "true" {
				waitInterest(t, natsSrvs, fmt.Sprint(o.value("subjectPrefix"))+".user.alice")
			}
			apiKey := strings.Split(rtEnv["WSFLEET_ROUTER_API_KEY"], ",")[0]
			// A 503 says "retry later" (a new stream's interest may not have
			// reached the router's server yet): a service retries it, for
			// a bounded time; any other answer is final.
			var body []byte
			for until := time.Now().Add(15 * time.Second); ; {
				req, _ := http.NewRequest("POST", "http://"+rtEnv["WSFLEET_ROUTER_LISTEN"]+"/v1/users/alice/messages", strings.NewReader(`{"text":"through the chart's config"}`))
				req.Header.Set("Authorization", "Bearer "+apiKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err = http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(until) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("router answered %d %s", resp.StatusCode, body)
			}
			type message struct {
				Type string          `json:"type"`
				ID   string          `json:"id"`
				Data json.RawMessage `json:"data"`
			}
			var msg message
			if err := ws.ReadJSON(&msg); err != nil || msg.Type != "message" || !bytes.Contains(msg.Data, []byte("through the chart's config")) {
				t.Fatalf("delivery: %+v %v\nstreams: %s\ngateway output:\n%s\nrouter output:\n%s", msg, err, streamStates(natsSrvs), gw.out.String(), rt.out.String())
			}
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			if gwEnv["WSFLEET_RESUME"] == "true" {
				if !isSeq(msg.ID) {
					t.Fatalf("resume is on, and the message's id %q is not a stream sequence (gateway output:\n%s)", msg.ID, gw.out.String())
				}
				checkHistoryStream(t, o, natsSrvs, gwEnv)
				// A client reconnecting with the id before it gets the
				// message again, from history.
				seq, _ := strconv.ParseUint(msg.ID, 10, 64)
				ws2, _, err := websocket.DefaultDialer.Dial("ws://"+gwEnv["WSFLEET_GATEWAY_LISTEN"]+"/ws", nil)
				if err != nil {
					t.Fatal(err)
				}
				_ = ws2.SetReadDeadline(time.Now().Add(10 * time.Second))
				if err := ws2.WriteJSON(map[string]string{"type": "auth", "token": token, "since": strconv.FormatUint(seq-1, 10)}); err != nil {
					t.Fatal(err)
				}
				var again struct {
					Type      string `json:"type"`
					Recovered *bool  `json:"recovered"`
				}
				var replayed message
				if err := ws2.ReadJSON(&again); err != nil || again.Type != "welcome" || again.Recovered == nil || !*again.Recovered {
					t.Errorf("welcome after \"since\":\"%d\": %+v %v, want recovered", seq-1, again, err)
				} else if err := ws2.ReadJSON(&replayed); err != nil || replayed.Type != "message" || replayed.ID != msg.ID || !bytes.Equal(replayed.Data, msg.Data) {
					t.Errorf("after \"since\":\"%d\": %+v %v, want message %s again", seq-1, replayed, err, msg.ID)
				}
				_ = ws2.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				ws2.Close()
			} else if isSeq(msg.ID) {
				t.Errorf("resume is off, and the message's id %q is a stream sequence", msg.ID)
			}

			// The helm test hook, as its pod runs it, for 2s.
			if pod, c := testPod(t, o); pod != nil && b.flags["loadtest"] != nil {
				args := append([]string(nil), c.Args...)
				for i := 1; i < len(args); i++ {
					switch args[i-1] {
					case "--url": // the chart's path, on the local gateway
						u, err := url.Parse(args[i])
						if err != nil {
							t.Fatalf("the hook's --url %q: %v", args[i], err)
						}
						u.Host = gwEnv["WSFLEET_GATEWAY_LISTEN"]
						args[i] = u.String()
					case "--router-url":
						args[i] = "http://" + rtEnv["WSFLEET_ROUTER_LISTEN"]
					case "--duration":
						args[i] = "2s"
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				cmd := exec.CommandContext(ctx, b.path("loadtest"), args...)
				cmd.Env = envList(o.env(t, &pod.Spec, "loadtest", pod.Name, secretFor))
				out, err := cmd.CombinedOutput()
				cancel()
				if err != nil {
					t.Errorf("the helm test hook's loadtest %s: %v\n%s", strings.Join(args, " "), err, out)
				}
			}

			// The gateway's preStop hook, as the kubelet runs it in the
			// container (without its delay): the node drains and stays up,
			// unready, until the SIGTERM.
			pre := container(gwSpec, "gateway").Lifecycle.PreStop.Exec.Command
			preArgs := append([]string(nil), pre[1:]...)
			preArgs[2] = "0s" // --delay
			cmd := exec.Command(b.path("gateway"), preArgs...)
			cmd.Env = envList(gwEnv)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), `"drained"`) {
				t.Errorf("the gateway's preStop %q: %v\n%s", pre, err, out)
			}
			if code := httpStatus(t, "http://"+gwAdmin+"/readyz"); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz %d after the preStop hook, want 503", code)
			}

			// SIGTERM: both exit 0 well within their grace periods.
			for _, p := range []struct {
				proc  *proc
				grace *int64
			}{{rt, rtSpec.TerminationGracePeriodSeconds}, {gw, gwSpec.TerminationGracePeriodSeconds}} {
				if code := p.proc.stop(t, time.Duration(*p.grace)*time.Second); code != 0 {
					t.Errorf("%s exited %d after SIGTERM:\n%s", filepath.Base(p.proc.cmd.Path), code, p.proc.out.String())
				}
			}
		})
	}
}

// standInVolumePath is path (on a writable volume of container c) below a
// local stand-in for that volume: a new directory open to every user, as
// an emptyDir is (mode 0777), so what the binary creates below it, and
// refuses in it, is as in the pod. The directory is short-lived and its
// name short, for Unix socket paths (at most 107 bytes).
func standInVolumePath(t *testing.T, spec *corev1.PodSpec, c, path string) string {
	t.Helper()
	ctr := container(spec, c)
	if ctr == nil {
		t.Fatalf("no container %s", c)
	}
	for _, m := range ctr.VolumeMounts {
		rel, ok := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok || m.ReadOnly {
			continue
		}
		vol, err := os.MkdirTemp("", "wsfleet-vol")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(vol) })
		if err := os.Chmod(vol, 0o777); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(vol, rel)
	}
	t.Fatalf("%s: %s is on no writable volume of the container", c, path)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func envList(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + os.TempDir()}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// writeMounted writes the file a container reads at path: the rendered
// Secret's entry it mounts, or (for a Secret the chart does not render)
// the test JWKS.
func writeMounted(t *testing.T, o *objects, spec *corev1.PodSpec, c, path, dir string, fallback []byte) string {
	t.Helper()
	for _, m := range container(spec, c).VolumeMounts {
		if !strings.HasPrefix(path, m.MountPath+"/") {
			continue
		}
		rel := strings.TrimPrefix(path, m.MountPath+"/")
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			data := fallback
			if s := o.secrets[v.Secret.SecretName]; s != nil {
				for _, it := range v.Secret.Items {
					if it.Path == rel {
						data = s.Data[it.Key]
					}
				}
			}
			if s := o.secrets[v.Secret.SecretName]; s != nil && string(data) == string(fallback) {
				t.Fatalf("%s: the mounted Secret %s has no entry for %s", c, s.Name, rel)
			}
			out := filepath.Join(dir, c+"-"+filepath.Base(rel))
			if err := os.WriteFile(out, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("%s reads %s, but no Secret volume is mounted there", c, path)
	return ""
}

type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	code int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T, bin string, env map[string]string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = envList(env)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) stop(t *testing.T, within time.Duration) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.code
	case <-time.After(within):
		t.Errorf("%s still running %s after SIGTERM", filepath.Base(p.cmd.Path), within)
		_ = p.cmd.Process.Kill()
		<-p.done
		return -1
	}
}

// waitProbes polls the container's startup, liveness and readiness probes
// (their paths, on the admin address) until each answers 200, for as long
// as the startup probe gives the container (at least 20s).
func waitProbes(t *testing.T, p *proc, c *corev1.Container, admin string) {
	t.Helper()
	within := 20 * time.Second
	if sp := c.StartupProbe; sp != nil {
		within = max(within, time.Duration(sp.PeriodSeconds*sp.FailureThreshold)*time.Second)
	}
	deadline := time.Now().Add(within)
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		url := "http://" + admin + pr.HTTPGet.Path
		for {
			resp, err := http.Get(url)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-p.done:
				t.Fatalf("%s exited %d before %s answered:\n%s", filepath.Base(p.cmd.Path), p.code, url, p.out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s did not answer 200 within %s (%v):\n%s", filepath.Base(p.cmd.Path), url, within, err, p.out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwksOf(k *rsa.PublicKey) []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "smoke", "alg": "RS256", "use": "sig",
		"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes()),
	}}})
	return b
}

func signRS256(t *testing.T, key *rsa.PrivateKey, iss, aud, sub string) string {
	t.Helper()
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "smoke"})
	claims := map[string]any{"sub": sub, "iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
	if iss != "" {
		claims["iss"] = iss
	}
	if aud != "" {
		claims["aud"] = aud
	}
	body, _ := json.Marshal(claims)
	signing := b64(head) + "." + b64(body)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64(sig)
}

// httpStatus is the status of a GET to url (0 when it fails).
func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
