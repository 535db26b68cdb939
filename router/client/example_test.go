package client_test

import (
	"context"
	"encoding/json"
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
	c, err := client.NewHTTP(routerURL, "example-api-key-0123456789")
	if err != nil {
		log.Fatal(err) // a *client.ConfigError: the URL or the token is unusable
	}
	_, err = c.Publish(ctx, "alice", map[string]string{"text": "your order shipped"},
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
	nc2, err := client.NewNATS(nc, "wsfleet")
	if err != nil {
		log.Fatal(err)
	}
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

// The base URL needs its scheme: a bare host:port is refused when the
// client is made, with an error that is not an outage.
func ExampleNewHTTP() {
	_, err := client.NewHTTP("127.0.0.1:8090", "example-api-key-0123456789")
	fmt.Println(err)
	fmt.Println("invalid config:", errors.Is(err, client.ErrInvalidConfig))
	fmt.Println("router unavailable:", errors.Is(err, client.ErrRouterUnavailable))
	fmt.Println("retryable:", client.IsRetryable(err))

	c, err := client.NewHTTP("http://127.0.0.1:8090", "example-api-key-0123456789")
	fmt.Println(c != nil, err)
	// Output:
	// router client: invalid baseURL "127.0.0.1:8090": no scheme: use "http://127.0.0.1:8090" (or https://)
	// invalid config: true
	// router unavailable: false
	// retryable: false
	// true <nil>
}

// Raw JSON data (a json.RawMessage or []byte) is checked before anything
// is sent: no router is needed to get this error.
func ExampleHTTPClient_Publish_invalidData() {
	c, err := client.NewHTTP("http://router.invalid:8090", "example-api-key-0123456789")
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Publish(context.Background(), "alice", json.RawMessage(`{"text": "shipped",}`))
	fmt.Println(err)
	var de *client.DataError
	fmt.Println("invalid data:", errors.Is(err, client.ErrInvalidData), errors.As(err, &de))
	fmt.Println("retryable:", client.IsRetryable(err))
	// Output:
	// router client: invalid message data: json.RawMessage is not one JSON value: invalid character '}' looking for beginning of object key string (at byte offset 19)
	// invalid data: true true
	// retryable: false
}

// IsRetryable tells the failures worth retrying (after RetryAfter) from
// those that fail the same way again.
func ExampleIsRetryable() {
	for _, err := range []error{
		&client.Error{Code: "rate_limited", Status: 429, Message: "over the rate limit", RetryAfter: time.Second},
		&client.Error{Code: "router_unavailable", Message: "connection refused"},
		&client.Error{Code: "router_unavailable", Status: 502, Message: "a proxy's bad gateway"},
		&client.Error{Code: "user_offline", Status: 404, Message: "the user has no device connected"},
		&client.Error{Code: "idempotency_key_reused", Status: 422, Message: "the key was used for another request"},
		&client.ConfigError{Field: "baseURL", Reason: "empty"},
		context.Canceled,
	} {
		fmt.Printf("%v: %v\n", err, client.IsRetryable(err))
	}
	// Output:
	// router: rate_limited (429): over the rate limit: true
	// router: router_unavailable: connection refused: true
	// router: router_unavailable (502): a proxy's bad gateway: true
	// router: user_offline (404): the user has no device connected: false
	// router: idempotency_key_reused (422): the key was used for another request: false
	// router client: invalid baseURL: empty: false
	// context canceled: false
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
