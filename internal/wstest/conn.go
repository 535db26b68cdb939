package wstest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Message types, the frame opcodes (as in gorilla/websocket).
const (
	TextMessage   = 1
	BinaryMessage = 2
	CloseMessage  = 8
	PingMessage   = 9
	PongMessage   = 10
)

// Close codes (RFC 6455 section 7.4.1).
const (
	CloseNormalClosure           = 1000
	CloseGoingAway               = 1001
	CloseProtocolError           = 1002
	CloseUnsupportedData         = 1003
	CloseNoStatusReceived        = 1005
	CloseAbnormalClosure         = 1006
	CloseInvalidFramePayloadData = 1007
	ClosePolicyViolation         = 1008
	CloseMessageTooBig           = 1009
	CloseMandatoryExtension      = 1010
	CloseInternalServerErr       = 1011
	CloseServiceRestart          = 1012
	CloseTryAgainLater           = 1013
	CloseTLSHandshake            = 1015
)

var (
	// ErrCloseSent is returned by writes after a close frame was sent
	// (by WriteControl or WriteMessage, or as the echo of the server's).
	ErrCloseSent = errors.New("wstest: close sent")
	// ErrProtocol is wrapped by the read error of a frame that breaks
	// RFC 6455.
	ErrProtocol = errors.New("wstest: protocol error")
)

// controlWait bounds the pong and close frames ReadMessage writes itself.
const controlWait = time.Second

// CloseError is a close frame the server sent: ReadMessage's error once it
// arrived. Code is 1005 (CloseNoStatusReceived) for a close frame without
// a payload.
type CloseError struct {
	Code int
	Text string
}

var closeNames = map[int]string{
	CloseNormalClosure:           "normal",
	CloseGoingAway:               "going away",
	CloseProtocolError:           "protocol error",
	CloseUnsupportedData:         "unsupported data",
	CloseNoStatusReceived:        "no status",
	CloseAbnormalClosure:         "abnormal closure",
	CloseInvalidFramePayloadData: "invalid payload data",
	ClosePolicyViolation:         "policy violation",
	CloseMessageTooBig:           "message too big",
	CloseMandatoryExtension:      "mandatory extension missing",
	CloseInternalServerErr:       "internal server error",
	CloseServiceRestart:          "service restart",
	CloseTryAgainLater:           "try again later",
	CloseTLSHandshake:            "TLS handshake error",
}

func (e *CloseError) Error() string {
	s := "wstest: close " + strconv.Itoa(e.Code)
	if name, ok := closeNames[e.Code]; ok {
		s += " (" + name + ")"
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// IsCloseError reports whether err is (or wraps) a *CloseError with one of
// codes, or with any code when none are given.
func IsCloseError(err error, codes ...int) bool {
	var ce *CloseError
	if !errors.As(err, &ce) {
		return false
	}
	if len(codes) == 0 {
		return true
	}
	for _, c := range codes {
		if ce.Code == c {
			return true
		}
	}
	return false
}

// FormatCloseMessage is the payload of a close frame with code and text;
// empty for CloseNoStatusReceived, which a frame never carries.
func FormatCloseMessage(code int, text string) []byte {
	if code == CloseNoStatusReceived {
		return []byte{}
	}
	p := make([]byte, 2+len(text))
	binary.BigEndian.PutUint16(p, uint16(code))
	copy(p[2:], text)
	return p
}

// Conn is a client WebSocket connection. One goroutine may call
// ReadMessage (and ReadJSON, SetReadDeadline, SetPongHandler) while others
// write; Close may be called at any time.
type Conn struct {
	nc          net.Conn
	br          *bufio.Reader
	subprotocol string

	// The reader's: a read error ends reading for good, as in gorilla.
	readErr error
	onPong  func(appData string) error

	wmu           sync.Mutex
	writeDeadline time.Time
	writeErr      error // a failed write leaves the stream unusable
	closeSent     bool
}

// Subprotocol is the subprotocol the server selected, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// Close closes the network connection at once, without a close frame (send
// one first with WriteControl for a clean close).
func (c *Conn) Close() error { return c.nc.Close() }

// SetReadDeadline sets the deadline of the reads of the connection; a read
// that times out ends reading, like any read error.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline of WriteMessage and WriteJSON.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wmu.Lock()
	c.writeDeadline = t
	c.wmu.Unlock()
	return nil
}

// SetPongHandler sets what ReadMessage calls with the payload of each pong
// frame; an error it returns becomes the read error. nil: pongs are
// dropped.
func (c *Conn) SetPongHandler(h func(appData string) error) { c.onPong = h }

// ReadMessage returns the next data message, its fragments joined, and its
// type (TextMessage or BinaryMessage). On the way it answers pings with
// pongs, hands pongs to the pong handler and, on a close frame, echoes its
// code and returns it as a *CloseError. Once it has returned an error it
// returns the same error again.
func (c *Conn) ReadMessage() (msgType int, p []byte, err error) {
	if c.readErr != nil {
		return -1, nil, c.readErr
	}
	msgType, p, err = c.readMessage()
	if err != nil {
		c.readErr = err
		return -1, nil, err
	}
	return msgType, p, nil
}

// ReadJSON reads the next message and decodes it as JSON into v.
func (c *Conn) ReadJSON(v any) error {
	_, p, err := c.ReadMessage()
	if err != nil {
		return err
	}
	return json.Unmarshal(p, v)
}

func (c *Conn) readMessage() (int, []byte, error) {
	var (
		msg   bytes.Buffer
		op    ws.OpCode
		state = ws.StateClientSide
	)
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return 0, nil, eofUnexpected(err)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return 0, nil, c.protocolError(err)
		}
		if h.OpCode.IsControl() {
			var buf [ws.MaxControlFramePayloadSize]byte
			payload := buf[:h.Length]
			if _, err := io.ReadFull(c.br, payload); err != nil {
				return 0, nil, eofUnexpected(err)
			}
			if err := c.control(h.OpCode, payload); err != nil {
				return 0, nil, err
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			op = h.OpCode
			state = state.Set(ws.StateFragmented)
		}
		// The buffer grows as the payload arrives, not by the length the
		// header declares.
		if _, err := io.CopyN(&msg, c.br, h.Length); err != nil {
			return 0, nil, eofUnexpected(err)
		}
		if h.Fin {
			return int(op), msg.Bytes(), nil
		}
	}
}

// control handles a control frame that arrived while reading.
func (c *Conn) control(op ws.OpCode, payload []byte) error {
	switch op {
	case ws.OpPing:
		// As gorilla does: the pong is best effort, its error ignored.
		c.writeFrame(ws.OpPong, payload, time.Now().Add(controlWait))
		return nil
	case ws.OpPong:
		if c.onPong != nil {
			return c.onPong(string(payload))
		}
		return nil
	default: // ws.OpClose
		ce := &CloseError{Code: CloseNoStatusReceived}
		switch len(payload) {
		case 0:
		case 1:
			return c.protocolError(errors.New("close frame payload of 1 byte"))
		default:
			ce.Code = int(binary.BigEndian.Uint16(payload))
			ce.Text = string(payload[2:])
		}
		c.writeFrame(ws.OpClose, FormatCloseMessage(ce.Code, ""), time.Now().Add(controlWait))
		return ce
	}
}

// protocolError sends close 1002 (best effort) and returns the read error
// for a frame that breaks the protocol.
func (c *Conn) protocolError(err error) error {
	c.writeFrame(ws.OpClose, FormatCloseMessage(CloseProtocolError, ""), time.Now().Add(controlWait))
	return fmt.Errorf("%w: %w", ErrProtocol, err)
}

func eofUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteMessage sends p as one frame of msgType: a whole text or binary
// message, or a control frame (as WriteControl without a deadline of its
// own).
func (c *Conn) WriteMessage(msgType int, p []byte) error {
	switch msgType {
	case TextMessage, BinaryMessage:
		c.wmu.Lock()
		deadline := c.writeDeadline
		c.wmu.Unlock()
		return c.writeFrame(ws.OpCode(msgType), p, deadline)
	case CloseMessage, PingMessage, PongMessage:
		return c.WriteControl(msgType, p, time.Time{})
	}
	return fmt.Errorf("wstest: message type %d", msgType)
}

// WriteJSON sends v encoded as JSON in a text message.
func (c *Conn) WriteJSON(v any) error {
	p, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.WriteMessage(TextMessage, p)
}

// WriteControl sends a close, ping or pong frame with payload p (at most
// 125 bytes; FormatCloseMessage builds a close payload) by deadline (zero:
// the write deadline). Nothing can be written after a close frame.
func (c *Conn) WriteControl(msgType int, p []byte, deadline time.Time) error {
	switch msgType {
	case CloseMessage, PingMessage, PongMessage:
	default:
		return fmt.Errorf("wstest: %d is not a control message type", msgType)
	}
	if len(p) > ws.MaxControlFramePayloadSize {
		return fmt.Errorf("wstest: control frame payload of %d bytes, more than %d", len(p), ws.MaxControlFramePayloadSize)
	}
	if deadline.IsZero() {
		c.wmu.Lock()
		deadline = c.writeDeadline
		c.wmu.Unlock()
	}
	return c.writeFrame(ws.OpCode(msgType), p, deadline)
}

// writeFrame sends one final frame, masked, in a single write.
func (c *Conn) writeFrame(op ws.OpCode, p []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closeSent {
		return ErrCloseSent
	}
	if c.writeErr != nil {
		return c.writeErr
	}
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	var b bytes.Buffer
	b.Grow(ws.HeaderSize(h) + len(p))
	if err := ws.WriteHeader(&b, h); err != nil {
		return err
	}
	n := b.Len()
	b.Write(p)
	ws.Cipher(b.Bytes()[n:], h.Mask, 0)
	c.nc.SetWriteDeadline(deadline)
	if _, err := c.nc.Write(b.Bytes()); err != nil {
		c.writeErr = err
		return err
	}
	if op == ws.OpClose {
		c.closeSent = true
	}
	return nil
}
