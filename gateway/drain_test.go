package gateway_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/protocol"
)

// A client that follows the reconnect notice (connect to another node,
// close the old connection once welcomed there) loses no message while its
// node drains: the old node delivers until the client leaves it.
func TestDrainMakeBeforeBreakLosesNothing(t *testing.T) {
	ns := runNATS(t, -1)
	a := startGateway(t, func(o *gateway.Options) { o.NATSURL = ns.ClientURL(); o.NodeID = "a"; o.DrainTimeout = 3 * time.Second })
	b := startGateway(t, func(o *gateway.Options) { o.NATSURL = ns.ClientURL(); o.NodeID = "b" })

	var mu sync.Mutex
	got := map[string]int{}
	reader := func(ws *websocket.Conn, notice chan<- struct{}) {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]any
			json.Unmarshal(data, &f)
			switch f["type"] {
			case protocol.TypeMessage:
				mu.Lock()
				got[f["id"].(string)]++
				mu.Unlock()
			case protocol.TypeReconnect:
				if notice != nil {
					notice <- struct{}{}
					notice = nil
				}
			}
		}
	}
	old, _ := connect(t, a, "mover")
	notice := make(chan struct{}, 1)
	go reader(old, notice)

	svc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stop := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		n := 0
		defer func() { published <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			n++
			m := nats.NewMsg(userSubject(t, "mover"))
			m.Header.Set(protocol.HeaderMsgID, "m"+strconv.Itoa(n))
			m.Data = []byte(strconv.Itoa(n))
			svc.PublishMsg(m)
			svc.Flush()
		}
	}()
	time.Sleep(100 * time.Millisecond) // some messages before the drain
	go a.Shutdown(context.Background())
	select {
	case <-notice:
	case <-time.After(5 * time.Second):
		t.Fatal("no reconnect notice")
	}
	// Make before break: the new connection first, then close the old one.
	fresh, _ := connect(t, b, "mover")
	go reader(fresh, nil)
	old.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "moved"), time.Now().Add(time.Second))
	time.Sleep(200 * time.Millisecond) // and some after the move
	close(stop)
	n := <-published
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i <= n; i++ {
			if got["m"+strconv.Itoa(i)] == 0 {
				return errorf("message %d of %d never arrived", i, n)
			}
		}
		return nil
	})
	t.Logf("%d messages published across the drain, all delivered", n)
}
