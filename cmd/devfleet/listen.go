package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
	"github.com/wsfleet/wsfleet/internal/wstest"
	"github.com/wsfleet/wsfleet/protocol"
)

const listenUsage = `Usage: devfleet listen --url URL --token JWT [--since ID] [--topic TOPIC,...]

Connects, authenticates and prints every frame the gateway sends, answering
its pings. On a reconnect notice (the node is draining) it does what the
protocol asks of a client: it opens a new connection, and closes the old
one once the new one is welcomed, printing the node it moved to; a message
that arrives on both is printed once. It ends on Ctrl-C or when the
connection closes.

With resumable delivery (the gateways' --resume) message ids are stream
sequences: --since ID asks for what came after message ID first, and a new
connection opened on a reconnect notice resumes after the last id printed.
When it ends it prints the --since to resume from (on stderr).

--topic subscribes to topics once welcomed (the token's topics claim must
allow them), on every connection it opens; with resumable delivery each
subscribe carries "since" (the topic's last id, or --since before any), so
a topic's messages missed meanwhile come first too.`

// wsEvent is a frame, or the end, of one of the listener's connections.
type wsEvent struct {
	c   *wstest.Conn
	msg []byte
	err error
}

// listen is `devfleet listen`.
func listen(args []string) int {
	var url, tok, since, topicList string
	fs := flagenv.New("devfleet listen", "DEVFLEET_", listenUsage)
	fs.String(&url, "url", "ws://127.0.0.1:8080/ws", "gateway WebSocket URL")
	fs.String(&tok, "token", "", "JWT to authenticate with; required")
	fs.String(&since, "since", "", `the id of the last message received: the gateway (with --resume) delivers what came after it first ("": none)`)
	fs.String(&topicList, "topic", "", "topics to subscribe to once welcomed, separated by commas or spaces")
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devfleet listen:", err)
		return 2
	}
	topics := strings.FieldsFunc(topicList, func(r rune) bool { return r == ',' || r == ' ' })
	for _, tp := range topics {
		if err := protocol.ValidateTopic(tp); err != nil {
			fmt.Fprintf(os.Stderr, "devfleet listen: --topic: %v\n", err)
			return 2
		}
	}
	if tok == "" {
		fmt.Fprintln(os.Stderr, "devfleet listen: --token is required")
		return 2
	}
	if _, err := protocol.ParseSince(since); err != nil {
		fmt.Fprintf(os.Stderr, "devfleet listen: --since %q: %v\n", since, err)
		return 2
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	events := make(chan wsEvent, 64)
	cur, err := open(url, tok, since, events)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet listen:", err)
		return 1
	}
	var next *wstest.Conn // the connection a reconnect notice opened, until its welcome
	moving := false       // cur is such a connection, not yet welcomed
	closing := false
	seen := newRecent(1024)
	// Each topic's resume point: the id of its last message, or where its
	// subscription started; before either, the --since given (ids ascend
	// on a connection, so the topic's messages up to it were received).
	firstSince := since
	tsince := map[string]string{}
	for {
		select {
		case <-sig:
			if closing {
				return 1 // a second Ctrl-C: no wait for the close handshake
			}
			// Close and read on until the gateway's close frame answers.
			closing = true
			cur.WriteControl(wstest.CloseMessage, wstest.FormatCloseMessage(wstest.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			if next != nil {
				next.Close()
				next = nil
			}
		case ev := <-events:
			if ev.err != nil {
				switch {
				case ev.c == next:
					fmt.Fprintln(os.Stderr, "devfleet listen: the new connection failed:", ev.err)
					next = nil
					continue
				case ev.c != cur:
					ev.c.Close() // one left for a new one: its close handshake is over
					continue
				case next != nil:
					// Closed before the new one was welcomed: wait for it.
					cur.Close()
					cur, next, moving = next, nil, true
					continue
				}
				cur.Close()
				if since != "" {
					fmt.Fprintf(os.Stderr, "devfleet listen: to resume from here: --since %s\n", since)
				}
				var ce *wstest.CloseError
				if errors.As(ev.err, &ce) {
					fmt.Printf("closed: %d %s\n", ce.Code, ce.Text)
					if ce.Code == wstest.CloseNormalClosure {
						return 0
					}
					return 1
				}
				fmt.Fprintln(os.Stderr, "devfleet listen:", ev.err)
				return 1
			}
			if ev.c != cur && ev.c != next {
				continue // left behind for a new connection
			}
			var f struct {
				Type     string `json:"type"`
				ID       string `json:"id"`
				Node     string `json:"node"`
				Position string `json:"position"`
				Topic    string `json:"topic"`
			}
			json.Unmarshal(ev.msg, &f)
			if f.Type == protocol.TypePing {
				ev.c.WriteMessage(wstest.TextMessage, protocol.PongJSON)
			}
			if f.Type == protocol.TypeMessage && f.ID != "" && !seen.add(f.ID) {
				continue // delivered on both connections during a move
			}
			if f.Type == protocol.TypeMessage && isSeq(f.ID) {
				if !isSeq(since) || seqAfter(f.ID, since) {
					// Where a new connection resumes: the highest id (a
					// topic's replay after a subscribe with since brings
					// lower ones after higher ones of the user).
					since = f.ID
				}
				if f.Topic != "" {
					tsince[f.Topic] = f.ID
				}
			}
			if f.Type == protocol.TypeSubscribed && isSeq(f.Position) {
				tsince[f.Topic] = f.Position
			}
			if f.Type == protocol.TypeWelcome && ev.c == cur && !moving && f.Position != "" {
				if _, err := protocol.ParseSince(f.Position); err == nil {
					since = f.Position // covered from there: the resume point before any message
				}
			}
			if f.Type == protocol.TypeWelcome {
				for _, tp := range topics {
					ts := tsince[tp]
					if ts == "" {
						ts = firstSince
					}
					ev.c.WriteJSON(protocol.ClientFrame{Type: protocol.TypeSubscribe, Topic: tp, Since: ts})
				}
			}
			if f.Type == protocol.TypeWelcome && (ev.c == next || moving) {
				fmt.Fprintf(os.Stderr, "devfleet listen: moved to node %s\n", f.Node)
				if ev.c == next {
					cur.WriteControl(wstest.CloseMessage, wstest.FormatCloseMessage(wstest.CloseNormalClosure, "moved"), time.Now().Add(time.Second))
					cur, next = next, nil
				}
				moving = false
			}
			fmt.Println(string(ev.msg))
			if ev.c == cur && f.Type == protocol.TypeReconnect && next == nil && !closing {
				if next, err = open(url, tok, since, events); err != nil {
					fmt.Fprintf(os.Stderr, "devfleet listen: no new connection (%v); staying on this one until it closes\n", err)
					next = nil
				}
			}
		}
	}
}

// seqAfter reports whether sequence a is after sequence b.
func seqAfter(a, b string) bool {
	x, _ := protocol.ParseSince(a)
	y, _ := protocol.ParseSince(b)
	return x > y
}

// isSeq reports whether a message id is a stream sequence (resumable
// delivery's ids: decimal digits), one a connection can resume after.
func isSeq(id string) bool {
	n, err := protocol.ParseSince(id)
	return err == nil && n > 0
}

// open connects, sends the auth frame (with since, when set) and reads the
// connection into events.
func open(url, tok, since string, events chan<- wsEvent) (*wstest.Conn, error) {
	d := wstest.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	if err := ws.WriteJSON(protocol.ClientFrame{Type: protocol.TypeAuth, Token: tok, Since: since}); err != nil {
		ws.Close()
		return nil, err
	}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			events <- wsEvent{c: ws, msg: b, err: err}
			if err != nil {
				return
			}
		}
	}()
	return ws, nil
}

// recent is a bounded set of the last message ids.
type recent struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecent(n int) *recent {
	return &recent{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

// add reports whether id is new, and remembers it.
func (r *recent) add(id string) bool {
	if _, ok := r.ids[id]; ok {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % len(r.ring)
	r.ids[id] = struct{}{}
	return true
}
