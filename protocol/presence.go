package protocol

// Presence: what gateways tell the fleet about who is connected where.
//
// Each gateway node publishes, on <prefix>.presence.events, batches of the
// changes in its users' device counts (coalesced over a short window, so a
// connect storm is a few messages, not one per connection), and on
// <prefix>.presence.heartbeat a heartbeat every few seconds. Both carry the
// node's epoch (new at every start) and the sequence number of its last
// batch, so a listener detects a missed batch or a restarted node and asks
// that node for a snapshot on <prefix>.presence.snapshot. A node that stops
// sending heartbeats may be dead or only starved of CPU: a listener asks
// it on its own subject, <prefix>.presence.node.<token> (PresenceNode), and
// the NATS server's answer tells the two apart. While the node's NATS
// connection is up its subscription there exists, so a request either gets
// the node's heartbeat back or times out (alive, late); once the node's
// connection is gone the server answers at once that nothing listens (a
// "no responders" status), and listeners drop the node with all its users.
//
// Listeners (routers, services) build the fleet's view from a snapshot of
// every node plus the batches that follow it.

// Presence subjects, relative to the prefix.
const (
	presenceEvents    = ".presence.events"
	presenceHeartbeat = ".presence.heartbeat"
	presenceSnapshot  = ".presence.snapshot"
	presenceNode      = ".presence.node."
)

// PresenceEvents returns the subject of presence batches.
func (s Subjects) PresenceEvents() string { return s.prefix + presenceEvents }

// PresenceHeartbeat returns the subject of node heartbeats.
func (s Subjects) PresenceHeartbeat() string { return s.prefix + presenceHeartbeat }

// PresenceSnapshot returns the subject snapshot requests go to. Every node
// answers a request (or only the node it names) on the reply subject.
func (s Subjects) PresenceSnapshot() string { return s.prefix + presenceSnapshot }

// PresenceNode returns the subject a node answers liveness probes on:
// "<prefix>.presence.node.<token>", the token being the node id encoded as
// a user id is ([EncodeUserToken]), so no node id can name a wildcard or
// another node's subject. A probe's reply is the node's [NodeHeartbeat].
func (s Subjects) PresenceNode(node string) (string, error) {
	tok, err := EncodeUserToken(node)
	if err != nil {
		return "", err
	}
	return s.prefix + presenceNode + tok, nil
}

// PresenceChange is one user's device count on a node after a change.
// Devices 0 means the user's last device on the node left.
type PresenceChange struct {
	User    string `json:"user"`
	Devices int    `json:"devices"`
	// Online is true when the user's first device on the node connected in
	// this batch, false when its last one left; absent for other changes.
	Online *bool `json:"online,omitempty"`
}

// PresenceBatch is one message on <prefix>.presence.events.
type PresenceBatch struct {
	Node    string           `json:"node"`
	Epoch   string           `json:"epoch"` // changes at every start of the node
	Seq     uint64           `json:"seq"`   // 1, 2, 3… within an epoch
	Changes []PresenceChange `json:"changes"`
	// Topics are the changes in topic presence (topics matching the
	// gateway's --topic-presence): a user's devices subscribed to a topic
	// on the node.
	Topics []TopicPresenceChange `json:"topics,omitempty"`
}

// TopicPresenceChange is a user's device count in a topic on a node after
// a change; Devices 0 means its last device there left the topic. User ""
// stands for the node itself, for every topic (whether or not in
// --topic-presence): Devices 1 when the node has subscribers of the topic,
// 0 when its last left (a router counts the topic's nodes from them; they
// make no TopicPresenceEvent).
type TopicPresenceChange struct {
	Topic   string `json:"topic"`
	User    string `json:"user"`
	Devices int    `json:"devices"`
}

// TopicPresenceEvent is published on <prefix>.presence.topic.<topic>
// ([Subjects.TopicPresence]) with each presence batch that changed who is
// in the topic on the node: the users whose first device there joined it
// and those whose last left it. It is per node: a user on two nodes joins
// on each.
type TopicPresenceEvent struct {
	Node   string   `json:"node"`
	Topic  string   `json:"topic"`
	Joined []string `json:"joined,omitempty"`
	Left   []string `json:"left,omitempty"`
}

// TopicPresence returns the subject of a topic's join and leave events:
// "<prefix>.presence.topic.<topic>" (a valid topic).
func (s Subjects) TopicPresence(topic string) string { return s.prefix + ".presence.topic." + topic }

// TopicUserDevices is a user's device count in a topic, in a snapshot
// (User "": the node has subscribers of the topic, as in
// [TopicPresenceChange]).
type TopicUserDevices struct {
	Topic   string `json:"topic"`
	User    string `json:"user"`
	Devices int    `json:"devices"`
}

// NodeHeartbeat is one message on <prefix>.presence.heartbeat.
type NodeHeartbeat struct {
	Node        string `json:"node"`
	Epoch       string `json:"epoch"`
	Seq         uint64 `json:"seq"` // of the node's last batch (0: none yet)
	Connections int    `json:"connections"`
	Users       int    `json:"users"`
	IntervalMS  int    `json:"interval_ms"` // until the next heartbeat
	Draining    bool   `json:"draining,omitempty"`
	// Shedding is true while the node refuses new connections because it
	// is behind (its event loops, auth workers or NATS confirmations run
	// late): the node is alive but loaded, and its next heartbeat may come
	// late.
	Shedding bool `json:"shedding,omitempty"`
}

// SnapshotRequest asks for snapshots; Node empty means every node.
type SnapshotRequest struct {
	Node string `json:"node,omitempty"`
}

// SnapshotChunk is one reply to a snapshot request. A node's snapshot may
// take several chunks (each under NATS's payload limit); Last marks its
// final one. The snapshot is the node's state as of batch Seq: batches with
// a higher Seq follow it.
type SnapshotChunk struct {
	Node  string        `json:"node"`
	Epoch string        `json:"epoch"`
	Seq   uint64        `json:"seq"`
	Users []UserDevices `json:"users"`
	// Topics is the node's topic presence (in the chunks, like Users).
	Topics []TopicUserDevices `json:"topics,omitempty"`
	// Chunks, on the last chunk, is how many the snapshot has: a listener
	// that got fewer (one was lost, or too large for NATS) does not apply
	// it. 0 (a node that does not count them): not checked.
	Chunks int  `json:"chunks,omitempty"`
	Last   bool `json:"last"`
}

// UserDevices is a user and its device count on a node.
type UserDevices struct {
	User    string `json:"user"`
	Devices int    `json:"devices"`
}

// Control messages travel on a user's own subject (<prefix>.user.<token>),
// so they reach exactly the nodes where the user is connected; the
// HeaderControl header tells them from deliveries. A node answers on the
// reply subject, or, when the message has none, on the subject in
// HeaderReplyTo: with resumable delivery nodes receive control messages
// republished by the history stream, which drops the reply subject.
const (
	// HeaderControl names a control action on a user subject.
	HeaderControl = "Wsfleet-Control"
	// HeaderReplyTo carries a control message's reply subject.
	HeaderReplyTo = "Wsfleet-Reply-To"
	// ControlKick closes every connection of the user on the node with
	// CloseKicked; the node answers with a KickReply.
	ControlKick = "kick"
	// ControlSubscribe subscribes every open connection of the user on
	// the node to the topic in HeaderTopic, as if each had sent a
	// subscribe frame its token allows; the node answers with a
	// TopicReply once each subscription is live (or failed).
	ControlSubscribe = "subscribe"
	// ControlUnsubscribe ends the user's subscriptions to the topic in
	// HeaderTopic on the node, with an "unsubscribed" frame; the node
	// answers with a TopicReply.
	ControlUnsubscribe = "unsubscribe"
	// HeaderTopic names the topic of ControlSubscribe and
	// ControlUnsubscribe.
	HeaderTopic = "Wsfleet-Topic"
)

// KickReply is a node's answer to ControlKick.
type KickReply struct {
	Node   string `json:"node"`
	Closed int    `json:"closed"`
}

// TopicReply is a node's answer to ControlSubscribe and
// ControlUnsubscribe: Devices is how many of the user's connections on the
// node hold (subscribe) or left (unsubscribe) the topic.
type TopicReply struct {
	Node    string `json:"node"`
	Devices int    `json:"devices"`
}
