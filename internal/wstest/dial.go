// Package wstest is a blocking WebSocket client for tests and development
// tools, built on gobwas/ws; not for production use.
//
// Its API follows the part of gorilla/websocket's *Conn that the tests of
// this repository use, so a test reads the same with either: Dial returns
// the connection and the HTTP response (status, headers and body of a
// refused upgrade too), ReadMessage returns whole messages (fragments
// joined, pings answered, pongs given to the pong handler) and a close
// frame as a *CloseError. One goroutine may read while others write.
//
// Unlike gorilla/websocket it reports what the server sent as it is: the
// close code of a close frame is not checked, and a connection that ends
// without a close frame gives io.ErrUnexpectedEOF (or the network error),
// never a CloseError. A frame that breaks RFC 6455 (masked, reserved bits
// or opcodes, a continuation out of place, a fragmented or oversized control
// frame) is answered with close 1002 and ends reading with an error
// wrapping ErrProtocol.
package wstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// ErrBadHandshake is wrapped by the error of a Dial that the server
// answered with another status than 101 Switching Protocols.
var ErrBadHandshake = errors.New("wstest: bad handshake")

// maxErrorBody is how much of a refused upgrade's response body Dial keeps.
const maxErrorBody = 64 << 10

// Dialer holds the options of a connection.
type Dialer struct {
	// NetDial opens the TCP connection; nil: a zero net.Dialer.
	NetDial func(network, addr string) (net.Conn, error)

	// Subprotocols are offered in Sec-WebSocket-Protocol, in this order.
	Subprotocols []string

	// HandshakeTimeout bounds the dial and the upgrade; 0: no bound.
	HandshakeTimeout time.Duration
}

// DefaultDialer is the Dialer of Dial.
var DefaultDialer = &Dialer{HandshakeTimeout: 45 * time.Second}

// Dial is DefaultDialer.Dial.
func Dial(url string, h http.Header) (*Conn, *http.Response, error) {
	return DefaultDialer.Dial(url, h)
}

// Dial is DialContext with context.Background().
func (d *Dialer) Dial(url string, h http.Header) (*Conn, *http.Response, error) {
	return d.DialContext(context.Background(), url, h)
}

// DialContext connects to url (ws:// or wss://) and upgrades the
// connection, sending the headers in h (a Host header sets the request's
// host; Sec-WebSocket-Protocol adds to Subprotocols). The response is
// returned whenever one was read: with status 101 on success (its Header
// holds the server's headers, Sec-WebSocket-Accept aside), or, with an
// error wrapping ErrBadHandshake, the server's refusal with the first
// 64 KiB of its body.
func (d *Dialer) DialContext(ctx context.Context, url string, h http.Header) (*Conn, *http.Response, error) {
	resp := &http.Response{
		Status:     "101 Switching Protocols",
		StatusCode: http.StatusSwitchingProtocols,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Body:       http.NoBody,
	}
	var refused *http.Response
	gd := ws.Dialer{
		Timeout:   d.HandshakeTimeout,
		Protocols: append([]string(nil), d.Subprotocols...),
		OnHeader: func(k, v []byte) error {
			resp.Header.Add(string(k), string(v))
			return nil
		},
		OnStatusError: func(_ int, _ []byte, r io.Reader) {
			refused = readRefusal(r)
		},
	}
	if d.NetDial != nil {
		gd.NetDial = func(_ context.Context, network, addr string) (net.Conn, error) {
			return d.NetDial(network, addr)
		}
	}
	extra := http.Header{}
	for k, vs := range h {
		switch http.CanonicalHeaderKey(k) {
		case "Host":
			if len(vs) > 0 {
				gd.Host = vs[0]
			}
		case "Sec-Websocket-Protocol":
			for _, v := range vs {
				for p := range strings.SplitSeq(v, ",") {
					if p = strings.TrimSpace(p); p != "" {
						gd.Protocols = append(gd.Protocols, p)
					}
				}
			}
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return nil, nil, fmt.Errorf("wstest: header %s is the handshake's own", k)
		default:
			extra[k] = vs
		}
	}
	if len(extra) > 0 {
		gd.Header = ws.HandshakeHeaderHTTP(extra)
	}

	nc, br, hs, err := gd.Dial(ctx, url)
	if err != nil {
		var status ws.StatusError
		if errors.As(err, &status) {
			if refused == nil {
				refused = &http.Response{StatusCode: int(status), Header: http.Header{}, Body: http.NoBody}
			}
			return nil, refused, fmt.Errorf("%w: HTTP %d", ErrBadHandshake, int(status))
		}
		return nil, nil, err
	}
	resp.Header.Set("Upgrade", "websocket")
	resp.Header.Set("Connection", "Upgrade")
	if hs.Protocol != "" {
		resp.Header.Set("Sec-WebSocket-Protocol", hs.Protocol)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, ws.DefaultClientReadBufferSize)
	}
	return &Conn{nc: nc, br: br, subprotocol: hs.Protocol}, resp, nil
}

// readRefusal parses the response of a refused upgrade (status line
// onwards) and keeps the start of its body; nil when it is not HTTP.
func readRefusal(r io.Reader) *http.Response {
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}
