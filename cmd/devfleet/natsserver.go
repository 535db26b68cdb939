package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsfleet/wsfleet/internal/flagenv"
)

// natsClusterName names the cluster the NATS servers of a fleet form.
const natsClusterName = "devfleet"

const natsUsage = `Usage: devfleet nats-server --name NAME --listen ADDR [--cluster-listen ADDR --routes URLS] [--http-listen ADDR] [--store-dir DIR]

Runs one NATS server (the nats-server library) in this process until
SIGTERM or SIGINT: devfleet --nats-servers N starts N of them, each routed
to the others, a cluster named "devfleet". With --store-dir it runs
JetStream, keeping its streams in that directory (clustered JetStream when
routed: the servers elect a meta leader among them).`

// natsServer is `devfleet nats-server`.
func natsServer(args []string) int {
	var name, listen, cluster, routes, httpListen, storeDir string
	fs := flagenv.New("devfleet nats-server", "DEVFLEET_NATS_SERVER_", natsUsage)
	fs.String(&name, "name", "nats-1", "server name")
	fs.String(&listen, "listen", "127.0.0.1:4222", "client address")
	fs.String(&cluster, "cluster-listen", "", `cluster (route) address ("": no cluster)`)
	fs.String(&routes, "routes", "", "route URLs of the other servers, comma-separated (nats-route://127.0.0.1:6223)")
	fs.String(&httpListen, "http-listen", "", `monitoring address: /varz, /connz, /routez, /subsz, /jsz, /healthz ("": none)`)
	fs.String(&storeDir, "store-dir", "", `JetStream directory, created if missing ("": no JetStream)`)
	if err := fs.Parse(args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "devfleet nats-server:", err)
		return 2
	}
	opts := &server.Options{ServerName: name, NoSigs: true, Logtime: true}
	var err error
	if opts.Host, opts.Port, err = hostPort(listen); err != nil {
		fmt.Fprintln(os.Stderr, "devfleet nats-server: --listen:", err)
		return 2
	}
	if httpListen != "" {
		if opts.HTTPHost, opts.HTTPPort, err = hostPort(httpListen); err != nil {
			fmt.Fprintln(os.Stderr, "devfleet nats-server: --http-listen:", err)
			return 2
		}
	}
	if storeDir != "" {
		if err := os.MkdirAll(storeDir, 0o700); err != nil {
			fmt.Fprintln(os.Stderr, "devfleet nats-server: --store-dir:", err)
			return 2
		}
		opts.JetStream, opts.StoreDir = true, storeDir
	}
	if cluster != "" {
		opts.Cluster.Name = natsClusterName
		if opts.Cluster.Host, opts.Cluster.Port, err = hostPort(cluster); err != nil {
			fmt.Fprintln(os.Stderr, "devfleet nats-server: --cluster-listen:", err)
			return 2
		}
		if strings.TrimSpace(routes) != "" {
			opts.Routes = server.RoutesFromStr(routes)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devfleet nats-server:", err)
		return 2
	}
	s.ConfigureLogger()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		fmt.Fprintf(os.Stderr, "devfleet nats-server: not ready on %s within 10s\n", listen)
		s.Shutdown()
		return 1
	}
	<-sig
	s.Shutdown()
	s.WaitForShutdown()
	return 0
}

func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT // in server.Options, 0 is the default port
	}
	return host, port, nil
}
