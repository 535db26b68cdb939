package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/router"
	"github.com/wsfleet/wsfleet/router/client"
)

// A service tells a user their order shipped: over WebSocket when they
// are online, else by push notification. The idempotency key makes a
// retry (after a timeout, say) safe: it is not delivered twice.
func Example() {
	routerURL, natsURL, stop := exampleFleet() // a router on a local NATS server, for the example
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Over HTTP, with an API key (or a JWT granting the "publish" scope).
	c := client.NewHTTP(routerURL, "example-api-key-0123456789")
	_, err := c.Publish(ctx, "alice", map[string]string{"text": "your order shipped"},
		client.RequireOnline(), client.WithIdempotencyKey("order-1234-shipped"))
	switch {
	case errors.Is(err, client.ErrUserOffline):
		fmt.Println("alice is offline: sending a push notification instead")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("delivered to alice's devices")
	}

	// The same interface over NATS, for services on the fleet's NATS.
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	var nc2 client.Client = client.NewNATS(nc, "wsfleet")
	online, err := nc2.QueryPresence(ctx, []string{"alice", "bob"})
	if err != nil {
		log.Fatal(err)
	}
	for _, u := range online {
		fmt.Printf("%s online: %v\n", u.User, u.Online)
	}
	b, err := nc2.Broadcast(ctx, map[string]string{"text": "maintenance at 10:00"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("broadcast id set:", b.ID != "")
	// Output:
	// alice is offline: sending a push notification instead
	// alice online: false
	// bob online: false
	// broadcast id set: true
}

// exampleFleet starts a NATS server and a router (no gateway: nobody is
// online) and returns the router's URL, the NATS URL and a stop function.
func exampleFleet() (string, string, func()) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		log.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		log.Fatal("nats-server did not start")
	}
	r, err := router.New(router.Options{Listen: "127.0.0.1:0", AdminListen: "off", NATSURL: ns.ClientURL(),
		APIKeys: []string{"example-api-key-0123456789"}, IdempotencyStore: "memory", Logger: zap.NewNop()})
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Start(); err != nil {
		log.Fatal(err)
	}
	return "http://" + r.Addr().String(), ns.ClientURL(), func() { _ = r.Close(); ns.Shutdown() }
}
