package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/protocol"
)

// Resumable delivery (Options.Resume). The history stream (package
// internal/history) stores what is published on the user subjects and the
// broadcast subject; the gateways deliver each message with its stream
// sequence as its id, and a client resumes from the last id it saw. So
// the router publishes every message there as a JetStream publish: the
// message carries a reply subject of its own, on which the stream answers
// once it has stored it (a PubAck: the stream and the sequence), and the
// request is answered only then, with the sequence as the message's id.
//
//   - One subscription, on <inbox>.*, takes every acknowledgement (acks):
//     a publish costs no subscription of its own, and a batch's messages
//     are pipelined, all written before any acknowledgement is awaited.
//   - "No responders" from NATS means no stream took the message (it was
//     deleted, or its leader is being elected on a cluster): nothing was
//     stored, so nothing reaches a gateway with --resume. Such a message
//     is sent again, noStreamRetries times noStreamWait apart.
//   - An Idempotency-Key becomes each message's Nats-Msg-Id (dedupID), so
//     a retry within history.DuplicateWindow is stored once, and the
//     stream's answer to it is the first message's sequence (with
//     duplicate:true): the retry gets the same id even when the
//     idempotency store could not answer it (the first answer was lost,
//     the key was released, another replica with its own store).
//   - A kick travels on the user's subject too, so the stream stores it
//     and acknowledges it on the kick's reply subject; the nodes get it
//     from the stream, which drops reply subjects, so the kick also names
//     its reply subject in the HeaderReplyTo header.

// HeaderReplyTo names the reply subject of a control message (a kick) on
// a user subject: with --resume the nodes receive it republished by the
// history stream, which keeps headers but drops the reply subject, and
// answer there.
const HeaderReplyTo = protocol.HeaderReplyTo

// The history stream's answers are awaited for ackTimeout; a message no
// stream took is sent again noStreamRetries times, noStreamWait apart.
const (
	ackTimeout      = flushTimeout
	noStreamRetries = 2
	noStreamWait    = 250 * time.Millisecond
)

// Publish error reasons of the history stream (publish_errors_total).
const (
	reasonNoStream = "no_stream" // NATS answered no responders: no stream took the message
	reasonRefused  = "refused"   // the stream answered with an error
	reasonNoAck    = "no_ack"    // no answer within ackTimeout or the request's deadline
)

// ensureHistory creates or checks the history stream and subscribes to
// its acknowledgements (Start, with Resume). No JetStream and a stream of
// another configuration are setting errors, each one line naming what to
// change.
func (s *Server) ensureHistory(nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.NATSConnectTimeout)
	defer cancel()
	info, err := history.Ensure(ctx, nc, s.opts.History)
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, history.ErrNoJetStream):
		return fmt.Errorf("%w: %w", ErrBadOption, err)
	case errors.Is(err, history.ErrIncompatible):
		return fmt.Errorf("%w --resume: %w", ErrBadOption, err)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == 10028: // insufficient resources: the message names --history-max-bytes
		return fmt.Errorf("%w --resume: %w", ErrBadOption, err)
	case err != nil:
		return fmt.Errorf("%w: --resume: %v", ErrNATSUnavailable, err)
	}
	if s.acks, err = startAcks(nc); err != nil {
		return fmt.Errorf("%w: subscribing to the history stream's acknowledgements: %v", ErrNATSUnavailable, err)
	}
	h := s.opts.History
	s.log.Info("resumable delivery on: publishes are stored in the history stream, their ids its sequences",
		zap.String("stream", info.Config.Name), zap.Uint64("last_seq", info.State.LastSeq),
		zap.Duration("ttl", h.TTL), zap.Int("max_per_user", h.MaxPerUser), zap.Int("replicas", h.Replicas))
	return nil
}

// dedupID is the Nats-Msg-Id of the message to user ("" for a broadcast)
// of a publish with an idempotency key: a hash of the credential's scope,
// the key, the request's fingerprint and the user, 32 hex digits. A retry
// (the same request with the same key from the same credential) has the
// same ids; the same key with another request, or from another
// credential, has others, so the stream never takes one for the other.
// "" without Resume or without a key.
func (s *Server) dedupID(scope, key, fp, user string) string {
	if !s.opts.Resume || key == "" {
		return ""
	}
	return fingerprint([]byte("nats-msg-id"), []byte(scope), []byte(key), []byte(fp), []byte(user))
}

// seqID is a message's id under Resume: its stream sequence in decimal.
func seqID(seq uint64) string { return strconv.FormatUint(seq, 10) }

// ackError is a publish the history stream did not acknowledge in full.
type ackError struct {
	reason   string // reasonNoStream, reasonRefused or reasonNoAck
	err      error
	tooLarge bool          // refused: over the stream's max_msg_size
	stored   int           // messages of the request stored (a batch)
	total    int           // messages of the request
	within   time.Duration // no_ack: how long the answer was awaited (0: ackTimeout)
}

func (e *ackError) Error() string {
	var what string
	switch e.reason {
	case reasonNoStream:
		what = "no history stream took the message (NATS answered no responders: the stream is missing, or its leader is being elected; a gateway with --resume creates it again)"
	case reasonRefused:
		what = "the history stream refused the message: " + e.err.Error()
	default:
		within := e.within
		if within == 0 {
			within = ackTimeout
		}
		what = fmt.Sprintf("the history stream did not acknowledge the message within %s (or the request's deadline): %v", within, e.err)
	}
	switch {
	case e.reason == reasonNoAck:
		return what + "; it may have been stored and delivered: retry with the same Idempotency-Key, which it is not stored again under"
	case e.stored == 0:
		return what + "; nothing was published, retry later"
	}
	return fmt.Sprintf("%s; %d of the %d messages were stored and delivered: retry with the same Idempotency-Key, which they are not stored again under", what, e.stored, e.total)
}

func (e *ackError) Unwrap() error { return e.err }

// acks routes the history stream's acknowledgements to the publishes
// waiting for them: every message carries the reply subject <inbox>.<n>,
// n a number of its own, and one subscription takes them all.
type acks struct {
	prefix  string // "<inbox>."
	next    atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]ackWaiter
}

// ackWaiter is where the answer for one message goes: message i of a
// publish, on ch, which has room for every message of its round.
type ackWaiter struct {
	ch chan<- ack
	i  int
}

// ack is the stream's answer for one message.
type ack struct {
	i        int
	at       time.Time
	noStream bool // NATS answered no responders
	pub      jetstream.PubAck
	err      *jetstream.APIError
}

// ackBody is the stream's answer: a PubAck, or an error.
type ackBody struct {
	jetstream.PubAck
	Error *jetstream.APIError `json:"error"`
}

func startAcks(nc *nats.Conn) (*acks, error) {
	a := &acks{prefix: nc.NewInbox() + ".", waiting: map[uint64]ackWaiter{}}
	if _, err := nc.Subscribe(a.prefix+"*", a.deliver); err != nil {
		return nil, err
	}
	return a, nc.Flush()
}

// deliver hands an answer to its waiter (the subscription's goroutine).
// A message that is neither the stream's answer nor NATS's "no
// responders" is not the stream's and is dropped.
func (a *acks) deliver(m *nats.Msg) {
	n, err := strconv.ParseUint(m.Subject[len(a.prefix):], 10, 64)
	if err != nil {
		return
	}
	r := ack{at: time.Now()}
	if len(m.Data) == 0 && m.Header.Get("Status") == noRespondersStatus {
		r.noStream = true
	} else {
		var b ackBody
		if json.Unmarshal(m.Data, &b) != nil || (b.Stream == "" && b.Error == nil) {
			return
		}
		r.pub, r.err = b.PubAck, b.Error
	}
	a.mu.Lock()
	w, ok := a.waiting[n]
	delete(a.waiting, n)
	a.mu.Unlock()
	if ok {
		r.i = w.i
		w.ch <- r // room for it: one answer per registered number
	}
}

// register gives the messages of a round (their indexes) consecutive
// numbers, the first returned, and sends their answers to ch.
func (a *acks) register(round []int, ch chan<- ack) uint64 {
	first := a.next.Add(uint64(len(round))) - uint64(len(round)) + 1
	a.mu.Lock()
	defer a.mu.Unlock()
	for j, i := range round {
		a.waiting[first+uint64(j)] = ackWaiter{ch: ch, i: i}
	}
	return first
}

// forget drops the numbers of a round that ended (late answers are
// dropped).
func (a *acks) forget(first uint64, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for j := 0; j < n; j++ {
		delete(a.waiting, first+uint64(j))
	}
}

func (a *acks) reply(n uint64) string { return a.prefix + strconv.FormatUint(n, 10) }

// histPublish publishes data on each of subjects ("" is skipped) as a
// message of the history stream, dedup[i] (when not "") as message i's
// Nats-Msg-Id, and waits for the stream's answers, within ackTimeout and
// ctx. It returns each message's stream sequence (0 for those skipped).
// Its error is unsent when nothing was written, or when nothing was
// stored; natsDown recognises the first kind when NATS was down. It never
// holds a lock across a write: only acks' map is locked, around its
// updates.
func (s *Server) histPublish(ctx context.Context, nc *nats.Conn, target string, subjects []string, data []byte, dedup []string) ([]uint64, error) {
	seqs := make([]uint64, len(subjects))
	msgs := make([]*nats.Msg, len(subjects))
	sentAt := make([]time.Time, len(subjects))
	var round []int
	for i, subj := range subjects {
		if subj == "" {
			continue
		}
		m := nats.NewMsg(subj)
		m.Data = data
		if dedup != nil && dedup[i] != "" {
			m.Header.Set(jetstream.MsgIDHeader, dedup[i])
		}
		msgs[i] = m
		round = append(round, i)
	}
	total := len(round)
	if total == 0 {
		return seqs, nil
	}
	ch := make(chan ack, total)
	actx, cancel := context.WithTimeout(ctx, ackTimeout)
	defer cancel()
	stored, dups := 0, 0
	var failure *ackError
	fail := func(e *ackError) {
		if failure == nil || e.reason == reasonRefused {
			failure = e
		}
	}
	for attempt := 0; len(round) > 0; attempt++ {
		first := s.acks.register(round, ch)
		for j, i := range round {
			msgs[i].Reply = s.acks.reply(first + uint64(j))
			sentAt[i] = time.Now()
			if err := nc.PublishMsg(msgs[i]); err != nil {
				s.acks.forget(first, len(round))
				if attempt == 0 && j == 0 {
					return nil, unsent(s.writeFailed(target, err))
				}
				// The messages written before it may have gone out.
				s.m.publishErrors.WithLabelValues("publish").Inc()
				return nil, err
			}
		}
		var again []int
		for range round {
			select {
			case a := <-ch:
				switch {
				case a.noStream:
					again = append(again, a.i)
				case a.err != nil:
					fail(&ackError{reason: reasonRefused, err: a.err,
						tooLarge: a.err.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum})
				default:
					seqs[a.i] = a.pub.Sequence
					stored++
					if a.pub.Duplicate {
						dups++
						s.m.publishDuplicates.Inc()
					}
					s.m.publishAck.WithLabelValues(target).Observe(a.at.Sub(sentAt[a.i]).Seconds())
					s.m.bodyBytes.Observe(float64(len(data)))
				}
			case <-actx.Done():
				s.acks.forget(first, len(round))
				s.m.publishErrors.WithLabelValues(reasonNoAck).Inc()
				s.logRateLimited("the history stream did not acknowledge a publish", zap.String("target", target), zap.Error(actx.Err()))
				return nil, &ackError{reason: reasonNoAck, err: actx.Err(), stored: stored, total: total}
			}
		}
		if len(again) == 0 {
			break
		}
		round = again
		if attempt == noStreamRetries {
			fail(&ackError{reason: reasonNoStream, err: nats.ErrNoResponders})
			break
		}
		t := time.NewTimer(noStreamWait)
		select {
		case <-t.C:
		case <-actx.Done():
			fail(&ackError{reason: reasonNoStream, err: nats.ErrNoResponders})
			round = nil
		}
		t.Stop()
	}
	if failure != nil {
		failure.stored, failure.total = stored, total
		s.m.publishErrors.WithLabelValues(failure.reason).Inc()
		s.logRateLimited("the history stream did not store a publish", zap.String("target", target), zap.Error(failure))
		if stored == 0 {
			return nil, unsent(failure)
		}
		return nil, failure
	}
	if ce := s.log.Check(zap.DebugLevel, "published to the history stream"); ce != nil {
		ce.Write(zap.String("target", target), zap.Int("messages", total), zap.Int("duplicates", dups), zap.Int("bytes", len(data)))
	}
	return seqs, nil
}

// writeFailed counts and logs a message NATS refused before writing it,
// but for NATS being down (natsDown), which the caller handles; it
// returns err.
func (s *Server) writeFailed(target string, err error) error {
	if natsDown(err) {
		return err
	}
	reason := "publish"
	if errors.Is(err, nats.ErrMaxPayload) {
		reason = "too_large"
	}
	s.m.publishErrors.WithLabelValues(reason).Inc()
	s.logRateLimited("NATS publish failed", zap.String("target", target), zap.Error(err))
	return err
}
