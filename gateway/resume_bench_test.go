package gateway_test

import (
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/protocol"
)

// BenchmarkReplay1000 is the time for one client reconnecting with
// "since" to receive the 1,000 messages it missed (200-byte payloads):
// from the auth frame to the last message.
func BenchmarkReplay1000(b *testing.B) {
	ns := startJSNATS(b)
	srv := resumeGateway(b, ns.ClientURL(), func(o *gateway.Options) { o.History.MaxPerUser = 2000 })
	js := newJS(b, natsConn(b, srv))
	subj := userSubject(b, "replayer")
	payload := []byte(`{"text":"` + string(make200()) + `"}`)
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	for i := 0; i < 1000; i++ {
		f, err := js.PublishAsync(subj, payload)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	<-js.PublishAsyncComplete()
	ack := <-futures[0].Ok()
	since := strconv.FormatUint(ack.Sequence-1, 10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ws := dial(b, wsURL(srv), nil)
		send(b, ws, map[string]any{"type": "auth", "token": token(b, "replayer"), "since": since})
		readType(b, ws, protocol.TypeWelcome)
		for n := 0; n < 1000; {
			_, p, err := ws.ReadMessage()
			if err != nil {
				b.Fatal(err)
			}
			if len(p) > 20 && string(p[:19]) == `{"type":"message","` {
				n++
			}
		}
		ws.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/replay")
}

func make200() []byte {
	p := make([]byte, 180)
	for i := range p {
		p[i] = 'a' + byte(i%26)
	}
	return p
}
