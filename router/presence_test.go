package router_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/protocol"
	"github.com/wsfleet/wsfleet/router"
)

// presenceBody is the answer of GET /v1/users/{user}/presence.
type presenceBody struct {
	User    string `json:"user"`
	Online  bool   `json:"online"`
	Devices int    `json:"devices"`
	Nodes   []struct {
		Node    string `json:"node"`
		Devices int    `json:"devices"`
	} `json:"nodes"`
}

// where renders a presence answer as "node=devices,..." (sorted), or ""
// when the user is offline.
func (p presenceBody) where() string {
	var parts []string
	for _, n := range p.Nodes {
		parts = append(parts, fmt.Sprintf("%s=%d", n.Node, n.Devices))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

type statsBody struct {
	Nodes       int `json:"nodes"`
	Connections int `json:"connections"`
	Users       int `json:"users"`
	NodeList    []struct {
		Node               string `json:"node"`
		Connections        int    `json:"connections"`
		Users              int    `json:"users"`
		LastHeartbeatMSAgo int64  `json:"last_heartbeat_ms_ago"`
		Synced             bool   `json:"synced"`
	} `json:"node_list"`
}

// getJSON GETs path on the router's API with testKey and decodes a 200.
func getJSON(t testing.TB, srv *router.Server, path string, v any) {
	t.Helper()
	r := do(t, http.MethodGet, apiURL(srv)+path, testKey, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: status %d (body %q)", path, r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("GET %s: %v (body %q)", path, err, r.body)
	}
}

func presenceOf(t testing.TB, srv *router.Server, user string) presenceBody {
	t.Helper()
	var p presenceBody
	getJSON(t, srv, "/v1/users/"+url.PathEscape(user)+"/presence", &p)
	return p
}

// waitWhere waits until the router places user on exactly the nodes of
// want ("a=2,b=1"; "" for offline).
func waitWhere(t testing.TB, srv *router.Server, user, want string) {
	t.Helper()
	checkFor(t, 5*time.Second, func() error {
		p := presenceOf(t, srv, user)
		if got := p.where(); got != want {
			return fmt.Errorf("presence of %s: %q, want %q", user, got, want)
		}
		total := 0
		for _, n := range p.Nodes {
			total += n.Devices
		}
		if p.Online != (total > 0) || p.Devices != total || p.User != user {
			return fmt.Errorf("inconsistent presence %+v", p)
		}
		return nil
	})
}

func statsOf(t testing.TB, srv *router.Server) statsBody {
	t.Helper()
	var s statsBody
	getJSON(t, srv, "/v1/stats", &s)
	return s
}

// presenceOpts are router options with short presence timings.
func presenceOpts(o *router.Options) {
	o.NodeTTL = 600 * time.Millisecond
	o.SnapshotTimeout = 300 * time.Millisecond
}

func TestPresenceFromBatches(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	a, b := newSimNode(t, ns, "gw-a"), newSimNode(t, ns, "gw-b")
	a.heartbeats(50 * time.Millisecond)
	b.heartbeats(50 * time.Millisecond)
	a.set("alice", 2, "bob", 1)
	b.set("alice", 1)
	waitWhere(t, srv, "alice", "gw-a=2,gw-b=1")
	waitWhere(t, srv, "bob", "gw-a=1")
	waitWhere(t, srv, "carol", "")
	checkFor(t, 5*time.Second, func() error {
		s := statsOf(t, srv)
		if s.Nodes != 2 || s.Users != 2 || s.Connections != 4 || len(s.NodeList) != 2 ||
			s.NodeList[0].Node != "gw-a" || s.NodeList[0].Connections != 3 || s.NodeList[0].Users != 2 ||
			s.NodeList[1].Node != "gw-b" || s.NodeList[1].Connections != 1 || !s.NodeList[0].Synced {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	a.set("alice", 0, "bob", 3)
	waitWhere(t, srv, "alice", "gw-b=1")
	waitWhere(t, srv, "bob", "gw-a=3")
	b.set("alice", 0)
	waitWhere(t, srv, "alice", "")
	if s := statsOf(t, srv); s.Users != 1 {
		t.Fatalf("distinct users %d, want 1 (bob)", s.Users)
	}
}

// TestPresenceLateRouter: the nodes' state exists before the router
// starts; it converges through the snapshots it asks for at start (taking
// several chunks per node), and so does a second replica.
func TestPresenceLateRouter(t *testing.T) {
	ns := startNATS(t, -1, nil)
	a, b := newSimNode(t, ns, "gw-a"), newSimNode(t, ns, "gw-b")
	a.set("u1", 1, "u2", 2, "u3", 1, "u4", 1, "u5", 1)
	b.set("u1", 1, "u6", 1)
	a.heartbeats(50 * time.Millisecond)
	b.heartbeats(50 * time.Millisecond)
	r1 := startRouter(t, ns, presenceOpts)
	r2 := startRouter(t, ns, presenceOpts)
	for _, srv := range []*router.Server{r1, r2} {
		waitWhere(t, srv, "u1", "gw-a=1,gw-b=1")
		waitWhere(t, srv, "u2", "gw-a=2")
		waitWhere(t, srv, "u5", "gw-a=1")
		waitWhere(t, srv, "u6", "gw-b=1")
		checkFor(t, 5*time.Second, func() error {
			if s := statsOf(t, srv); s.Users != 6 || s.Nodes != 2 {
				return fmt.Errorf("stats %+v", s)
			}
			return nil
		})
	}
	// Batches after the snapshot apply on both replicas.
	a.set("u2", 0)
	waitWhere(t, r1, "u2", "")
	waitWhere(t, r2, "u2", "")
}

// TestPresenceIncompleteSnapshot: a snapshot whose first chunk was lost
// is not applied (it would drop the users of that chunk); the router asks
// again and gets the whole.
func TestPresenceIncompleteSnapshot(t *testing.T) {
	ns := startNATS(t, -1, nil)
	a := newSimNode(t, ns, "gw-a")
	a.set("u1", 1, "u2", 2, "u3", 1, "u4", 1, "u5", 1)
	a.dropChunks.Store(1)
	a.heartbeats(50 * time.Millisecond)
	srv := startRouter(t, ns, presenceOpts)
	for _, u := range []string{"u1", "u2", "u5"} {
		waitWhere(t, srv, u, map[string]string{"u1": "gw-a=1", "u2": "gw-a=2", "u5": "gw-a=1"}[u])
	}
	if n := a.snapshotReqs.Load(); n < 2 {
		t.Fatalf("%d snapshot requests, want a second after the incomplete one", n)
	}
	if !strings.Contains(metricsText(t, srv), `wsfleet_router_presence_snapshots_total{result="node_incomplete"} 1`) {
		t.Fatal("the incomplete snapshot was not counted")
	}
}

// TestPresenceGapResync: a batch goes missing; the next batch (Seq
// skipped) makes the router ask for a snapshot, which holds the lost
// change.
func TestPresenceGapResync(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	a := newSimNode(t, ns, "gw-a")
	a.heartbeats(50 * time.Millisecond)
	a.set("alice", 1)
	waitWhere(t, srv, "alice", "gw-a=1")
	a.change(true, "bob", 2) // lost
	a.set("carol", 1)        // Seq skips one
	waitWhere(t, srv, "bob", "gw-a=2")
	waitWhere(t, srv, "carol", "gw-a=1")
	waitWhere(t, srv, "alice", "gw-a=1")
}

// TestPresenceHeartbeatAhead: a lost batch followed by no other batch is
// noticed from the heartbeat's Seq.
func TestPresenceHeartbeatAhead(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	a := newSimNode(t, ns, "gw-a")
	a.set("alice", 1)
	a.heartbeat()
	waitWhere(t, srv, "alice", "gw-a=1")
	a.change(true, "alice", 0, "bob", 1) // lost
	a.heartbeat()
	waitWhere(t, srv, "alice", "")
	waitWhere(t, srv, "bob", "gw-a=1")
}

// TestPresenceNodeRestart: a new epoch drops what the old process had.
func TestPresenceNodeRestart(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	a := newSimNode(t, ns, "gw-a")
	a.set("alice", 1, "bob", 1)
	a.heartbeat()
	waitWhere(t, srv, "alice", "gw-a=1")
	a.restart()
	a.set("bob", 1)
	waitWhere(t, srv, "alice", "")
	waitWhere(t, srv, "bob", "gw-a=1")
	a.restart()
	a.heartbeat() // a restart seen only through a heartbeat
	waitWhere(t, srv, "bob", "")
}

// TestPresenceNodeExpiry: a node that stops sending heartbeats and does
// not listen on its probe subject (as a gateway whose NATS connection is
// gone) is dropped with its users after --node-ttl, when its probe finds
// no responders; the others stay.
func TestPresenceNodeExpiry(t *testing.T) {
	t.Parallel()
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	a, b := newSimNode(t, ns, "gw-a"), newSimNode(t, ns, "gw-b")
	a.heartbeats(50 * time.Millisecond)
	b.heartbeats(50 * time.Millisecond)
	a.set("alice", 1, "both", 1)
	b.set("bob", 1, "both", 2)
	waitWhere(t, srv, "both", "gw-a=1,gw-b=2")
	stopped := time.Now()
	a.stopHeartbeats()
	waitWhere(t, srv, "alice", "")
	if d := time.Since(stopped); d < 500*time.Millisecond {
		t.Fatalf("node dropped %s after its last heartbeat, before --node-ttl (600ms)", d)
	}
	waitWhere(t, srv, "both", "gw-b=2")
	waitWhere(t, srv, "bob", "gw-b=1")
	if s := statsOf(t, srv); s.Nodes != 1 || s.Users != 2 || s.NodeList[0].Node != "gw-b" {
		t.Fatalf("stats after the expiry: %+v", s)
	}
	if m := metricsText(t, srv); !strings.Contains(m, `wsfleet_router_presence_nodes_expired_total{reason="gone"} 1`) {
		t.Fatal("the expiry is not counted as gone")
	}
	// It comes back (a network partition healed): it is asked for a snapshot.
	a.heartbeats(50 * time.Millisecond)
	waitWhere(t, srv, "alice", "gw-a=1")
}

// TestSnapshotRequestsBounded: a node that never answers snapshot requests
// is asked at most once per --snapshot-timeout, one request at a time.
func TestSnapshotRequestsBounded(t *testing.T) {
	t.Parallel()
	ns := startNATS(t, -1, nil)
	a := newSimNode(t, ns, "gw-mute")
	a.answerSnapshots.Store(false)
	srv := startRouter(t, ns, func(o *router.Options) {
		o.NodeTTL = 10 * time.Second
		o.SnapshotTimeout = 200 * time.Millisecond
	})
	start := time.Now()
	a.heartbeats(20 * time.Millisecond)
	a.set("alice", 1)
	// Batches still apply while the node is unsynced.
	waitWhere(t, srv, "alice", "gw-mute=1")
	checkFor(t, 5*time.Second, func() error {
		if n := a.snapshotReqs.Load(); n < 4 {
			return fmt.Errorf("%d snapshot requests so far", n)
		}
		return nil
	})
	a.stopHeartbeats()
	elapsed := time.Since(start)
	// One all-nodes request at start, then at most one per timeout.
	if n, most := a.snapshotReqs.Load(), int32(elapsed/(200*time.Millisecond))+2; n > most {
		t.Fatalf("%d snapshot requests in %s, want at most %d", n, elapsed, most)
	}
	if s := statsOf(t, srv); s.NodeList[0].Synced {
		t.Fatal("a node that never answered is reported synced")
	}
	if m := metricsText(t, srv); !strings.Contains(m, `wsfleet_router_presence_snapshots_total{result="timeout"}`) {
		t.Fatal("timeouts are not counted")
	}
}

// TestReplicasConverge: two routers, one started late, hold the same view
// of many users spread over several nodes after churn with lost batches.
func TestReplicasConverge(t *testing.T) {
	ns := startNATS(t, -1, nil)
	r1 := startRouter(t, ns, presenceOpts)
	nodes := []*simNode{newSimNode(t, ns, "n0"), newSimNode(t, ns, "n1"), newSimNode(t, ns, "n2")}
	var users []string
	for i := 0; i < 60; i++ {
		users = append(users, fmt.Sprintf("user-%02d", i))
	}
	for round := 0; round < 4; round++ {
		for i, u := range users {
			n := nodes[(i+round)%len(nodes)]
			n.change(i%17 == round, u, (i+round)%3) // a few batches lost
		}
	}
	for _, n := range nodes {
		n.heartbeats(50 * time.Millisecond)
	}
	r2 := startRouter(t, ns, presenceOpts)
	want := map[string]string{}
	for _, u := range users {
		var parts []string
		for _, n := range nodes {
			n.mu.Lock()
			if d := n.users[u]; d > 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", n.id, d))
			}
			n.mu.Unlock()
		}
		want[u] = strings.Join(parts, ",")
	}
	for _, srv := range []*router.Server{r1, r2} {
		checkFor(t, 10*time.Second, func() error {
			got := map[string]string{}
			for _, u := range users {
				got[u] = presenceOf(t, srv, u).where()
			}
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("views differ from the nodes'")
			}
			return nil
		})
	}
}

// TestPresenceIgnoresGarbage: malformed presence messages are counted and
// change nothing.
func TestPresenceIgnoresGarbage(t *testing.T) {
	ns := startNATS(t, -1, nil)
	srv := startRouter(t, ns, presenceOpts)
	nc := natsConnect(t, ns)
	subjects, _ := protocol.NewSubjects("wsfleet")
	for _, b := range []string{`nope`, `{"node":""}`, `{"node":"x","seq":1}`, `[]`} {
		if err := nc.Publish(subjects.PresenceEvents(), []byte(b)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(subjects.PresenceHeartbeat(), []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	checkFor(t, 5*time.Second, func() error {
		if m := metricsText(t, srv); !strings.Contains(m, `wsfleet_router_presence_messages_total{kind="invalid"} 8`) {
			return fmt.Errorf("invalid messages not counted")
		}
		return nil
	})
	if s := statsOf(t, srv); s.Nodes != 0 || s.Users != 0 {
		t.Fatalf("garbage changed the view: %+v", s)
	}
}
