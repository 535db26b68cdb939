package loadtest

import "bytes"

// Resumable delivery (--resume).
//
// Against a fleet running with --resume every delivered frame carries the
// message's stream sequence as its id, and a client that reconnects with
// "since" (the last id it received) gets every message for its user and
// every broadcast published after it, in order, then the live ones. So a
// device (a connection slot, across its reconnects) remembers the newest id
// it received; its first welcome's "position" stands for it until it has
// received something. Every later connection authenticates with "since" =
// that id and reads the welcome's "recovered": false means history no
// longer held everything after it (trimmed by --history-max-per-user or
// --history-max-bytes, expired by --history-ttl, or the stream was made
// anew): the device skips to the welcome's position, and what it could not
// get back is counted apart (unrecovered) and fails the run.
//
// Identity. A message is still told apart by its payload: the publisher's
// (user, number) pair (or a broadcast's number), which every frame carries
// whichever way it was published and which maps one to one to the stream
// sequence it was stored under. Where the publisher learnt that sequence
// (a JetStream publish's ack with --via nats, or a router's answer whose
// "id" is a stream sequence) the message is classified by it: owed to a
// device when its id is above the device's first position, unrecoverable
// when it lies in the gap (since, position] a recovered:false welcome left,
// and each receipt's id is checked against it (id_mismatch). Otherwise the
// payload-based rules apply with times: owed when published after the
// device's first welcome, unrecoverable when published before a
// recovered:false welcome and never received.
//
// Accounting. Messages published while a device was away are owed to it.
// At the end of the drain window each acknowledged message owed to a
// device is exactly one of:
//
//   - delivered: some connection of the device received it (live or
//     replayed);
//   - lost: not received, and the device cannot get it any more: it had
//     already received a later id (it resumes after that), or, without
//     ids, a later number of the same user; or its last connection was
//     open at the end (welcomed with a since before the message, or from a
//     position before it) and had not got that far: of the lost, these are
//     counted apart as pending (a replay or a delivery not done by the end
//     of the drain window: an overloaded fleet, or a drain that timed
//     out);
//   - missed: not received because history no longer held it
//     (unrecovered), or because the device was away at the end of the run
//     and never got to resume (the drain waits for away devices to come
//     back while deliveries are outstanding, so this is rare).
//
// Duplicated counts a message a device received again, on the same
// connection or on any later one; out of order an id below the newest the
// connection had received (a new connection starts over).

// devResume is one device's resume state, owned by its event loop.
type devResume struct {
	hasPos   bool   // a welcome gave a position
	firstPos uint64 // the first welcome's position: messages with a later id are owed
	// last is the id the device resumes from: the newest id it received,
	// or the position of its last welcome when that is newer.
	last     uint64
	connLast uint64 // the newest id the current connection received (0: none yet)
	gaps     []resumeGap
}

// resumeGap is a welcome that answered recovered:false: the messages after
// since and up to pos were no longer all in history; w is its time.
type resumeGap struct {
	since, pos uint64
	w          int64
}

// welcomed takes a welcome at time w: pos is its position (hasPos: it had
// one), resumed says the auth frame carried since (r.last), recovered its
// answer.
func (r *devResume) welcomed(w int64, pos uint64, hasPos, resumed, recovered bool) {
	r.connLast = 0
	if !hasPos {
		return
	}
	if resumed && !recovered {
		r.gaps = append(r.gaps, resumeGap{since: r.last, pos: pos, w: w})
	}
	if !r.hasPos {
		r.hasPos, r.firstPos = true, pos
	}
	// A recovered since is the position; else the device goes on from
	// the welcome's (the stream's newest, or a new stream's).
	r.last = pos
}

// received takes a frame's id and reports whether it is below the newest
// id the connection had received.
func (r *devResume) received(id uint64) (ooo bool) {
	ooo = id < r.connLast
	r.connLast = max(r.connLast, id)
	r.last = max(r.last, id)
	return ooo
}

// since is the id a reconnect resumes from, and whether there is one.
func (r *devResume) since() (uint64, bool) { return r.last, r.hasPos }

// inGap reports whether a message (its id, 0 if unknown, and publish time
// t) was published into a gap a recovered:false welcome left: by id, in
// (since, pos]; without, published after the device's first welcome and
// before that welcome.
func (r *devResume) inGap(id uint64, t, firstW int64) bool {
	for _, g := range r.gaps {
		if id != 0 {
			if g.since < id && id <= g.pos {
				return true
			}
		} else if firstW < t && t < g.w {
			return true
		}
	}
	return false
}

// accountResume classifies every message of log for this device under
// --resume (see the comment at the top); openAtEnd says whether its last
// connection was open at the end of the drain window.
func (d *devTrack) accountResume(log []pubRec, openAtEnd bool, r *devResume) SeqCounts {
	c := SeqCounts{Duplicated: d.dup, OutOfOrder: d.ooo, Receipts: d.recv, Replayed: d.replayed}
	for i, p := range log {
		seq := uint32(i + 1)
		seen := d.seen.has(seq)
		if seen && p.id != 0 {
			if got := d.idOf(seq); got != 0 && got != p.id {
				c.IDMismatch++
			}
		}
		byID := p.id != 0 && r.hasPos
		owed := d.firstW != 0 && p.t > d.firstW
		if byID {
			owed = d.firstW != 0 && p.id > r.firstPos
		}
		switch {
		case p.state != pubAcked:
			if seen {
				c.Unconfirmed++
			}
			continue
		case !owed:
			if seen {
				c.Early++
			}
			continue
		}
		c.Expected++
		if byID {
			c.ByID++
		}
		id := uint64(0)
		if byID {
			id = p.id
		}
		// skipped: the device had moved past it (a later id, or a later
		// number of the same user): it resumes after it
		skipped := (byID && p.id <= r.last) || (!byID && seq < d.top)
		switch {
		case seen:
			c.Delivered++
		case r.inGap(id, p.t, d.firstW):
			c.Missed++
			c.Unrecovered++
		case skipped:
			c.Lost++
		case openAtEnd:
			c.Lost++
			c.Pending++ // its connection had not got that far by the end
		default:
			c.Missed++ // away at the end: it never got to resume
		}
	}
	c.Unknown = d.unknown(len(log))
	return c
}

// ResumeResult is what --resume measured: the reconnects that sent
// "since" and what the fleet answered, and the messages the devices got
// back, lost or received twice across their reconnects.
type ResumeResult struct {
	Reconnects   int64 `json:"reconnects"`    // welcomes of connections that authenticated with since
	Recovered    int64 `json:"recovered"`     // of those, answered recovered:true
	NotRecovered int64 `json:"not_recovered"` // answered recovered:false (or with no answer): history was too small
	NoPosition   int64 `json:"no_position"`   // welcomes without a position: the gateway does not resume
	Moved        int64 `json:"moved"`         // reconnect notices (a node draining) followed at once
	// Messages and broadcasts together.
	Replayed    int64        `json:"replayed"`     // received on a resumed connection, published before its welcome
	Lost        int64        `json:"lost"`         // owed and never received
	Duplicated  int64        `json:"duplicated"`   // received again by the same device, across its connections
	OutOfOrder  int64        `json:"out_of_order"` // an id below the connection's newest
	Pending     int64        `json:"pending"`      // of the lost, those their open connection had not got to by the end
	Unrecovered int64        `json:"unrecovered"`  // missed because history no longer held them
	AwayAtEnd   int64        `json:"away_at_end"`  // missed: owed to devices away at the end of the run
	ByID        int64        `json:"by_id"`        // expected messages classified by their id (the rest by payload and time)
	Expected    int64        `json:"expected"`     // expected messages and broadcast deliveries
	IDMismatch  int64        `json:"id_mismatch"`  // received with another id than the publisher's
	Latency     LatencyStats `json:"replay_latency"`
}

// resumeWire is a process's resume counters.
type resumeWire struct {
	Reconnects   int64 `json:"reconnects"`
	Recovered    int64 `json:"recovered"`
	NotRecovered int64 `json:"not_recovered"`
	NoPosition   int64 `json:"no_position"`
	Moved        int64 `json:"moved"`
}

func (w *resumeWire) add(o resumeWire) {
	w.Reconnects += o.Reconnects
	w.Recovered += o.Recovered
	w.NotRecovered += o.NotRecovered
	w.NoPosition += o.NoPosition
	w.Moved += o.Moved
}

var (
	positionKey  = []byte(`"position":"`)
	recoveredKey = []byte(`"recovered":`)
	idKey        = []byte(`"id":"`)
)

// welcomePosition reads a welcome frame's position and recovered
// ("recovered" absent: hasRec false).
func welcomePosition(p []byte) (pos uint64, hasPos bool, recovered, hasRec bool) {
	if i := bytes.Index(p, positionKey); i >= 0 {
		pos, hasPos = decimalID(p[i+len(positionKey):])
	}
	if i := bytes.Index(p, recoveredKey); i >= 0 {
		rest := p[i+len(recoveredKey):]
		switch {
		case bytes.HasPrefix(rest, []byte("true")):
			recovered, hasRec = true, true
		case bytes.HasPrefix(rest, []byte("false")):
			hasRec = true
		}
	}
	return
}

// frameID reads a message frame's id when it is a stream sequence
// (decimal digits); head is the frame up to its "data".
func frameID(head []byte) (uint64, bool) {
	i := bytes.Index(head, idKey)
	if i < 0 {
		return 0, false
	}
	return decimalID(head[i+len(idKey):])
}

// decimalID reads 1-20 decimal digits closed by a quote, as a nonzero
// stream sequence.
func decimalID(b []byte) (uint64, bool) {
	var v uint64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		if n == 20 {
			return 0, false
		}
		d := uint64(b[n] - '0')
		if v > (^uint64(0)-d)/10 {
			return 0, false
		}
		v = v*10 + d
		n++
	}
	if n == 0 || n == len(b) || b[n] != '"' {
		return 0, false
	}
	return v, true
}

// streamSeq reads a publisher's id (a router's answer) as a stream
// sequence: decimal digits, else 0 (a router without --resume answers a
// NUID, never all digits).
func streamSeq(id string) uint64 {
	v, ok := decimalID([]byte(id + `"`))
	if !ok {
		return 0
	}
	return v
}
