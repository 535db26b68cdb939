package loadtest

// Sequence accounting.
//
// A stream is what one publisher numbers: the messages to one user, or the
// broadcasts. Its publish log holds, for sequence number s (1, 2, 3…), the
// time the publish started (CLOCK_MONOTONIC ns, stamped before the request
// left) and whether the fleet acknowledged it (router 202, or NATS publish
// followed by a successful flush).
//
// A device is one connection slot of a user, across its reconnects: each
// connection is a session, which starts when its welcome frame arrives (the
// user's subscription is live from then on) and ends when the socket closes.
// For each stream the device keeps the set of sequence numbers any of its
// sessions received.
//
// At the end of the drain window each acknowledged message published after
// the device's first welcome is, for that device, exactly one of:
//
//   - delivered: some session of the device received it;
//   - lost: not received, although the device's last session was welcomed
//     before the publish started and was still open at the end of the drain
//     window: the fleet promised it and did not deliver it;
//   - missed: not received, and no session was open through both the
//     publish and the end of the window (the device was disconnected,
//     reconnecting, or closed meanwhile): expected during a storm or churn.
//     A missed message whose device's last session welcomed before the
//     publish ended unexpectedly (the gateway or the network closed it, not
//     the load tester) is also counted in missedClosed: that is the fleet
//     failing the device (a slow-consumer close, say), not the scenario.
//
// A message published before the device's first welcome counts nowhere
// (if it arrives anyway it is "early"). Duplicates (a number the device
// already had) and out-of-order receipts (a number below the highest the
// current session has seen) are counted as they arrive. Unacknowledged
// publishes are never expected; one that arrives anyway is "unconfirmed".
//
// This is the accounting without --resume. With it (a fleet with
// resumable delivery) messages published while a device was away are owed
// to it: see resume.go and accountResume.

// pubState is a publish's outcome.
type pubState uint8

const (
	pubPending pubState = iota
	pubAcked
	pubFailed
)

// pubRec is one publish: entry i of a log is sequence number i+1.
type pubRec struct {
	t     int64 // mono ns when the publish started
	id    uint64
	state pubState
}

// A pubRec's id is the message's stream sequence when the publisher learnt
// it (--resume: a JetStream publish's ack, or a router's answer whose "id"
// is decimal digits), else 0: stream sequences start at 1.

// bitset is a growable set of small integers.
type bitset []uint64

func (b *bitset) add(i uint32) (had bool) {
	w := int(i >> 6)
	if w >= len(*b) {
		n := max(w+1, 2*len(*b))
		nb := make(bitset, n)
		copy(nb, *b)
		*b = nb
	}
	m := uint64(1) << (i & 63)
	had = (*b)[w]&m != 0
	(*b)[w] |= m
	return had
}

func (b bitset) has(i uint32) bool {
	w := int(i >> 6)
	return w < len(b) && b[w]&(uint64(1)<<(i&63)) != 0
}

// devTrack is one device's view of one stream. It is owned by the device's
// event loop; account runs once the stream's log is final.
type devTrack struct {
	seen   bitset
	firstW int64  // first welcome (0: never welcomed)
	w      int64  // welcome of the current or last session
	open   bool   // a session is open
	maxSeq uint32 // highest number the current session received
	top    uint32 // highest number any session received
	dup    int64
	ooo    int64
	recv   int64 // receipts, duplicates included

	// --resume: receipts of messages published before the resumed session
	// that got them was welcomed (replayed from history), and the ids the
	// frames carried, by number (ids[seq-1]; 0: none or not received).
	replayed int64
	ids      []uint64

	// unexp holds, for each session that ended unexpectedly, its welcome
	// time and the next session's (0 until there is one): a message
	// published in (unexp[i][0], unexp[i][1]] that the device missed was
	// missed because of that close. Nil for nearly every device.
	unexp [][2]int64
}

// welcome starts a session at t.
func (d *devTrack) welcome(t int64) {
	if d.firstW == 0 {
		d.firstW = t
	}
	if n := len(d.unexp); n > 0 && d.unexp[n-1][1] == 0 {
		d.unexp[n-1][1] = t
	}
	d.w, d.open, d.maxSeq = t, true, 0
}

// owes reports whether a delivery of a message published at t counts
// against the outstanding deliveries (see clientSet.eligible): it does
// when the current session was welcomed before the publish, or with
// --resume (resume) when the device's first session was.
func (d *devTrack) owes(t int64, resume bool) bool {
	if resume {
		return d.firstW != 0 && d.firstW < t
	}
	return d.w < t
}

// closed ends the current session; unexpected says the gateway or the
// network ended it (not the load tester: a storm's drop, churn, the end of
// the run, or a token expiry the run asked for).
func (d *devTrack) closed(unexpected bool) {
	if d.open && unexpected {
		d.unexp = append(d.unexp, [2]int64{d.w, 0})
	}
	d.open = false
}

// missedByClose reports whether a message published at t, missed, was
// missed because a session ended unexpectedly: the last session welcomed
// before t is one that did.
func (d *devTrack) missedByClose(t int64) bool {
	for _, u := range d.unexp {
		if u[0] < t && (u[1] == 0 || t <= u[1]) {
			return true
		}
	}
	return false
}

// receive records a receipt of seq (≥ 1) and reports whether it was a
// duplicate or out of order.
func (d *devTrack) receive(seq uint32) (dup, ooo bool) {
	d.recv++
	if d.seen.add(seq) {
		d.dup++
		return true, false
	}
	if seq < d.maxSeq {
		d.ooo++
		return false, true
	}
	d.maxSeq = seq
	d.top = max(d.top, seq)
	return false, false
}

// receiveResume records a receipt under --resume and reports whether it
// was a duplicate (a number any session of the device already had: the
// same message, whichever id it came with) or out of order. id is the
// frame's id (0: the frame had none); idOOO says it was below the newest id
// the connection had received (devResume.received), which is the order
// checked when there is an id; without one the number is checked against
// the session's highest. replayed says the message was published before
// the resumed session was welcomed.
func (d *devTrack) receiveResume(seq uint32, id uint64, idOOO, replayed bool) (dup, ooo bool) {
	d.recv++
	if d.seen.add(seq) {
		d.dup++
		return true, false
	}
	if id != 0 {
		ooo = idOOO
		for len(d.ids) < int(seq) {
			d.ids = append(d.ids, 0)
		}
		d.ids[seq-1] = id
	} else {
		ooo = seq < d.maxSeq
	}
	d.maxSeq = max(d.maxSeq, seq)
	d.top = max(d.top, seq)
	if ooo {
		d.ooo++
	}
	if replayed {
		d.replayed++
	}
	return false, ooo
}

// idOf is the id the device received number seq with (0: none).
func (d *devTrack) idOf(seq uint32) uint64 {
	if int(seq) > len(d.ids) {
		return 0
	}
	return d.ids[seq-1]
}

// SeqCounts are the outcome of sequence accounting, summed over devices.
// For every device Expected = Delivered + Lost + Missed.
type SeqCounts struct {
	Expected     int64 `json:"expected"`      // acknowledged messages published after the device's first welcome
	Delivered    int64 `json:"delivered"`     // of those, received
	Lost         int64 `json:"lost"`          // of those, not received by a session open from before the publish to the end
	Missed       int64 `json:"missed"`        // of those, not received while the device was away
	MissedClosed int64 `json:"missed_closed"` // of the missed, those whose device the gateway or the network had closed unexpectedly
	Early        int64 `json:"early"`         // received, published before the device's first welcome
	Unconfirmed  int64 `json:"unconfirmed"`   // received, but the publish was not acknowledged
	Unknown      int64 `json:"unknown"`       // received numbers the publisher never issued
	Duplicated   int64 `json:"duplicated"`    // receipts of a number the device already had
	OutOfOrder   int64 `json:"out_of_order"`  // receipts below the session's highest number (--resume: ids below the connection's newest)
	Receipts     int64 `json:"receipts"`      // every receipt, duplicates included

	// --resume only (0 otherwise).
	Replayed    int64 `json:"replayed"`    // first receipts, on a resumed connection, of messages published before its welcome
	Unrecovered int64 `json:"unrecovered"` // of the missed, those history no longer held when the device resumed (recovered:false)
	Pending     int64 `json:"pending"`     // of the lost, those still ahead of their device at the end: connection open, nothing later received
	ByID        int64 `json:"by_id"`       // of the expected, those the publisher knew the id of, classified by it
	IDMismatch  int64 `json:"id_mismatch"` // messages received with another id than the publisher's
}

func (c *SeqCounts) add(o SeqCounts) {
	c.Expected += o.Expected
	c.Delivered += o.Delivered
	c.Lost += o.Lost
	c.Missed += o.Missed
	c.MissedClosed += o.MissedClosed
	c.Early += o.Early
	c.Unconfirmed += o.Unconfirmed
	c.Unknown += o.Unknown
	c.Duplicated += o.Duplicated
	c.OutOfOrder += o.OutOfOrder
	c.Receipts += o.Receipts
	c.Replayed += o.Replayed
	c.Unrecovered += o.Unrecovered
	c.Pending += o.Pending
	c.ByID += o.ByID
	c.IDMismatch += o.IDMismatch
}

// account classifies every message of log for this device; openAtEnd says
// whether its last session was open at the end of the drain window.
func (d *devTrack) account(log []pubRec, openAtEnd bool) SeqCounts {
	c := SeqCounts{Duplicated: d.dup, OutOfOrder: d.ooo, Receipts: d.recv}
	for i, r := range log {
		seq := uint32(i + 1)
		seen := d.seen.has(seq)
		switch {
		case r.state != pubAcked:
			if seen {
				c.Unconfirmed++
			}
		case d.firstW == 0 || r.t <= d.firstW:
			if seen {
				c.Early++
			}
		case seen:
			c.Expected++
			c.Delivered++
		case openAtEnd && d.w < r.t:
			c.Expected++
			c.Lost++
		default:
			c.Expected++
			c.Missed++
			if d.unexp != nil && d.missedByClose(r.t) {
				c.MissedClosed++
			}
		}
	}
	c.Unknown = d.unknown(len(log))
	return c
}

// unknown counts the numbers received past the log's.
func (d *devTrack) unknown(n int) int64 {
	var u int64
	for w := n >> 6; w < len(d.seen); w++ {
		for b := 0; b < 64; b++ {
			if seq := uint32(w<<6 + b); seq > uint32(n) && d.seen[w]&(1<<b) != 0 {
				u++
			}
		}
	}
	return u
}
