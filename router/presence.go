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

// nodeInfo is one gateway node in the view. The fields above the line are
// written under view.mu; those below it are the tracker's own (its
// goroutine only, no lock).
type nodeInfo struct {
	id      string
	idx     uint32
	users   int // users with devices on this node in the view
	devices int // their devices
	tpairs  int // (topic, user) pairs with devices on this node
	// From the node's last heartbeat (under view.mu).
	hbConnections int
	hbUsers       int
	draining      bool
	lastHeartbeat time.Time // zero before the first
	lastSeen      time.Time // last batch, heartbeat, snapshot chunk or probe reply from it
	synced        bool      // the state is a snapshot plus every batch after it

	// ---- tracker only ----
	epoch     string
	seq       uint64 // last batch applied (or the snapshot's Seq)
	snapReq   uint64 // the snapshot request in flight covering it; 0: none
	lastAsked time.Time
	buffered  []bufferedBatch // batches since the view lost sync, for replay after a snapshot
	warnedTTL bool            // logged that its heartbeat interval is too long for NodeTTL
	probeSubj string          // the subject it answers probes on; "": its id names none
	probe     *probe          // the last probe sent to it; nil: none
}

// bufferedBatch is a batch kept while a node's snapshot is awaited.
type bufferedBatch struct {
	seq     uint64
	changes []change
}

// change is one user's device count on a node, or, with topic set, in
// that topic on the node.
type change struct {
	topic   string
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
	// topics: topic presence (the gateways' --topic-presence topics),
	// topic → user → its devices in the topic per node; the user "" is
	// the nodes with subscribers of the topic (every topic, devices 1).
	topics map[string]map[string][]loc
}

func newView() *view {
	return &view{users: map[string]loc{}, multi: map[string][]loc{}, byID: map[string]uint32{}, topics: map[string]map[string][]loc{}}
}

// setTopic makes user's device count in topic on node n devices (write
// lock held).
func (v *view) setTopic(n *nodeInfo, topic, user string, devices uint32) {
	us := v.topics[topic]
	locs := us[user]
	i := slices.IndexFunc(locs, func(l loc) bool { return l.node == n.idx })
	switch {
	case i < 0 && devices == 0:
	case i < 0:
		if us == nil {
			us = map[string][]loc{}
			v.topics[strings.Clone(topic)] = us
		}
		us[strings.Clone(user)] = append(locs, loc{node: n.idx, devices: devices})
		n.tpairs++
	case devices == 0:
		n.tpairs--
		if locs = slices.Delete(locs, i, i+1); len(locs) > 0 {
			us[user] = locs
			return
		}
		delete(us, user)
		if len(us) == 0 {
			delete(v.topics, topic)
		}
	default:
		locs[i].devices = devices
	}
}

// topicPairsOn lists, as removals, n's topic pairs not in keep (writer,
// without the lock).
func (v *view) topicPairsOn(n *nodeInfo, keep map[change]struct{}) []change {
	out := make([]change, 0, n.tpairs)
	for topic, us := range v.topics {
		for u, locs := range us {
			if !slices.ContainsFunc(locs, func(l loc) bool { return l.node == n.idx }) {
				continue
			}
			c := change{topic: topic, user: u}
			if _, ok := keep[c]; !ok {
				out = append(out, c)
			}
		}
	}
	return out
}

// topicMember is a user's devices in a topic, fleet-wide.
type topicMember struct {
	User    string `json:"user"`
	Devices int    `json:"devices"`
}

// lookupTopic returns the users in topic, their devices, and up to max
// members sorted by user id (read lock held).
func (v *view) lookupTopic(topic string, max int) (users, devices int, members []topicMember) {
	us := v.topics[topic]
	for u, locs := range us {
		if u == "" {
			continue // the topic's nodes
		}
		d := 0
		for _, l := range locs {
			d += int(l.devices)
		}
		devices += d
		members = append(members, topicMember{User: u, Devices: d})
	}
	slices.SortFunc(members, func(a, b topicMember) int { return strings.Compare(a.User, b.User) })
	users = len(members)
	if len(members) > max {
		members = members[:max]
	}
	return users, devices, members
}

// topicNodes is how many nodes have subscribers of topic (read lock
// held).
func (v *view) topicNodes(topic string) int { return len(v.topics[topic][""]) }

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

// Writer-side operations. The tracker is the view's only writer: it reads
// the maps without a lock (concurrent reads are safe, and no write can
// interleave) and takes the write lock in steps of at most writeStep
// changes, so requests never wait behind a whole node's worth of users.

// writeStep bounds the changes made under one hold of the write lock.
const writeStep = 4096

// apply applies changes to n's users (write lock not held).
func (v *view) apply(n *nodeInfo, changes []change) {
	for len(changes) > 0 {
		k := min(len(changes), writeStep)
		v.mu.Lock()
		for _, c := range changes[:k] {
			if c.topic != "" {
				v.setTopic(n, c.topic, c.user, c.devices)
				continue
			}
			v.set(n, c.user, c.devices)
		}
		v.mu.Unlock()
		changes = changes[k:]
	}
}

// replaceNode makes users n's whole state (write lock not held): the
// users in it are updated in place (nobody appears offline meanwhile),
// then those it lacks are removed. Only that removal scans the view, and
// only when n holds users the snapshot lacks.
func (v *view) replaceNode(n *nodeInfo, users []change) {
	if len(users) == 0 {
		v.clearNode(n)
		return
	}
	keep := make(map[string]struct{}, len(users))
	var tkeep map[change]struct{}
	for _, u := range users {
		switch {
		case u.devices == 0:
		case u.topic != "":
			if tkeep == nil {
				tkeep = map[change]struct{}{}
			}
			tkeep[change{topic: u.topic, user: u.user}] = struct{}{}
		default:
			keep[u.user] = struct{}{}
		}
	}
	v.apply(n, users)
	if n.users > len(keep) {
		v.apply(n, v.usersOn(n, keep))
	}
	if n.tpairs > len(tkeep) {
		v.apply(n, v.topicPairsOn(n, tkeep))
	}
}

// clearNode removes every user's devices on n (write lock not held).
func (v *view) clearNode(n *nodeInfo) {
	if n.tpairs > 0 {
		v.apply(n, v.topicPairsOn(n, nil))
	}
	if n.users == 0 {
		return
	}
	v.mu.Lock()
	if n.users == len(v.users) && len(v.multi) == 0 {
		// Everyone is on n alone: a new map, at once.
		v.users = map[string]loc{}
		n.users, n.devices = 0, 0
		v.mu.Unlock()
		return
	}
	v.mu.Unlock()
	v.apply(n, v.usersOn(n, nil))
}

// usersOn lists, as removals, the users with devices on n that are not in
// keep. It scans the view without the lock (writer only).
func (v *view) usersOn(n *nodeInfo, keep map[string]struct{}) []change {
	out := make([]change, 0, n.users)
	for u, l := range v.users {
		on := l.node == n.idx
		if l.node == multiNode {
			on = slices.ContainsFunc(v.multi[u], func(l loc) bool { return l.node == n.idx })
		}
		if on {
			if _, ok := keep[u]; !ok {
				out = append(out, change{user: u})
			}
		}
	}
	return out
}

// removeNode clears n and frees its index (write lock not held).
func (v *view) removeNode(n *nodeInfo) {
	v.clearNode(n)
	v.mu.Lock()
	v.nodes[n.idx] = nil
	delete(v.byID, n.id)
	v.free = append(v.free, n.idx)
	v.mu.Unlock()
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
