package loadtest

import "testing"

func TestSeqAccounting(t *testing.T) {
	acked := func(ts ...int64) []pubRec {
		l := make([]pubRec, len(ts))
		for i, t := range ts {
			l[i] = pubRec{t: t, state: pubAcked}
		}
		return l
	}
	// events: w=welcome at time, c=close, r=receive seq
	type ev struct {
		kind byte
		v    int64
	}
	W := func(t int64) ev { return ev{'w', t} }
	C := ev{'c', 0} // closed by the load tester (drop, churn)
	X := ev{'x', 0} // closed unexpectedly (by the gateway)
	R := func(s int64) ev { return ev{'r', s} }

	for _, tc := range []struct {
		name   string
		log    []pubRec
		events []ev
		want   SeqCounts
	}{
		{
			name:   "in order",
			log:    acked(10, 20, 30),
			events: []ev{W(5), R(1), R(2), R(3)},
			want:   SeqCounts{Expected: 3, Delivered: 3, Receipts: 3},
		},
		{
			name:   "gap is lost",
			log:    acked(10, 20, 30),
			events: []ev{W(5), R(1), R(3)},
			want:   SeqCounts{Expected: 3, Delivered: 2, Lost: 1, Receipts: 2},
		},
		{
			name:   "duplicate",
			log:    acked(10, 20),
			events: []ev{W(5), R(1), R(1), R(2)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Duplicated: 1, Receipts: 3},
		},
		{
			name:   "reorder",
			log:    acked(10, 20, 30),
			events: []ev{W(5), R(2), R(1), R(3)},
			want:   SeqCounts{Expected: 3, Delivered: 3, OutOfOrder: 1, Receipts: 3},
		},
		{
			name: "device joined late",
			// messages 1 and 2 were published before the welcome at 25:
			// not expected; 3 and 4 are.
			log:    acked(10, 20, 30, 40),
			events: []ev{W(25), R(3), R(4)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Receipts: 2},
		},
		{
			name:   "late joiner that got an earlier message anyway",
			log:    acked(10, 20, 30),
			events: []ev{W(15), R(1), R(2), R(3)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Early: 1, Receipts: 3},
		},
		{
			name:   "publish at the welcome instant is not expected",
			log:    acked(10, 20),
			events: []ev{W(10)},
			want:   SeqCounts{Expected: 1, Lost: 1},
		},
		{
			name: "reconnect: messages while away are missed, not lost",
			// session 1 from 5, closed; session 2 from 35; 3 (at 30) was
			// published while away, 2 (at 20) while session 1 was open but
			// it closed before the end
			log:    acked(10, 20, 30, 40),
			events: []ev{W(5), R(1), C, W(35), R(4)},
			want:   SeqCounts{Expected: 4, Delivered: 2, Missed: 2, Receipts: 2},
		},
		{
			name:   "after a reconnect the order restarts",
			log:    acked(10, 20, 30, 40),
			events: []ev{W(5), R(1), R(2), R(3), C, W(25), R(4)},
			want:   SeqCounts{Expected: 4, Delivered: 4, Receipts: 4},
		},
		{
			name:   "closed at the end: nothing is lost",
			log:    acked(10, 20),
			events: []ev{W(5), R(1), C},
			want:   SeqCounts{Expected: 2, Delivered: 1, Missed: 1, Receipts: 1},
		},
		{
			name:   "unacknowledged publishes are never expected",
			log:    []pubRec{{t: 10, state: pubAcked}, {t: 20, state: pubFailed}, {t: 30, state: pubFailed}},
			events: []ev{W(5), R(1), R(2)},
			want:   SeqCounts{Expected: 1, Delivered: 1, Unconfirmed: 1, Receipts: 2},
		},
		{
			name:   "a number never issued",
			log:    acked(10),
			events: []ev{W(5), R(1), R(70)},
			want:   SeqCounts{Expected: 1, Delivered: 1, Unknown: 1, Receipts: 2},
		},
		{
			name: "closed by the gateway: missed because of the close",
			// session 1 from 5 closed by the gateway after 1; 2 and 3
			// published while away; session 2 from 35 gets 4
			log:    acked(10, 20, 30, 40),
			events: []ev{W(5), R(1), X, W(35), R(4)},
			want:   SeqCounts{Expected: 4, Delivered: 2, Missed: 2, MissedClosed: 2, Receipts: 2},
		},
		{
			name: "closed by the gateway, then churned: only the first gap counts",
			// session 1 (5) closed by the gateway: 2 (20) missed because
			// of it; session 2 (25) churned: 3 (30) missed as asked;
			// session 3 (35) gets 4
			log:    acked(10, 20, 30, 40),
			events: []ev{W(5), R(1), X, W(25), C, W(35), R(4)},
			want:   SeqCounts{Expected: 4, Delivered: 2, Missed: 2, MissedClosed: 1, Receipts: 2},
		},
		{
			name:   "closed by the gateway and never back",
			log:    acked(10, 20, 30),
			events: []ev{W(5), R(1), X},
			want:   SeqCounts{Expected: 3, Delivered: 1, Missed: 2, MissedClosed: 2, Receipts: 1},
		},
		{
			name:   "closed by the gateway, every message delivered anyway",
			log:    acked(10, 20),
			events: []ev{W(5), R(1), R(2), X, W(25)},
			want:   SeqCounts{Expected: 2, Delivered: 2, Receipts: 2},
		},
		{
			name:   "never connected",
			log:    acked(10, 20),
			events: nil,
			want:   SeqCounts{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d devTrack
			for _, e := range tc.events {
				switch e.kind {
				case 'w':
					d.welcome(e.v)
				case 'c':
					d.closed(false)
				case 'x':
					d.closed(true)
				case 'r':
					d.receive(uint32(e.v))
				}
			}
			got := d.account(tc.log, d.open)
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			if got.Expected != got.Delivered+got.Lost+got.Missed || got.MissedClosed > got.Missed {
				t.Fatalf("counts do not add up: %+v", got)
			}
		})
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	for _, i := range []uint32{1, 63, 64, 1000, 5} {
		if b.add(i) {
			t.Fatalf("%d reported present before add", i)
		}
	}
	for _, i := range []uint32{1, 63, 64, 1000, 5} {
		if !b.has(i) || !b.add(i) {
			t.Fatalf("%d missing", i)
		}
	}
	if b.has(2) || b.has(99999) {
		t.Fatal("phantom members")
	}
}
