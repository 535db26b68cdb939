// Command baseline-gateway is a naive WebSocket gateway kept only to measure
// wsfleet's gateway against (make bench-fleet prints the ratios): the
// straightforward design, in baseline.go. Never deploy it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

func main() {
	var o Options
	fs := flagenv.New("baseline-gateway", "WSFLEET_GATEWAY_", `Usage: baseline-gateway [flags]

A naive WebSocket gateway (goroutines per connection, a NATS subscription
goroutine per user) kept only to measure wsfleet's gateway against. Not for
use.`)
	fs.String(&o.Listen, "listen", ":8080", "WebSocket listen address")
	fs.String(&o.AdminListen, "admin-listen", ":8081", "metrics address")
	fs.String(&o.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server")
	fs.Secret(&o.Secret, "jwt-hs256-secret", "HS256 secret")
	fs.String(&o.Prefix, "subject-prefix", "wsfleet", "subject prefix")
	fs.String(&o.NodeID, "node-id", "baseline", "node id")
	fs.Duration(&o.Heartbeat, "heartbeat", 30*time.Second, "ping interval")
	fs.Duration(&o.IdleTimeout, "idle-timeout", 90*time.Second, "idle timeout")
	fs.Bool(&o.ReusePort, "reuseport", false, "set SO_REUSEPORT so several processes share --listen")
	if err := fs.Parse(os.Args[1:], nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "baseline-gateway:", err)
		os.Exit(2)
	}
	s, err := New(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline-gateway:", err)
		os.Exit(1)
	}
	if err := s.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-gateway:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, `{"msg":"gateway started","listen":%q,"admin":%q}`+"\n", s.Addr(), s.AdminAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}
