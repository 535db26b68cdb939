package router

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// The presence view: which users have devices on which gateway nodes.
//
// It is built for a million online users in a few tens of megabytes. Node
// ids are interned to a small integer index, so a user's state is one
// 8-byte loc (node index, device count) stored inline as the value of one
// map keyed by the user id: a map slot of 24 bytes plus the id's bytes.
// The rare user connected to several nodes at once keeps the sentinel
// multiNode inline and its locs in a side map.
//
// The presence tracker (presence_sync.go) is the only writer; request
// handlers read under the read lock.

// loc is a user's device count on one node.
type loc struct {
	node    uint32 // index into view.nodes; multiNode: see view.multi
	devices uint32
}

// multiNode marks a user whose locs are in view.multi.
const multiNode = math.MaxUint32

// nodeInfo is one gateway node in the view. The fields below the line are
// the tracker's own (its goroutine only, no lock).
type nodeInfo struct {
	id      string
	idx     uint32
	users   int // users with devices on this node in the view
	devices int // their devices
	// From the node's last heartbeat (under view.mu).
	hbConnections int
	hbUsers       int
	draining      bool
	lastHeartbeat time.Time // zero before the first
	lastSeen      time.Time // last heartbeat, batch or snapshot from it

	// ---- tracker only ----
	epoch     string
	seq       uint64 // last batch applied (or the snapshot's Seq)
	synced    bool   // the state is a snapshot plus every batch after it
	snapReq   uint64 // the snapshot request in flight covering it; 0: none
	lastAsked time.Time
	buffered  []bufferedBatch // batches since the view lost sync, for replay after a snapshot
}

// bufferedBatch is a batch kept while a node's snapshot is awaited.
type bufferedBatch struct {
	seq     uint64
	changes []change
}

// change is one user's device count on a node.
type change struct {
	user    string
	devices uint32
}

// view is the fleet's presence: users to devices per node.
type view struct {
	mu    sync.RWMutex
	users map[string]loc   // every user with at least one device somewhere
	multi map[string][]loc // users on several nodes (users[u].node == multiNode)
	nodes []*nodeInfo      // by index; nil: a free index
	byID  map[string]uint32
	free  []uint32
}

func newView() *view {
	return &view{users: map[string]loc{}, multi: map[string][]loc{}, byID: map[string]uint32{}}
}

// node returns the node with id, adding it when it is new (write lock held).
func (v *view) node(id string, now time.Time) (n *nodeInfo, added bool) {
	if i, ok := v.byID[id]; ok {
		return v.nodes[i], false
	}
	var i uint32
	if k := len(v.free); k > 0 {
		i = v.free[k-1]
		v.free = v.free[:k-1]
	} else {
		i = uint32(len(v.nodes))
		v.nodes = append(v.nodes, nil)
	}
	n = &nodeInfo{id: strings.Clone(id), idx: i, lastSeen: now}
	v.nodes[i] = n
	v.byID[n.id] = i
	return n, true
}

// set makes user's device count on node n devices (write lock held).
func (v *view) set(n *nodeInfo, user string, devices uint32) {
	cur, ok := v.users[user]
	switch {
	case !ok:
		if devices == 0 {
			return
		}
		v.users[user] = loc{node: n.idx, devices: devices}
		n.users++
		n.devices += int(devices)
	case cur.node == n.idx:
		n.devices += int(devices) - int(cur.devices)
		if devices == 0 {
			delete(v.users, user)
			n.users--
			return
		}
		v.users[user] = loc{node: n.idx, devices: devices}
	case cur.node == multiNode:
		locs := v.multi[user]
		i := slices.IndexFunc(locs, func(l loc) bool { return l.node == n.idx })
		switch {
		case i < 0 && devices == 0:
			return
		case i < 0:
			v.multi[user] = append(locs, loc{node: n.idx, devices: devices})
			n.users++
			n.devices += int(devices)
			return
		case devices == 0:
			n.users--
			n.devices -= int(locs[i].devices)
			locs = slices.Delete(locs, i, i+1)
		default:
			n.devices += int(devices) - int(locs[i].devices)
			locs[i].devices = devices
			return
		}
		if len(locs) == 1 {
			delete(v.multi, user)
			v.users[user] = locs[0]
		} else {
			v.multi[user] = locs
		}
	default: // on another node only
		if devices == 0 {
			return
		}
		v.multi[user] = []loc{cur, {node: n.idx, devices: devices}}
		v.users[user] = loc{node: multiNode}
		n.users++
		n.devices += int(devices)
	}
}

// clearNode removes every user's devices on n (write lock held). It scans
// the whole view, unless n holds nobody.
func (v *view) clearNode(n *nodeInfo) {
	if n.users == 0 {
		n.devices = 0
		return
	}
	for u, l := range v.users {
		switch l.node {
		case n.idx:
			delete(v.users, u)
		case multiNode:
			locs := v.multi[u]
			i := slices.IndexFunc(locs, func(l loc) bool { return l.node == n.idx })
			if i < 0 {
				continue
			}
			locs = slices.Delete(locs, i, i+1)
			if len(locs) == 1 {
				delete(v.multi, u)
				v.users[u] = locs[0]
			} else {
				v.multi[u] = locs
			}
		}
	}
	n.users, n.devices = 0, 0
}

// removeNode clears n and frees its index (write lock held).
func (v *view) removeNode(n *nodeInfo) {
	v.clearNode(n)
	v.nodes[n.idx] = nil
	delete(v.byID, n.id)
	v.free = append(v.free, n.idx)
}

// nodeDevices is a user's device count on one node, by node id.
type nodeDevices struct {
	Node    string `json:"node"`
	Devices int    `json:"devices"`
}

// lookup returns user's devices fleet-wide, and per node when nodes is
// true (read lock held).
func (v *view) lookup(user string, nodes bool) (int, []nodeDevices) {
	l, ok := v.users[user]
	if !ok {
		return 0, nil
	}
	if l.node != multiNode {
		if !nodes {
			return int(l.devices), nil
		}
		return int(l.devices), []nodeDevices{{Node: v.nodes[l.node].id, Devices: int(l.devices)}}
	}
	total := 0
	var out []nodeDevices
	for _, l := range v.multi[user] {
		total += int(l.devices)
		if nodes {
			out = append(out, nodeDevices{Node: v.nodes[l.node].id, Devices: int(l.devices)})
		}
	}
	if nodes {
		slices.SortFunc(out, func(a, b nodeDevices) int { return strings.Compare(a.Node, b.Node) })
	}
	return total, out
}

// userNodes returns the ids of the nodes user has devices on (read lock
// held).
func (v *view) userNodes(user string) []string {
	_, nodes := v.lookup(user, true)
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.Node
	}
	return ids
}
