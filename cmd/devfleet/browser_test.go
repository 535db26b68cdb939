package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The demo page and the JavaScript client in real headless Chromium
// against a real local fleet (devfleet and its processes): what a new user
// sees after `make run`, and the client's promises — token refresh in
// band, a drain's notice followed make-before-break, a node killed under
// the page, topics, and server-sent events where WebSockets do not open —
// each with every message published counted: none lost, none twice.

// browser starts headless Chromium (Debian's chromium package) and
// returns a tab's context, closed at the end of the test.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if testing.Short() {
			t.Skip("no chromium (-short)")
		}
		t.Fatal("no chromium on PATH: install it (apt-get install chromium), or run with -short")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1200, 900),
		chromedp.Flag("disable-dev-shm-usage", true))
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("chromium: %v", err)
	}
	return ctx
}

// do runs chromedp actions or fails the test.
func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression in the page into v.
func eval[T any](t *testing.T, ctx context.Context, expr string, v *T) {
	t.Helper()
	r, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	*v = r
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(t *testing.T, ctx context.Context, within time.Duration, expr string) {
	t.Helper()
	checkFor(t, within, func() error {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			return err
		}
		if !ok {
			log, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#log li')].slice(0, 6).map(e => e.textContent).join(' | ')`))
			return fmt.Errorf("not yet: %s (page log: %s)", expr, log)
		}
		return nil
	})
}

// pageMessage is what the demo page recorded of a message (window.demo).
type pageMessage struct {
	ID    string          `json:"id"`
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

type pageWelcome struct {
	Node      string `json:"node"`
	Recovered *bool  `json:"recovered"`
	Transport string `json:"transport"`
}

func pageMessages(t *testing.T, ctx context.Context) []pageMessage {
	t.Helper()
	var ms []pageMessage
	eval(t, ctx, `window.demo.messages`, &ms)
	return ms
}

func pageWelcomes(t *testing.T, ctx context.Context) []pageWelcome {
	t.Helper()
	var ws []pageWelcome
	eval(t, ctx, `window.demo.welcomes`, &ws)
	return ws
}

// publisher publishes numbered messages to the fleet's user through the
// router until stopped, and remembers the ids the router gave them.
type publisher struct {
	mu   sync.Mutex
	ids  []string
	stop chan struct{}
	done chan struct{}
}

func startPublisher(t *testing.T, in info, every time.Duration) *publisher {
	t.Helper()
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 0; n < 2000; n++ { // bounded: a minute and more at every test's rate
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			var res struct{ ID string }
			body := fmt.Sprintf(`{"text":"n%d"}`, n)
			req, _ := http.NewRequest(http.MethodPost, in.RouterURL+"/v1/users/"+in.User+"/messages", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+in.APIKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			_ = json.NewDecoder(resp.Body).Decode(&res)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted || res.ID == "" {
				t.Errorf("publish: status %d, id %q", resp.StatusCode, res.ID)
				return
			}
			p.mu.Lock()
			p.ids = append(p.ids, res.ID)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(p.end)
	return p
}

func (p *publisher) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ids)
}

// checkExactlyOnce waits until the page has every message p published to
// the user, and fails on one it got twice.
func checkExactlyOnce(t *testing.T, ctx context.Context, p *publisher) {
	t.Helper()
	p.end()
	checkFor(t, 30*time.Second, func() error {
		got := map[string]int{}
		for _, m := range pageMessages(t, ctx) {
			if m.Topic == "" {
				got[m.ID]++
			}
		}
		missing := 0
		for _, id := range p.ids {
			if got[id] == 0 {
				missing++
			}
		}
		for id, n := range got {
			if n > 1 {
				t.Fatalf("message %s reached the page %d times", id, n)
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d published messages not on the page yet", missing, len(p.ids))
		}
		return nil
	})
	t.Logf("%d messages published, each on the page once", len(p.ids))
}

func TestBrowserDemoPage(t *testing.T) {
	ctx := browser(t)
	d := startDevfleet(t)
	in := d.info
	if in.DemoURL == "" || !strings.Contains(d.out.String(), "Demo page         "+in.DemoURL) {
		t.Fatalf("devfleet printed no demo page:\n%s", d.out)
	}
	do(t, ctx, chromedp.Navigate(in.DemoURL))
	waitJS(t, ctx, 20*time.Second, `document.getElementById('state').dataset.state === 'open'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('transport').textContent === 'websocket'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('user-presence').textContent === 'online, 1 device'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('room-presence').textContent === '1 user, 1 device'`)

	// What the instructions say: a message curl'd through the router.
	var res struct{ ID string }
	if status := call(t, in, http.MethodPost, "/v1/users/"+in.User+"/messages", `{"text":"hello from curl"}`, &res); status != http.StatusAccepted {
		t.Fatalf("publish: %d", status)
	}
	waitJS(t, ctx, 10*time.Second, `[...document.querySelectorAll('#messages li.message')].some(li => li.dataset.id === '`+res.ID+`' && li.querySelector('.text').textContent === 'hello from curl')`)

	// The page's own box, to the room.
	do(t, ctx,
		chromedp.SetValue(chromedp.CSS(`#to`), "room"),
		chromedp.SendKeys(chromedp.CSS(`#text`), "hi room"),
		chromedp.Click(chromedp.CSS(`#publish button`)))
	waitJS(t, ctx, 10*time.Second, `window.demo.messages.some(m => m.topic === 'room.demo' && m.data.text === 'hi room')`)
	waitJS(t, ctx, 5*time.Second, `document.getElementById('text').value === ''`)

	// The screenshot shows the page laid out: the state pill green where
	// the page puts it, the message list with the two messages in it.
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("DEMO_SCREENSHOT_DIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "demo.png"), shot, 0o644)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	var box struct{ X, Y, W, H float64 }
	eval(t, ctx, `(() => { const r = document.getElementById('state').getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })()`, &box)
	if c := pixel(img, int(box.X+box.W/2), int(box.Y+3)); !near(c, [3]int{0xd3, 0xf5, 0xdf}) {
		t.Errorf("state pill at (%v,%v) is %v in the screenshot, want the open state's green", box.X, box.Y, c)
	}
	var items int
	eval(t, ctx, `(() => { const r = document.querySelector('#messages li.message').getBoundingClientRect(); return r.height > 20 && r.width > 200 ? document.querySelectorAll('#messages li.message').length : 0; })()`, &items)
	if items != 2 {
		t.Errorf("%d messages laid out in the list, want 2", items)
	}
	if n := colours(img); n < 20 {
		t.Errorf("the screenshot holds %d colours: the page did not render", n)
	}
}

func pixel(img image.Image, x, y int) [3]int {
	r, g, b, _ := img.At(x, y).RGBA()
	return [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
}

func near(a, b [3]int) bool {
	for i := range a {
		if d := a[i] - b[i]; d > 6 || d < -6 {
			return false
		}
	}
	return true
}

func colours(img image.Image) int {
	seen := map[[3]int]bool{}
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y += 3 {
		for x := bd.Min.X; x < bd.Max.X; x += 3 {
			seen[pixel(img, x, y)] = true
		}
	}
	return len(seen)
}

// The page's token lives 5 s: the client refreshes it in band, with no
// reconnect. Then the page's node drains (the client follows the notice,
// make before break) and the next one is killed (the client reconnects and
// resumes): messages flow throughout and each arrives once.
func TestBrowserRefreshDrainAndKill(t *testing.T) {
	ctx := browser(t)
	d := startDevfleet(t, "--gateways", "3", "--nats-servers", "1")
	in := d.info
	do(t, ctx, chromedp.Navigate(in.DemoURL+"?token_ttl=5s"))
	waitJS(t, ctx, 20*time.Second, `window.demo.welcomes.length === 1 && document.getElementById('state').dataset.state === 'open'`)
	p := startPublisher(t, in, 50*time.Millisecond)

	// Past the first token's exp, on the same connection.
	expiresBy := time.Now().Add(7 * time.Second)
	checkFor(t, 20*time.Second, func() error {
		if time.Now().Before(expiresBy) {
			return fmt.Errorf("the first token is still valid")
		}
		return nil
	})
	if ws := pageWelcomes(t, ctx); len(ws) != 1 {
		t.Fatalf("welcomes %+v: the token refresh reconnected", ws)
	}
	var errs []map[string]any
	eval(t, ctx, `window.demo.errors`, &errs)
	if len(errs) > 0 {
		t.Fatalf("errors on the page: %v", errs)
	}

	nodeOf := func(name string) nodeInfo {
		for _, g := range in.Gateways {
			if g.Node == name {
				return g
			}
		}
		t.Fatalf("welcomed by %q, not a node of the fleet", name)
		return nodeInfo{}
	}
	first := nodeOf(pageWelcomes(t, ctx)[0].Node)
	drain := exec.Command(filepath.Join(binaries(t), "gateway"), "drain", "--control-socket", first.ControlSocket, "--delay", "0s", "--timeout", "20s")
	if out, err := drain.CombinedOutput(); err != nil {
		t.Fatalf("gateway drain: %v\n%s", err, out)
	}
	waitJS(t, ctx, 20*time.Second, `window.demo.welcomes.length === 2`)
	ws := pageWelcomes(t, ctx)
	if ws[1].Node == first.Node {
		t.Fatalf("after the drain of %s the page is on %s", first.Node, ws[1].Node)
	}
	n := p.count()
	checkFor(t, 10*time.Second, func() error {
		if p.count() < n+20 {
			return fmt.Errorf("publishing")
		}
		return nil
	})

	second := nodeOf(ws[1].Node)
	if err := syscall.Kill(second.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, `window.demo.welcomes.length === 3 && document.getElementById('state').dataset.state === 'open'`)
	ws = pageWelcomes(t, ctx)
	if ws[2].Node == first.Node || ws[2].Node == second.Node || ws[2].Recovered == nil || !*ws[2].Recovered {
		t.Fatalf("after %s was killed: welcome %+v, want the third node, recovered", second.Node, ws[2])
	}
	n = p.count()
	checkFor(t, 10*time.Second, func() error {
		if p.count() < n+20 {
			return fmt.Errorf("publishing")
		}
		return nil
	})
	checkExactlyOnce(t, ctx, p)
}

// Where WebSockets do not open (the browser's only way out is an HTTP
// proxy that refuses the tunnels WebSockets need, as many do), the client
// falls back
// to server-sent events and gets everything: the user's messages, the
// room's, and presence.
func TestBrowserFallsBackToSSE(t *testing.T) {
	proxy := upgradeDroppingProxy(t)
	ctx := browser(t, chromedp.ProxyServer("http://"+proxy), chromedp.Flag("proxy-bypass-list", "<-loopback>"))
	d := startDevfleet(t)
	in := d.info
	do(t, ctx, chromedp.Navigate(in.DemoURL))
	waitJS(t, ctx, 30*time.Second, `document.getElementById('state').dataset.state === 'open' && window.wsfleetClient.transport === 'sse'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('transport').textContent === 'sse'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('user-presence').textContent === 'online, 1 device'`)
	waitJS(t, ctx, 10*time.Second, `document.getElementById('room-presence').textContent === '1 user, 1 device'`)

	p := startPublisher(t, in, 50*time.Millisecond)
	do(t, ctx,
		chromedp.SetValue(chromedp.CSS(`#to`), "room"),
		chromedp.SendKeys(chromedp.CSS(`#text`), "over sse"),
		chromedp.Click(chromedp.CSS(`#publish button`)))
	waitJS(t, ctx, 10*time.Second, `window.demo.messages.some(m => m.topic === 'room.demo' && m.data.text === 'over sse')`)

	n := p.count()
	checkFor(t, 10*time.Second, func() error {
		if p.count() < n+10 {
			return fmt.Errorf("publishing")
		}
		return nil
	})
	checkExactlyOnce(t, ctx, p)
	if ws := pageWelcomes(t, ctx); ws[0].Transport != "sse" {
		t.Fatalf("welcomes %+v, want them over sse", ws)
	}
}

// upgradeDroppingProxy is an HTTP proxy that forwards plain requests,
// streaming their responses, and refuses CONNECT, the tunnel a browser
// opens through a proxy for a WebSocket. It returns its address.
func upgradeDroppingProxy(t *testing.T) string {
	t.Helper()
	var refused atomic.Int64
	fwd := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.Out.URL = r.In.URL; r.Out.Host = r.In.Host },
		FlushInterval: -1, // events as they come
		// The page reconnects once the fleet is gone, at the test's end.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect || strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			refused.Add(1)
			http.Error(w, "this proxy does not carry WebSockets", http.StatusForbidden)
			return
		}
		fwd.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		if refused.Load() == 0 {
			t.Error("the proxy refused no WebSocket: the page did not try one")
		}
	})
	return srv.Listener.Addr().String()
}
