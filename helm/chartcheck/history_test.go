package chartcheck

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
)

// Resumable delivery: the gateways and the routers get the same history
// settings, in the shared variables, from one place; every history flag
// of the binaries is set; the stream fits the NATS servers (replicas, the
// JetStream store of each server).
func TestHistoryAgreement(t *testing.T) {
	b := getBinaries(t)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			settings := map[string]map[string]string{}
			for _, bin := range []string{"gateway", "router"} {
				d := o.deployments[name(bin)]
				if d == nil {
					t.Fatalf("no %s Deployment", bin)
				}
				env := o.env(t, &d.Spec.Template.Spec, bin, "pod", func(string, string) string { return "x" })
				settings[bin] = historySettings(env)
				// A binary's own variable wins over the shared one: none
				// may set a history setting for one binary alone.
				own := "WSFLEET_" + strings.ToUpper(bin) + "_"
				for k := range env {
					if k == own+"RESUME" || strings.HasPrefix(k, own+"HISTORY_") {
						t.Errorf("the %s gets %s: the history settings are the shared WSFLEET_RESUME and WSFLEET_HISTORY_* (resume.*)", bin, k)
					}
				}
			}
			gw := settings["gateway"]
			if !maps.Equal(gw, settings["router"]) {
				t.Fatalf("the gateway's and the router's history settings differ:\n  gateway %v\n  router  %v", gw, settings["router"])
			}
			on := o.value("resume.enabled") == true
			if gw["WSFLEET_RESUME"] != strconv.FormatBool(on) {
				t.Fatalf("WSFLEET_RESUME %q, resume.enabled %v", gw["WSFLEET_RESUME"], on)
			}
			if !on {
				if len(gw) != 1 {
					t.Errorf("history settings without resume: %v", gw)
				}
				return
			}
			// Every history flag of each binary is set by the chart: none
			// falls back to a default that could differ between them.
			for _, bin := range []string{"gateway", "router"} {
				for flag, v := range b.shared[bin] {
					if (flag == "resume" || strings.HasPrefix(flag, "history-")) && gw[v] == "" {
						t.Errorf("the chart does not set --%s (%s) of the %s", flag, v, bin)
					}
				}
			}
			h := historyOf(t, o, gw)
			if want := seconds(t, fmt.Sprint(o.value("resume.history.ttl"))); h.ttl.Seconds() != want {
				t.Errorf("--history-ttl %s, resume.history.ttl %v", h.ttl, o.value("resume.history.ttl"))
			}
			if want := fmt.Sprint(o.value("resume.history.maxPerUser")); strconv.Itoa(h.maxPerUser) != want {
				t.Errorf("--history-max-per-user %d, resume.history.maxPerUser %s", h.maxPerUser, want)
			}
			if want := parseSize(t, o.value("resume.history.maxBytes")); h.maxBytes != want {
				t.Errorf("--history-max-bytes %d, resume.history.maxBytes %v (%d bytes)", h.maxBytes, o.value("resume.history.maxBytes"), want)
			}
			if want := fmt.Sprint(o.value("resume.history.storage")); h.storage != want {
				t.Errorf("--history-storage %s, resume.history.storage %s", h.storage, want)
			}
			servers, bundled := natsServers(o)
			want := 1
			if r := o.value("resume.history.replicas"); r != nil {
				want, _ = strconv.Atoi(fmt.Sprint(r))
			} else if bundled && servers >= 3 {
				want = 3
			}
			if h.replicas != want {
				t.Errorf("--history-replicas %d, want %d (resume.history.replicas %v, %d NATS servers)", h.replicas, want, o.value("resume.history.replicas"), servers)
			}
			if h.replicas < 1 || h.replicas > 5 || h.replicas > servers {
				t.Errorf("--history-replicas %d: JetStream places 1 to 5 replicas, each on a server of its own, and the release has %d NATS servers", h.replicas, servers)
			}
			if !bundled {
				return
			}
			// The bundled servers run JetStream with room for every
			// replica's copy of the stream, and a fifth to spare.
			opts := natsOptions(t, o, 0)
			sts := o.statefulSets[name("nats")]
			c := container(&sts.Spec.Template.Spec, "nats")
			if !opts.JetStream {
				t.Fatal("resume on, and the bundled NATS runs without JetStream")
			}
			checkStoreDir(t, sts, c, opts.StoreDir)
			switch h.storage {
			case "file":
				if opts.JetStreamMaxStore*4 < h.maxBytes*5 {
					t.Errorf("max_file_store %d: less than --history-max-bytes %d and a fifth", opts.JetStreamMaxStore, h.maxBytes)
				}
				if len(sts.Spec.VolumeClaimTemplates) != 1 {
					t.Fatalf("file storage without a volume claim per NATS server: %d claims", len(sts.Spec.VolumeClaimTemplates))
				}
				if size := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; size.Value() < opts.JetStreamMaxStore {
					t.Errorf("NATS volumes of %s, below max_file_store %d", size.String(), opts.JetStreamMaxStore)
				}
			case "memory":
				if opts.JetStreamMaxMemory*4 < h.maxBytes*5 {
					t.Errorf("max_memory_store %d: less than --history-max-bytes %d and a fifth", opts.JetStreamMaxMemory, h.maxBytes)
				}
			default:
				t.Errorf("--history-storage %q", h.storage)
			}
			// JetStream's memory comes out of the container's, with room
			// for the server itself.
			if limit := c.Resources.Limits.Memory(); limit.Value() < opts.JetStreamMaxMemory+256<<20 {
				t.Errorf("NATS memory limit %s: below max_memory_store %d and 256 MiB for the server", limit.String(), opts.JetStreamMaxMemory)
			}
		})
	}
}

// historySettings are the variables of resumable delivery in env.
func historySettings(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if k == "WSFLEET_RESUME" || strings.HasPrefix(k, "WSFLEET_HISTORY_") {
			out[k] = v
		}
	}
	return out
}

// history is a deployment's history stream, from the shared variables.
type history struct {
	ttl        time.Duration
	maxPerUser int
	maxBytes   int64
	replicas   int
	storage    string
	prefix     string // the subject prefix
}

func historyOf(t *testing.T, o *objects, env map[string]string) history {
	t.Helper()
	var h history
	var err error
	num := func(k string) int64 {
		n, e := strconv.ParseInt(env[k], 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("%s %q: %v", k, env[k], e)
		}
		return n
	}
	h.maxPerUser = int(num("WSFLEET_HISTORY_MAX_PER_USER"))
	h.maxBytes = num("WSFLEET_HISTORY_MAX_BYTES")
	h.replicas = int(num("WSFLEET_HISTORY_REPLICAS"))
	h.storage = env["WSFLEET_HISTORY_STORAGE"]
	if h.ttl, err = time.ParseDuration(env["WSFLEET_HISTORY_TTL"]); err != nil {
		t.Fatalf("WSFLEET_HISTORY_TTL %q: %v", env["WSFLEET_HISTORY_TTL"], err)
	}
	if err != nil {
		t.Fatal(err)
	}
	h.prefix = fmt.Sprint(o.value("subjectPrefix"))
	return h
}

// streamName is the history stream's name for a subject prefix
// (internal/history.StreamName).
func streamName(prefix string) string { return strings.ReplaceAll(prefix, ".", "_") + "_history" }

var sizeRE = regexp.MustCompile(`^([0-9]+)([A-Za-z]*)$`)

// parseSize reads a size value as nats-server does: K, M, G, T powers of
// 1000; Ki, KiB, KB ... powers of 1024.
func parseSize(t *testing.T, v any) int64 {
	t.Helper()
	switch n := v.(type) {
	case float64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	}
	m := sizeRE.FindStringSubmatch(fmt.Sprint(v))
	if m == nil {
		t.Fatalf("size %v", v)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	mul := map[string]int64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
		"ki": 1 << 10, "kib": 1 << 10, "kb": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "mb": 1 << 20,
		"gi": 1 << 30, "gib": 1 << 30, "gb": 1 << 30, "ti": 1 << 40, "tib": 1 << 40, "tb": 1 << 40}[strings.ToLower(m[2])]
	if mul == 0 {
		t.Fatalf("size %v: unit %q", v, m[2])
	}
	return n * mul
}

// natsServers is how many NATS servers the release's gateways and routers
// use: the bundled StatefulSet's, or the URLs nats.url names.
func natsServers(o *objects) (n int, bundled bool) {
	if sts := o.statefulSets[name("nats")]; sts != nil {
		return int(*sts.Spec.Replicas), true
	}
	return len(strings.Split(fmt.Sprint(o.value("nats.url")), ",")), false
}

// natsOptions parses the rendered nats.conf as the bundled server i reads it.
func natsOptions(t *testing.T, o *objects, i int) *server.Options {
	t.Helper()
	cm := o.configMaps[name("nats")]
	if cm == nil || cm.Data["nats.conf"] == "" {
		t.Fatal("no nats.conf")
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(cm.Data["nats.conf"]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", fmt.Sprintf("%s-%d", name("nats"), i))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server rejects nats.conf: %v\n%s", err, cm.Data["nats.conf"])
	}
	return opts
}

// checkStoreDir checks that JetStream's directory is on a writable volume
// of the NATS container (its root filesystem is read-only): the volume
// claim with file storage, an emptyDir without.
func checkStoreDir(t *testing.T, sts interface{ GetName() string }, c *corev1.Container, dir string) {
	t.Helper()
	if dir == "" {
		t.Error("JetStream without store_dir: nats-server would write to the read-only root filesystem")
		return
	}
	for _, m := range c.VolumeMounts {
		if filepath.Clean(m.MountPath) == filepath.Clean(dir) && !m.ReadOnly {
			return
		}
	}
	t.Errorf("JetStream's store_dir %s is not a writable volume of the NATS container", dir)
}

// standInNATS starts, in this process, the NATS servers the gateway and
// router binaries connect to in place of the release's: the rendered
// nats.conf for each server of the bundled StatefulSet (JetStream and its
// limits included) with local addresses and directories, or, for an
// external NATS, as many servers as nats.url names, with JetStream when
// resume is on (what the chart documents an external NATS must run). It
// returns their client URLs once every one is ready, JetStream's meta
// leader elected.
func standInNATS(t *testing.T, o *objects) ([]string, []*server.Server) {
	t.Helper()
	n, bundled := natsServers(o)
	dir := t.TempDir()
	// Clients connect on a port the kernel picks (-1). The route ports must
	// be known before the first server starts (a JetStream cluster needs
	// its routes configured), and a port picked ahead of time can be taken
	// by another process or an outgoing connection before the server binds
	// it: then the whole cluster starts again on new route ports.
	start := func(attempt int) ([]string, []*server.Server, error) {
		routes := make([]int, n)
		for i := range n {
			routes[i] = freePort(t)
		}
		var urls []string
		var servers []*server.Server
		stop := func() {
			for _, s := range servers {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
		for i := range n {
			var opts *server.Options
			if bundled {
				opts = natsOptions(t, o, i)
			} else {
				opts = &server.Options{ServerName: fmt.Sprintf("external-%d", i), JetStream: o.value("resume.enabled") == true}
				if n > 1 {
					opts.Cluster.Name = "external"
				}
			}
			opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
			opts.HTTPPort = 0
			opts.PidFile = filepath.Join(dir, fmt.Sprintf("nats-%d-%d.pid", attempt, i))
			if opts.JetStream {
				opts.StoreDir = filepath.Join(dir, fmt.Sprintf("jetstream-%d-%d", attempt, i))
			}
			opts.Routes = nil
			if n > 1 {
				opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", routes[i]
				for _, p := range routes {
					opts.Routes = append(opts.Routes, server.RoutesFromStr(fmt.Sprintf("nats-route://127.0.0.1:%d", p))...)
				}
			}
			opts.NoSigs, opts.NoLog = true, true
			s, err := server.NewServer(opts)
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("stand-in NATS server %d: %w", i, err)
			}
			go s.Start()
			servers = append(servers, s)
		}
		for i, s := range servers {
			if !s.ReadyForConnections(10 * time.Second) {
				stop()
				return nil, nil, fmt.Errorf("stand-in NATS server %d not ready (route ports %v)", i, routes)
			}
			urls = append(urls, s.ClientURL())
		}
		return urls, servers, nil
	}
	var urls []string
	var servers []*server.Server
	for attempt := 1; ; attempt++ {
		var err error
		urls, servers, err = start(attempt)
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v; starting the cluster again", err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("stand-in NATS server %d not ready", i)
		}
		for {
			h := s.Healthz(&server.HealthzOptions{JSMetaOnly: true})
			if h.Status == "ok" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stand-in NATS server %d: %s", i, h.Error)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A new R3 stream needs a meta leader that sees every other server as
	// a current peer to place its replicas on.
	if n > 1 && servers[0].JetStreamEnabled() {
		for {
			ready := false
			for _, s := range servers {
				info, err := s.Jsz(nil)
				if err != nil || info.Meta == nil || info.Meta.Leader != s.Name() || len(info.Meta.Replicas) != n-1 {
					continue
				}
				ready = true
				for _, p := range info.Meta.Replicas {
					ready = ready && p.Current && !p.Offline
				}
			}
			if ready {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stand-in NATS servers: no JetStream meta leader with %d current peers within 30s", n-1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return urls, servers
}

// checkHistoryStream waits for the history stream the gateway (and the
// router) created on the stand-in servers and checks it has the settings
// of the release.
func checkHistoryStream(t *testing.T, o *objects, servers []*server.Server, env map[string]string) {
	t.Helper()
	h := historyOf(t, o, historySettings(env))
	want := streamName(h.prefix)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range servers {
			info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Config: true})
			if err != nil {
				continue
			}
			for _, a := range info.AccountDetails {
				for _, st := range a.Streams {
					if st.Name != want || st.Config == nil {
						continue
					}
					c := st.Config
					got := fmt.Sprintf("replicas %d, max_age %s, max_msgs_per_subject %d, max_bytes %d, storage %s, subjects %v",
						c.Replicas, c.MaxAge, c.MaxMsgsPer, c.MaxBytes, strings.ToLower(c.Storage.String()), c.Subjects)
					exp := fmt.Sprintf("replicas %d, max_age %s, max_msgs_per_subject %d, max_bytes %d, storage %s, subjects %v",
						h.replicas, h.ttl, h.maxPerUser, h.maxBytes, h.storage, []string{h.prefix + ".user.*", h.prefix + ".broadcast", h.prefix + ".topic.>"})
					if got != exp {
						t.Errorf("history stream %s:\n  has  %s\n  want %s", want, got, exp)
					}
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no history stream %s on the NATS servers 10s after the gateway started", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitInterest waits until every server has interest in subject.
func waitInterest(t *testing.T, servers []*server.Server, subject string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i, s := range servers {
		for !s.GlobalAccount().SubscriptionInterest(subject) {
			if time.Now().After(deadline) {
				t.Fatalf("stand-in NATS server %d has no interest in %s 10s after the welcome", i, subject)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// streamStates describes the streams of the stand-in servers, for a
// failure: which server has which, its leader and its messages.
func streamStates(servers []*server.Server) string {
	var b strings.Builder
	for i, s := range servers {
		info, err := s.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
		if err != nil {
			fmt.Fprintf(&b, "\n  server %d: %v", i, err)
			continue
		}
		for _, a := range info.AccountDetails {
			for _, st := range a.Streams {
				leader := ""
				if st.Cluster != nil {
					leader = st.Cluster.Leader
				}
				fmt.Fprintf(&b, "\n  server %d (%s): %s leader %q, %d messages, last %d", i, s.Name(), st.Name, leader, st.State.Msgs, st.State.LastSeq)
			}
		}
	}
	return b.String()
}

// isSeq reports whether a message id is a stream sequence (decimal digits).
func isSeq(id string) bool {
	n, err := strconv.ParseUint(id, 10, 64)
	return err == nil && n > 0 && len(id) <= 20
}
