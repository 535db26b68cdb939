package loadtest

import (
	"fmt"
	"sort"
	"strings"

	"github.com/wsfleet/wsfleet/internal/numfmt"
)

// Exit statuses of the loadtest command.
const (
	ExitOK = 0
	// ExitFailed: the run could not be made (the router or NATS
	// unreachable, the machine's limits, an output that could not be
	// written), or it was not the run that was asked for: connections never
	// welcomed, publishes or kicks that failed, a storm the connections did
	// not come back from, connections the gateway closed that were still
	// down at the end, worker problems.
	ExitFailed = 1
	// ExitBadFlags: the invocation was refused before anything started
	// (*UsageError): a flag, no signing key, an unusable key file, an
	// unwritable output file, an API key the router refuses.
	ExitBadFlags = 2
	// ExitDelivery: messages were lost, duplicated or out of order, or
	// missed because the gateway closed their connections, or the counts
	// do not add up.
	ExitDelivery = 3
	// ExitInterrupted: Ctrl-C (or SIGTERM); the report is partial.
	ExitInterrupted = 130
)

// failure is one reason a run failed.
type failure struct {
	delivery bool // a delivery problem (exit 3) rather than a run problem (exit 1)
	text     string
}

// judge lists why a run failed, in the report's order; none: it passed.
//
// What fails a run:
//   - connections that were never welcomed (the ramp did not reach
//     --conns); attempts that failed and were retried until a welcome are
//     not failures;
//   - any publish that failed (router error or timeout, NATS flush), and
//     any kick (--kick-users) the router did not answer 200;
//   - a storm whose dropped connections did not all come back by the end;
//   - connections the gateway (or the network) closed that were still down
//     at the end; closes the load tester made itself (a storm's drop,
//     churn, the end of the run, a token expiry without --token-refresh)
//     do not count;
//   - problems of the run itself (a worker that died or sent no result);
//   - and, as delivery problems: messages lost, duplicated or out of
//     order, messages missed because the gateway closed their device's
//     connection (a slow-consumer close, say; messages missed while a
//     storm or churn had the device away do not count), and counts that do
//     not add up;
//   - live, rooms: welcomed connections never subscribed to their topic,
//     subscriptions the gateway ended, topic publishes that failed,
//     publish frames the gateways refused, and a client publish check
//     that failed (--room-publish client against gateways that hand
//     client frames to a service) are run problems; topic deliveries
//     lost, duplicated or out of order, or missed after a gateway close
//     or unsubscribe, are delivery problems;
//   - with --resume: welcomes without a position (the gateway does not
//     resume: a run problem), and, as delivery problems, reconnects the
//     gateway answered recovered:false (history was too small for the
//     run); lost and duplicated then count across reconnects (resume.go).
func judge(res *Result) []failure {
	var fs []failure
	add := func(delivery bool, format string, args ...any) {
		fs = append(fs, failure{delivery: delivery, text: fmt.Sprintf(format, args...)})
	}
	c := &res.Connections
	if c.Target > 0 && !c.RampDone {
		switch {
		case c.Welcomes == 0:
			add(false, "no connection was welcomed: 0 of %s%s", th(int64(c.Target)), reasons(c.Errors, -1))
		case c.EverWelcomed > 0:
			add(false, "the ramp did not reach --conns: %s of %s connections were never welcomed%s",
				th(int64(c.Target)-c.EverWelcomed), th(int64(c.Target)), reasons(c.Errors, -1))
		default:
			add(false, "the ramp did not reach --conns: peak %s of %s%s", th(c.Peak), th(int64(c.Target)), reasons(c.Errors, -1))
		}
	}
	if m := res.Messages; m != nil && m.Failed > 0 {
		add(false, "%s of %s publishes failed%s", th(m.Failed), th(m.Published), reasons(m.Errors, m.Failed))
	}
	if b := res.Broadcasts; b != nil {
		var failed int64
		errs := map[string]int64{}
		for _, e := range b.Each {
			if !e.Acked {
				failed++
				errs[e.Error]++
			}
		}
		if failed > 0 {
			add(false, "%s of %s broadcasts failed%s", th(failed), th(int64(len(b.Each))), reasons(errs, failed))
		}
	}
	if k := res.Kicks; k != nil && k.Failed > 0 {
		add(false, "%s of %s kicks failed%s", th(k.Failed), th(int64(k.Users)), reasons(k.Errors, k.Failed))
	}
	if s := res.Storm; s != nil && s.Recovered < s.Dropped {
		add(false, "storm: %s of %s dropped connections did not come back by the end", th(s.Dropped-s.Recovered), th(s.Dropped))
	}
	topicFailures(res, add)
	if c.ClosedNotBack > 0 {
		add(false, "%s connections the gateway closed were not open again at the end%s", th(c.ClosedNotBack), closesBy(res.Closes))
	}
	for _, k := range []struct {
		c                   *SeqCounts
		msgs, dups, missing string
		pending             bool // Pending is counted
	}{
		{msgCounts(res), "messages", "messages were duplicated", "messages", res.Resume != nil},
		{bcastCounts(res), "broadcast deliveries", "broadcast receipts were duplicates", "broadcast deliveries", res.Resume != nil},
		{topicCounts(res), "topic deliveries", "topic receipts were duplicates", "topic deliveries", true},
	} {
		n := k.c
		if n == nil {
			continue
		}
		if n.Lost > 0 {
			pending := ""
			if k.pending && n.Pending > 0 {
				// --resume: their connections had not got that far
				pending = fmt.Sprintf(" (%s of them still pending at the end: their devices' open connections had received nothing after them; drain ended %s)", th(n.Pending), drainEnd(res))
			}
			add(true, "%s of %s expected %s were lost%s", th(n.Lost), th(n.Expected), k.msgs, pending)
		}
		if n.Duplicated > 0 {
			add(true, "%s %s", th(n.Duplicated), k.dups)
		}
		if n.OutOfOrder > 0 {
			add(true, "%s %s arrived out of order", th(n.OutOfOrder), k.msgs)
		}
		if n.MissedClosed > 0 {
			add(true, "%s %s were missed because the gateway closed connections%s", th(n.MissedClosed), k.missing, closesBy(res.Closes))
		}
	}
	if rs := res.Resume; rs != nil {
		if rs.NoPosition > 0 {
			add(false, "%s welcomes carried no position: the gateway does not run with --resume (start it with --resume, or run without it)", th(rs.NoPosition))
		}
		if rs.NotRecovered > 0 {
			add(true, "%s of %s reconnects with since were not recovered: history no longer held every message after their since (%s messages could not be replayed); the gateways' history settings are too small for this run (--history-max-per-user, --history-ttl, --history-max-bytes)",
				th(rs.NotRecovered), th(rs.Reconnects), th(rs.Unrecovered))
		}
	}
	if !res.Accounting.OK {
		add(true, "the counts do not add up (see the accounting lines)")
	}
	if n := len(res.Problems); n > 0 {
		add(false, "the run had %d problem(s) (see the problem lines): its figures may be incomplete", n)
	}
	return fs
}

// Verdict is why the run failed, one line per reason; empty: it passed.
func Verdict(res *Result) []string {
	out := []string{}
	for _, f := range judge(res) {
		out = append(out, f.text)
	}
	return out
}

// ExitStatus is the status the command exits with after res: 130 when
// interrupted, else 3 for a delivery problem, 1 for any other failure, 0
// when the run passed.
func ExitStatus(res *Result) int {
	if res.Interrupted {
		return ExitInterrupted
	}
	code := ExitOK
	for _, f := range judge(res) {
		if f.delivery {
			return ExitDelivery
		}
		code = ExitFailed
	}
	return code
}

// drainEnd is how the run's drain ended.
func drainEnd(r *Result) string {
	switch {
	case r.Messages != nil:
		return r.Messages.DrainEnd
	case r.Broadcasts != nil:
		return r.Broadcasts.DrainEnd
	case r.Topics != nil:
		return r.Topics.DrainEnd
	}
	return ""
}

func msgCounts(r *Result) *SeqCounts {
	if r.Messages == nil {
		return nil
	}
	return &r.Messages.Counts
}

func bcastCounts(r *Result) *SeqCounts {
	if r.Broadcasts == nil {
		return nil
	}
	return &r.Broadcasts.Counts
}

func th(n int64) string { return numfmt.Thousands(n) }

// reasons formats error counts as " (a 3, b 1)", most frequent first (at
// most four); just " (a)" when a is the only reason and accounts for all
// of total (-1: never).
func reasons(m map[string]int64, total int64) string {
	if len(m) == 0 {
		return ""
	}
	ks := sortedKeys(m)
	sort.SliceStable(ks, func(i, j int) bool { return m[ks[i]] > m[ks[j]] })
	if len(ks) == 1 && m[ks[0]] == total {
		return " (" + ks[0] + ")"
	}
	var parts []string
	for i, k := range ks {
		if i == 4 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, k+" "+th(m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// closesBy formats the gateway's closes as " (closes by the gateway:
// 4500×3 1006×1)".
func closesBy(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"×"+th(m[k]))
	}
	return " (closes by the gateway: " + strings.Join(parts, " ") + ")"
}
