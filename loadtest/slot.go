package loadtest

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/bufpool"
	"github.com/wsfleet/wsfleet/internal/engine"
	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

// Slot states.
const (
	stDown       uint8 = iota // no socket; may wait in the wheel for a reconnect
	stConnecting              // connect(2) in progress
	stUpgrading               // upgrade request sent, waiting for 101
	stAuthing                 // auth frame sent, waiting for welcome
	stLive                    // welcomed
	stClosing                 // our close frame sent, waiting for the echo
)

// inFlight reports whether a slot in state st is an attempt in flight.
func inFlight(st uint8) bool { return st >= stConnecting && st <= stAuthing }

const (
	maxFrame      = 16 << 20 // largest server frame accepted
	maxPendingOut = 1 << 20  // queued output before the connection is failed
	maxResponse   = 16 << 10 // upgrade response headers
)

// slot is one device: a connection slot of a user, across its reconnects.
// It belongs to one loop. The engine part holds the current socket (-1
// while down), its write queue and its wheel links.
type slot struct {
	engine.Conn[*slot]
	l          *loop
	idx        int32 // local index
	gidx       int32 // global index
	user       int32 // local user index
	tgt        int16
	src        int16
	gen        uint32 // bumped at every close: events of an old socket are ignored
	state      uint8
	want       bool // should be connected
	dropped    bool // dropped by a storm, not yet back
	churned    bool // closed by churn: comes back after the churn delay
	refreshing bool // a refreshed token is being checked
	closeOK    bool // the live session is ending as the run asked (a storm's drop, a token expiry without --token-refresh)
	downUnexp  bool // the last session ended unexpectedly and no new one was welcomed since
	resumed    bool // --resume: the connection's auth frame carried "since"
	moving     bool // --resume: closed on the gateway's reconnect notice; reconnects at once
	away       bool // --resume: welcomed before, down now (counted in the loop's away)

	attempts   int
	retryAfter int    // seconds, from a 503
	pubFrom    uint32 // the user's last message stamped before the session's welcome
	t0         int64
	tUpgrade   int64
	tDrop      int64
	tokenExp   int64 // unix ns of the exp of the token last sent (0: none)
	key        [24]byte

	in, frag *[]byte
	sseScan  int32 // --transport sse: the event parser's scan of in (sseParser.scan)

	msgs devTrack  // the user's messages
	bc   devTrack  // broadcasts
	rs   devResume // --resume: where the device resumes from

	// live, rooms (topics.go)
	room    int32  // the slot's topic: index in the process's topicSet.rooms
	tpState uint8  // tpNone, tpPending, tpLive
	probe   uint8  // probeNone, probeSent, probeBack
	tpFrom  uint32 // the room's last message stamped before the session's subscribe
	tpSent  int64  // when the subscribe was sent
	tp      topicTrack
}

func (s *slot) connect() {
	l := s.l
	e := l.e
	s.retryAfter = 0
	l.st.attempts.Add(1)
	fd, err := unix.Socket(l.fam, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		s.retry("socket_" + errName(err))
		return
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(l.srcs) > 0 {
		// Leave the port to connect(2), which only needs the 4-tuple to be
		// unique: each source address then has the whole ephemeral range
		// for every destination.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, l.srcs[s.src]); err != nil {
			unix.Close(fd)
			s.retry("bind_" + errName(err))
			return
		}
	}
	err = unix.Connect(fd, l.dsts[s.tgt])
	if err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		s.retry("connect_" + errName(err))
		return
	}
	s.gen++
	gen := s.gen
	s.Init(fd)
	s.state = stConnecting
	s.t0 = mono()
	l.st.connecting.Add(1)
	l.addInFlight(1)
	// The slot outlives its sockets: an event of an old socket (see the
	// engine's fd rules) is told apart by its generation.
	if err := l.p.Add(fd, engine.EventRead|engine.EventWrite|engine.EventRdHup|engine.EventEdge, func(ev engine.Event) {
		if s.gen == gen {
			s.onEvent(ev)
		}
	}); err != nil {
		_ = l.p.Del(fd) // easygo may have kept the callback (engine.Loop.Add)
		unix.Close(fd)
		s.Init(-1)
		s.state = stDown
		l.st.connecting.Add(-1)
		l.addInFlight(-1)
		s.retry("epoll_add")
		return
	}
	l.w.Schedule(s, l.now+l.ticksOf(e.plan.ConnectTimeout))
}

// retry counts a failed attempt and schedules the next one.
func (s *slot) retry(reason string) {
	l := s.l
	l.errorf(reason)
	l.st.fails.Add(1)
	s.scheduleReconnect()
}

func (s *slot) scheduleReconnect() {
	l := s.l
	if !s.want || !l.e.running.Load() || l.finishing {
		l.w.Unlink(s)
		return
	}
	p := l.e.plan
	d := backoff(l.rng, p.BackoffMin, p.BackoffMax, s.attempts)
	if s.churned {
		d = l.churnDown/2 + time.Duration(l.rng.Int64N(int64(l.churnDown)+1))
	}
	if s.moving {
		// the gateway asked it to move (a node draining): at once
		s.moving = false
		d = 0
	}
	if ra := s.retryAfter; ra > 0 {
		d = max(d, time.Duration(ra)*time.Second)
	}
	s.attempts++
	l.w.Schedule(s, l.now+l.ticksOf(d))
}

func (s *slot) onEvent(ev engine.Event) {
	if ev&engine.EventClosed != 0 {
		return
	}
	if s.state == stConnecting {
		errno, err := unix.GetsockoptInt(s.FD(), unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil && errno != 0 {
			s.fail("connect_" + errName(unix.Errno(errno)))
			return
		}
		if ev&engine.EventWrite == 0 {
			if ev&(engine.EventHup|engine.EventErr) != 0 {
				s.fail("connect_hup")
			}
			return
		}
		if _, err := unix.Getpeername(s.FD()); err != nil {
			return // not connected yet (a stale event)
		}
		s.state = stUpgrading
		s.l.st.connecting.Add(-1)
		s.sendUpgrade()
		if s.state == stDown {
			return
		}
	}
	if ev&(engine.EventRead|engine.EventRdHup|engine.EventHup|engine.EventErr) != 0 {
		s.readAll(gen0(s))
		if s.state == stDown {
			return
		}
	}
	if ev&engine.EventWrite != 0 {
		s.flush()
	}
}

func (s *slot) sendUpgrade() {
	l := s.l
	if l.e.sse {
		s.sendSSERequest()
		return
	}
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], l.rng.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], l.rng.Uint64())
	base64.StdEncoding.Encode(s.key[:], raw[:])
	b := append(l.fbuf[:0], l.reqs[s.tgt]...)
	b = append(b, s.key[:]...)
	b = append(b, "\r\n\r\n"...)
	l.fbuf = b
	s.write(b)
}

var wsGUID = []byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")

// readBudget bounds the reads of one event: past it the rest is read
// after the loop's other ready sockets.
const readBudget = 16

// gen0 is the slot's socket generation now.
func gen0(s *slot) uint32 { return s.gen }

// readAll reads the socket until EAGAIN (engine.Conn.Read), continuing
// later if the budget runs out while the same socket (gen) is open.
func (s *slot) readAll(gen uint32) {
	l := s.l
	r, err := s.Read(l.p.ReadBuf(), readBudget, true, s)
	switch r {
	case engine.ReadBudget:
		l.p.Post(func() {
			if s.gen == gen && s.state != stDown {
				s.readAll(gen)
			}
		})
	case engine.ReadEOF:
		s.eof("eof")
	case engine.ReadError:
		s.eof("read_" + errName(err))
	}
}

// OnData parses bytes read from the socket (engine.Reader).
func (s *slot) OnData(p []byte) bool {
	s.feed(p)
	return s.state != stDown
}

// eof handles the end of the stream without a close frame (or, for an
// event stream, a close event) from the server.
func (s *slot) eof(reason string) {
	if s.l.e.sse && s.sseEOF() {
		return // an HTTP error answer, its body ended by the close
	}
	switch s.state {
	case stUpgrading, stAuthing:
		s.fail(reason + "_before_welcome")
	case stClosing:
		s.finalClose("")
	default:
		s.l.closeCode(1006)
		s.finalClose("")
	}
}

// feed parses newly read bytes, after any incomplete input kept from before.
func (s *slot) feed(data []byte) {
	b := data
	if s.in != nil {
		s.in = bufpool.Grow(s.in, len(data))
		*s.in = append(*s.in, data...)
		b = *s.in
	}
	n := s.parse(b)
	if s.state == stDown {
		return
	}
	rest := b[n:]
	switch {
	case len(rest) == 0:
		if s.in != nil {
			bufpool.Put(s.in)
			s.in = nil
		}
	case s.in != nil:
		m := copy(*s.in, rest)
		*s.in = (*s.in)[:m]
	default:
		s.in = bufpool.Get(len(rest))
		*s.in = append(*s.in, rest...)
	}
}

// parse consumes what it can of b and returns the number of bytes consumed.
func (s *slot) parse(b []byte) int {
	if s.l.e.sse {
		return s.parseSSE(b)
	}
	off := 0
	if s.state == stUpgrading {
		i := bytes.Index(b, []byte("\r\n\r\n"))
		if i < 0 {
			if len(b) > maxResponse {
				s.fail("upgrade_response_too_large")
			}
			return 0
		}
		if !s.upgraded(b[:i+4], b[i+4:]) {
			return len(b)
		}
		off = i + 4
	}
	for off < len(b) {
		h, n, err := wsframe.Parse(b[off:])
		if err != nil {
			s.protocolError("bad_frame_header")
			return len(b)
		}
		if n == 0 {
			break
		}
		if h.Length > maxFrame {
			s.protocolError("frame_too_large")
			return len(b)
		}
		end := off + n + int(h.Length)
		if end > len(b) {
			break
		}
		p := b[off+n : end]
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		off = end
		s.frame(h, p)
		if s.state == stDown {
			return len(b)
		}
	}
	return off
}

// upgraded checks the upgrade response; on 101 it sends the auth frame.
func (s *slot) upgraded(head, rest []byte) bool {
	l := s.l
	status := 0
	if len(head) > 12 && bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		status, _ = strconv.Atoi(string(head[9:12]))
	}
	if status != 101 {
		reason := "http_" + strconv.Itoa(status)
		// The gateway's refusal body: {"code":"node_full","reason":"…"}.
		if i := bytes.Index(rest, []byte(`"code":"`)); i >= 0 {
			if j := bytes.IndexByte(rest[i+8:], '"'); j > 0 && j < 64 {
				reason += "_" + string(rest[i+8:i+8+j])
			}
		}
		if v := header(head, "retry-after"); v != "" {
			s.retryAfter, _ = strconv.Atoi(v)
		}
		s.fail(reason)
		return false
	}
	h := sha1.New()
	h.Write(s.key[:])
	h.Write(wsGUID)
	var want [28]byte
	base64.StdEncoding.Encode(want[:], h.Sum(nil))
	if header(head, "sec-websocket-accept") != string(want[:]) {
		s.fail("bad_accept")
		return false
	}
	now := mono()
	s.tUpgrade = now
	recordMicros(l.hUpgrade, now-s.t0)
	s.state = stAuthing
	s.sendAuth(false)
	return s.state != stDown
}

// header returns the value of a response header (lower-case name).
func header(head []byte, name string) string {
	for _, line := range bytes.Split(head, []byte("\r\n")) {
		i := bytes.IndexByte(line, ':')
		if i == len(name) && string(bytes.ToLower(line[:i])) == name {
			return string(bytes.TrimSpace(line[i+1:]))
		}
	}
	return ""
}

func (s *slot) sendAuth(force bool) {
	e := s.l.e
	tok, exp, err := e.tokens.get(int(s.user), e.names[s.user], force)
	if err != nil {
		s.fail("token_mint")
		return
	}
	s.tokenExp = exp
	b := append(make([]byte, 0, len(tok)+64), `{"type":"auth","token":"`...)
	b = append(b, tok...)
	b = append(b, '"')
	if !force {
		// a connection's first auth frame (a refresh may not carry since)
		s.resumed = false
		if since, ok := s.rs.since(); ok && e.resume {
			s.resumed = true
			b = append(b, `,"since":"`...)
			b = strconv.AppendUint(b, since, 10)
			b = append(b, '"')
		}
	}
	b = append(b, '}')
	s.sendFrame(ws.OpText, b)
}

// refresh sends a fresh auth frame before the token expires.
func (s *slot) refresh() {
	s.refreshing = true
	s.sendAuth(true)
}

// scheduleRefresh sets the refresh for when a fifth of the token's
// lifetime is left.
func (s *slot) scheduleRefresh() {
	a := s.l.e.plan.Auth
	if !a.Refresh || a.TTL <= 0 || s.tokenExp == 0 {
		s.l.w.Unlink(s)
		return
	}
	d := time.Duration(s.tokenExp-time.Now().UnixNano()) - a.TTL/5
	s.l.w.Schedule(s, s.l.now+s.l.ticksOf(max(d, 0)))
}

// frame handles one complete frame.
func (s *slot) frame(h ws.Header, p []byte) {
	switch h.OpCode {
	case ws.OpText, ws.OpBinary, ws.OpContinuation:
		if h.OpCode != ws.OpContinuation && h.Fin && s.frag == nil {
			s.message(p)
			return
		}
		if h.OpCode != ws.OpContinuation {
			if s.frag != nil {
				bufpool.Put(s.frag)
			}
			s.frag = bufpool.Get(len(p))
		} else if s.frag == nil {
			s.protocolError("unexpected_continuation")
			return
		}
		if len(*s.frag)+len(p) > maxFrame {
			s.protocolError("message_too_large")
			return
		}
		s.frag = bufpool.Grow(s.frag, len(p))
		*s.frag = append(*s.frag, p...)
		if h.Fin {
			f := s.frag
			s.frag = nil
			s.message(*f)
			bufpool.Put(f)
		}
	case ws.OpPing:
		s.sendFrame(ws.OpPong, p)
	case ws.OpPong:
	case ws.OpClose:
		code := 1005
		if len(p) >= 2 {
			code = int(binary.BigEndian.Uint16(p))
		}
		s.serverClosed(code)
	default:
		s.protocolError("bad_opcode")
	}
}

// serverClosed handles the gateway's close with code: a close frame
// (echoed), or an event stream's close event.
func (s *slot) serverClosed(code int) {
	if s.state == stClosing {
		s.finalClose("")
		return
	}
	s.l.closeCode(code)
	// A token that expires as --token-ttl asked (no --token-refresh)
	// is the run's doing, not the gateway failing the device.
	s.closeOK = code == int(protocol.CloseUnauthorized) && !s.l.e.plan.Auth.Refresh
	wasAuthing := s.state == stAuthing
	if !s.l.e.sse {
		var echo [2]byte
		binary.BigEndian.PutUint16(echo[:], uint16(min(code, 4999)))
		if code == 1005 {
			s.sendFrame(ws.OpClose, nil)
		} else {
			s.sendFrame(ws.OpClose, echo[:])
		}
	}
	if wasAuthing {
		s.fail("closed_" + strconv.Itoa(code) + "_before_welcome")
		return
	}
	s.finalClose("")
}

var (
	typePrefix   = []byte(`{"type":"`)
	dataKey      = []byte(`"data":`)
	topicMsgHead = []byte(`{"type":"message","topic":"`)
)

// message handles one text message from the gateway.
func (s *slot) message(p []byte) {
	l := s.l
	if !bytes.HasPrefix(p, typePrefix) {
		l.errorf("frame_not_protocol")
		return
	}
	q := p[len(typePrefix):]
	i := bytes.IndexByte(q, '"')
	if i < 0 {
		l.errorf("frame_not_protocol")
		return
	}
	switch string(q[:i]) {
	case protocol.TypeMessage:
		if l.finishing {
			return // after the accounting cut
		}
		if s.state != stLive {
			l.errorf("message_before_welcome")
			return
		}
		s.delivery(p)
	case protocol.TypePing:
		if !l.e.sse { // an event stream is never answered
			s.sendFrame(ws.OpText, protocol.PongJSON)
		}
	case sseTypeClose:
		if l.e.sse {
			s.sseClosed(p)
		}
	case protocol.TypeWelcome:
		if s.state == stAuthing {
			s.welcomed(p)
		}
	case protocol.TypeReconnect:
		// A node draining (or cut off from NATS) asks its clients to move.
		// With --resume the device closes and reconnects at once (to the
		// next --url when there are several), resuming from its last id;
		// without, it stays until the node closes it (1012 or 1013: a close
		// by the gateway).
		if s.state == stLive && l.e.resume {
			l.res.Moved++
			s.moving = true
			if n := len(l.dsts); n > 1 {
				// to another node: the next --url
				s.tgt = int16((int(s.tgt) + 1) % n)
			}
			s.closeGracefully(1000)
		}
	case protocol.TypeRefreshed:
		l.st.refreshed.Add(1)
		s.refreshing = false
		s.scheduleRefresh()
	case protocol.TypeSubscribed:
		s.subscribed(p)
	case protocol.TypeUnsubscribed:
		s.unsubscribed(p)
	case protocol.TypeError:
		code := ""
		if j := bytes.Index(p, []byte(`"code":"`)); j >= 0 {
			if k := bytes.IndexByte(p[j+8:], '"'); k > 0 && k < 64 {
				code = string(p[j+8 : j+8+k])
			}
		}
		if tp := l.e.tp; tp != nil && s.state == stLive && frameTopicIs(p, tp.rooms[s.room].topic) {
			s.topicError(code)
			return
		}
		if code != "" {
			code = "_" + code
		}
		l.errorf("error_frame" + code)
	}
}

func (s *slot) welcomed(p []byte) {
	l := s.l
	e := l.e
	first := s.msgs.firstW == 0
	w, from := e.sessionOpened(s.user, first)
	s.pubFrom = from
	l.addInFlight(-1)
	s.state = stLive
	s.attempts = 0
	recordMicros(l.hWelcome, w-s.t0)
	s.msgs.welcome(w)
	s.bc.welcome(w)
	if e.resume {
		s.resumeWelcome(p, w)
	}
	l.st.live.Add(1)
	l.st.welcomes.Add(1)
	if first {
		if e.rampWelcomed.Add(1) == int64(len(e.slots)) {
			e.rampDone.CompareAndSwap(0, w)
		}
	}
	if s.dropped {
		s.dropped = false
		l.st.recovered.Add(1)
		recordMicros(l.hReconnect, w-s.tDrop)
		for {
			old := e.lastRecovery.Load()
			if w <= old || e.lastRecovery.CompareAndSwap(old, w) {
				break
			}
		}
	}
	s.churned = false
	s.downUnexp = false
	s.moving = false
	s.scheduleRefresh()
	if e.tp != nil && s.state == stLive {
		s.subscribe()
	}
}

// resumeWelcome reads a welcome's position and, after a since, its
// recovered (--resume).
func (s *slot) resumeWelcome(p []byte, w int64) {
	l := s.l
	if s.away {
		s.away = false
		l.st.away.Add(-1)
	}
	pos, hasPos, recovered, hasRec := welcomePosition(p)
	switch {
	case !hasPos:
		l.res.NoPosition++
	case s.resumed:
		l.res.Reconnects++
		if !hasRec {
			l.errorf("welcome_without_recovered")
		}
		if recovered {
			l.res.Recovered++
		} else {
			l.res.NotRecovered++
		}
	}
	s.rs.welcomed(w, pos, hasPos, s.resumed, recovered)
}

// jsonUint reads the unsigned integer after key in b.
func jsonUint(b []byte, key string) (uint64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	var v uint64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' && n < 20 {
		v = v*10 + uint64(b[n]-'0')
		n++
	}
	return v, n > 0
}

// delivery accounts for one message frame.
func (s *slot) delivery(p []byte) {
	l := s.l
	e := l.e
	now := mono()
	if bytes.HasPrefix(p, topicMsgHead) {
		s.topicDelivery(p, now)
		return
	}
	i := bytes.Index(p, dataKey)
	if i < 0 {
		l.st.foreign.Add(1)
		return
	}
	// --resume: the frame's id (a stream sequence) moves the device's
	// resume point, whoever published the message, and is checked for
	// order on its connection.
	var id uint64
	var idOOO bool
	resume := e.resume
	if resume {
		if v, ok := frameID(p[:i]); ok && v > 0 {
			id = v
			idOOO = s.rs.received(id)
		}
	}
	d := p[i+len(dataKey):]
	if !bytes.HasPrefix(d, e.prefix) {
		l.st.foreign.Add(1)
		return
	}
	d = d[len(e.prefix):]
	t, ok := jsonUint(d, `"t":`)
	if !ok {
		l.st.foreign.Add(1)
		return
	}
	l.st.lastRecv.Store(now)
	if bseq, ok := jsonUint(d, `"b":`); ok && bytes.HasPrefix(d, []byte(`,"b":`)) {
		if bseq == 0 || bseq > 1<<20 {
			l.st.foreign.Add(1)
			return
		}
		l.st.breceipts.Add(1)
		var dup, ooo, replayed bool
		if resume {
			replayed = s.resumed && int64(t) < s.bc.w
			dup, ooo = s.bc.receiveResume(uint32(bseq), id, idOOO, replayed)
		} else {
			dup, ooo = s.bc.receive(uint32(bseq))
		}
		if dup {
			l.st.dups.Add(1)
			return
		}
		if ooo {
			l.st.ooo.Add(1)
		}
		if s.bc.owes(int64(t), resume) {
			e.bGot.Add(1)
		}
		if replayed {
			l.st.replayed.Add(1)
			recordMicros(l.hReplay, now-int64(t))
		} else {
			recordMicros(l.hBcast, now-int64(t))
			recordMicros(l.ivE2E, now-int64(t)) // the per-second series too (a broadcast run publishes no messages)
		}
		for len(l.bstats) < int(bseq) {
			l.bstats = append(l.bstats, BroadcastStat{Seq: len(l.bstats) + 1})
		}
		b := &l.bstats[bseq-1]
		if b.Receivers == 0 || now < b.First {
			b.First = now
		}
		b.Last = max(b.Last, now)
		b.Receivers++
		return
	}
	u, ok1 := jsonUint(d, `,"u":`)
	seq, ok2 := jsonUint(d, `"s":`)
	if !ok1 || !ok2 || seq == 0 || seq > 1<<31 {
		l.st.foreign.Add(1)
		return
	}
	if int(u) != e.nums[s.user] {
		l.st.misrouted.Add(1)
		return
	}
	l.st.receipts.Add(1)
	var dup, ooo, replayed bool
	if resume {
		replayed = s.resumed && int64(t) < s.msgs.w
		dup, ooo = s.msgs.receiveResume(uint32(seq), id, idOOO, replayed)
	} else {
		dup, ooo = s.msgs.receive(uint32(seq))
	}
	if dup {
		l.st.dups.Add(1)
		return
	}
	if ooo {
		l.st.ooo.Add(1)
	}
	if s.msgs.owes(int64(t), resume) {
		e.eligGot.Add(1)
	}
	lat := now - int64(t)
	if replayed {
		// from history: its latency includes the time the device was away
		l.st.replayed.Add(1)
		recordMicros(l.hReplay, lat)
		return
	}
	recordMicros(l.hE2E, lat)
	recordMicros(l.ivE2E, lat)
}

// sendFrame writes one masked client frame.
func (s *slot) sendFrame(op ws.OpCode, p []byte) {
	l := s.l
	if l.e.sse {
		l.errorf("sse_client_frame_not_sent") // an event stream sends none (not reached)
		return
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], l.rng.Uint32())
	b := wsframe.Append(l.fbuf[:0], ws.Header{Fin: true, OpCode: op, Masked: true, Mask: mask, Length: int64(len(p))})
	off := len(b)
	b = append(b, p...)
	ws.Cipher(b[off:], mask, 0)
	l.fbuf = b
	s.write(b)
}

// write sends b now, queueing what the socket does not take (engine.Conn,
// bounded by maxPendingOut).
func (s *slot) write(b []byte) {
	if s.Closed() {
		return
	}
	s.Mu.Lock()
	r, _ := s.WriteLocked(b, maxPendingOut)
	s.Mu.Unlock()
	switch r {
	case engine.Overflow:
		s.fail("write_queue_full")
	case engine.Failed:
		s.writeError(errWrite)
	}
}

// errWrite stands for the errno of a failed write, which the engine does
// not keep.
var errWrite = errors.New("failed")

// flush drains the write queue on EPOLLOUT.
func (s *slot) flush() {
	s.Mu.Lock()
	r, _ := s.FlushLocked(s.l.p.Iov(), s.l.now)
	s.Mu.Unlock()
	if r == engine.FlushFailed {
		s.writeError(errWrite)
	}
}

func (s *slot) writeError(err error) {
	if s.state == stLive || s.state == stClosing {
		if s.state == stLive {
			s.l.closeCode(1006)
		}
		s.finalClose("")
		return
	}
	s.fail("write_" + errName(err))
}

// protocolError closes a connection whose server broke the framing rules.
func (s *slot) protocolError(reason string) {
	s.l.errorf("protocol_" + reason)
	if s.state == stLive {
		s.finalClose("")
		return
	}
	s.fail("protocol_" + reason)
}

// fail ends a connection attempt that never got its welcome.
func (s *slot) fail(reason string) {
	s.finalClose(reason)
}

// closeGracefully sends a close frame and waits for the echo; an event
// stream, which has no close handshake, is closed at once.
func (s *slot) closeGracefully(code uint16) {
	if s.state != stLive {
		s.finalClose("")
		return
	}
	if s.l.e.sse {
		s.endSession(false)
		s.state = stClosing
		s.finalClose("")
		return
	}
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], code)
	s.sendFrame(ws.OpClose, b[:])
	if s.state == stDown {
		return
	}
	s.endSession(false)
	s.state = stClosing
	s.l.w.Schedule(s, s.l.now+s.l.ticksOf(s.l.e.plan.CloseTimeout))
}

// endSession ends the open session (the device stops expecting messages);
// unexpected says the gateway or the network ended it, not the load tester.
func (s *slot) endSession(unexpected bool) {
	if s.state != stLive {
		return
	}
	e := s.l.e
	to := e.sessionClosed(s.user)
	if e.resume {
		// the device resumes where it left off: what it has not got yet
		// is still owed to it
		if !s.l.finishing && !s.away {
			s.away = true
			s.l.st.away.Add(1)
		}
	} else if e.pub != nil && e.tp == nil && !s.l.finishing && to > s.pubFrom {
		// the messages published while it was open that it did not get
		// are owed to no open session any more
		var missed []uint32
		for seq := s.pubFrom + 1; seq <= to; seq++ {
			if !s.msgs.seen.has(seq) {
				missed = append(missed, seq)
			}
		}
		if len(missed) > 0 {
			e.pub.writeOff(int(s.user), missed)
		}
	}
	s.msgs.closed(unexpected)
	s.bc.closed(unexpected)
	if e.tp != nil {
		s.topicEnd(unexpected)
	}
	s.l.st.live.Add(-1)
	s.l.st.closes.Add(1)
	if unexpected {
		s.downUnexp = true
		s.l.st.unexpected.Add(1)
	}
}

// finalClose closes the socket. A non-empty failReason counts a failed
// attempt; then, or after an unexpected close, the slot reconnects with
// back-off while it is wanted.
func (s *slot) finalClose(failReason string) {
	l := s.l
	if s.state == stDown {
		return
	}
	if s.state == stConnecting {
		l.st.connecting.Add(-1)
	}
	if inFlight(s.state) {
		l.addInFlight(-1)
	}
	// A live session ends here when the gateway closed it, the stream
	// ended, a write failed or the framing broke: unexpected, unless the
	// run itself caused it (closeOK) or the run is over (after the cut).
	s.endSession(!s.closeOK && !l.finishing)
	s.closeOK = false
	s.Close(l.p)
	s.gen++
	s.state = stDown
	s.refreshing = false
	for _, b := range []**[]byte{&s.in, &s.frag} {
		if *b != nil {
			bufpool.Put(*b)
			*b = nil
		}
	}
	l.w.Unlink(s)
	if failReason != "" {
		l.errorf(failReason)
		l.st.fails.Add(1)
		l.attemptFailed(failReason, s.retryAfter)
	}
	if l.finishing {
		l.checkFinished()
		return
	}
	s.scheduleReconnect()
}
