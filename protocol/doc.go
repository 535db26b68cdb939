// Package protocol is the wire and subject contract of wsfleet: what a
// WebSocket client, a gateway node, the router and a publishing service say to
// each other. It holds the JSON frame types, the close codes, the NATS subject
// layout, the NATS header names and the encoding of a delivered message.
//
// It holds no I/O: sockets, NATS connections and HTTP live in the gateway and
// router packages.
//
// # Frames (RFC 6455 text frames carrying one JSON object with a "type")
//
// Client to server:
//
//	{"type":"auth","token":"<JWT>"}        first-message authentication; sent
//	                                       again before exp, it refreshes the token;
//	                                       "since":"<id>" resumes (see below)
//	{"type":"ping"}                        application ping; answered with pong
//	{"type":"pong"}                        answer to a server ping
//	{"type":"publish","data":<JSON>}       forwarded to <prefix>.in.<userToken>;
//	                                       with "topic":"room.42", to
//	                                       <prefix>.in.topic.room.42 (or the
//	                                       topic itself: see Topics)
//	{"type":"subscribe","topic":"room.42"} subscribe to a topic (see Topics);
//	                                       "token":"<JWT>" a subscription token
//	{"type":"unsubscribe","topic":"room.42"}
//
// Server to client:
//
//	{"type":"welcome","user":"alice","conn_id":"…","node":"gw-1","heartbeat":30}
//	{"type":"refreshed","exp":1767225600}  a refreshed token was accepted
//	{"type":"reconnect","reason":"…"}      the node is draining: open a new
//	                                       connection, close this one once
//	                                       the new one is welcomed
//
// Clients ignore frame types they do not know.
//
//	{"type":"message","id":"…","data":<JSON>}
//	{"type":"message","topic":"room.42","id":"…","data":<JSON>}
//	{"type":"subscribed","topic":"room.42"}
//	{"type":"unsubscribed","topic":"room.42"}  "reason":"…" when the node ended it
//	{"type":"ping"}                        sent every heartbeat; answer with pong
//	{"type":"pong"}
//	{"type":"error","code":"bad_request","reason":"…"}
//
// # Subjects
//
// With the default prefix "wsfleet":
//
//	wsfleet.user.<userToken>   deliveries to every device of one user
//	wsfleet.broadcast          deliveries to every authenticated connection
//	wsfleet.in.<userToken>     client publish frames, with headers naming the
//	                           user, the connection id and the node
//	wsfleet.topic.<topic>      deliveries to every subscriber of a topic: the
//	                           topic name itself, dot-separated segments of
//	                           A-Z a-z 0-9 _ - : ([ValidateTopic], [Subjects.Topic])
//
// A userToken is the JWT "sub" claim in a subject-safe, injective encoding
// (see [EncodeUserToken]): no user id can produce a subject that matches
// another user's subject or a wildcard.
//
// # Delivery
//
// A service publishes the message data, a JSON value, as the NATS payload,
// optionally with a [HeaderMsgID] header. The gateway delivers
//
//	{"type":"message","id":"<Wsfleet-Msg-Id>","data":<payload>}
//
// copying the payload bytes unchanged (see [AppendMessage]). A payload that is
// not a single valid UTF-8 JSON value is delivered as a JSON string holding
// its text; an empty payload is delivered as null.
//
// # Topics
//
// A topic is a name many connections subscribe to: a chat room, a price
// feed. Its messages are published on "<prefix>.topic.<topic>" (by a
// service on NATS, or the router's POST /v1/topics/{topic}/messages) and
// delivered, encoded once per node, to every connection subscribed to it:
//
//	→ {"type":"subscribe","topic":"room.42"}
//	← {"type":"subscribed","topic":"room.42"}
//	← {"type":"message","topic":"room.42","id":"…","data":{"text":"hi"}}
//	→ {"type":"unsubscribe","topic":"room.42"}
//	← {"type":"unsubscribed","topic":"room.42"}
//
// "subscribed" comes once the node's subscription to the topic is live on
// its NATS server: a message published after the client got it reaches
// the client. Subscribing to a topic already held answers "subscribed"
// again; unsubscribing from one not held answers "unsubscribed". No
// message of a topic follows its "unsubscribed".
//
// A subscribe is allowed by the connection's token, whose topics claim
// (the gateway's --jwt-topics-claim, default "topics") lists patterns,
// '*' matching one segment and a last '>' one or more:
//
//	{"sub":"alice","exp":…,"topics":["room.42","prices.*","team.7.>"]}
//
// or by a subscription token in the frame: a JWT signed like connection
// tokens, whose sub is the connection's user and whose "topic" claim is
// the topic (for rooms a user joins after connecting). Its exp is checked
// when it is presented. A refreshed connection token replaces the claim:
// the topics it no longer allows, bar those a subscription token allowed,
// end with an "unsubscribed" frame carrying a reason.
//
// A refused subscribe gets an error frame naming the topic, and the
// connection stays open:
//
//	{"type":"error","code":"forbidden","topic":"room.43","reason":"…"}
//
// with the codes [ErrCodeForbidden], [ErrCodeBadTopic],
// [ErrCodeTooManyTopics] (the gateway's --max-topics-per-connection,
// default 100), [ErrCodeSubscribeFailed] and [ErrCodeOverloaded].
// Subscribe frames count against the connection's message rate like any
// other frame.
//
// Topic presence: for topics matching the gateway's --topic-presence
// patterns, each node counts each user's devices in the topic and sends
// the changes with its presence batches ([PresenceBatch].Topics,
// [SnapshotChunk].Topics), and publishes [TopicPresenceEvent] on
// [Subjects.TopicPresence] as users join and leave it on the node.
//
// A client publishes to a topic with {"type":"publish","topic":…,"data":…}.
// The gateway forwards it to "<prefix>.in.topic.<topic>", for a service,
// when the connection holds the topic or its token's publish claim (the
// gateway's --jwt-publish-claim, default "publish") allows it; or, with
// the gateway's --client-topic-publish direct, publishes it on the topic
// itself, with an id of its own, when the publish claim allows it. A
// refusal is a "forbidden" error frame naming the topic.
//
// # Resumable delivery (a gateway with --resume)
//
// A JetStream stream stores what is published on the user subjects, the
// broadcast subject and the topic subjects. Every delivery's id is then the message's stream
// sequence, decimal digits ([AppendMessageSeq]), and the welcome says where
// the connection is covered from:
//
//	{"type":"welcome",…,"position":"1041"}
//
// A client keeps the id of the last message it received and sends it when
// it connects again, in the auth frame, as ?since= on the upgrade URL, or
// as the Wsfleet-Since header of the upgrade request ([ParseSince]):
//
//	{"type":"auth","token":"<JWT>","since":"1041"}
//	{"type":"welcome",…,"position":"1041","recovered":true}
//
// The node then delivers every message for the user and every broadcast
// with an id after since, in order, then the live ones, with no gap and no
// duplicate on the connection. "recovered":false means history no longer
// holds everything after since (expired, trimmed by the per-user limit, or
// an id of another stream): the client reloads its state, and the
// connection receives what comes after "position". Without since, a
// connection receives everything after its position. Ids ascend on a
// connection, with one exception: a message the node's NATS client dropped
// because the node was overloaded (a slow consumer, counted by the node)
// is fetched from the stream once the next message of its subject shows
// the gap, and may then follow a newer message of the other subject. A
// client resumes from the highest id it received, which never brings a
// duplicate.
//
// Topics are stored too, and resumed per topic. "subscribed" carries the
// position the subscription is covered from, and a subscribe may carry
// "since": the id of the last message received on that topic (or its
// position, if none), after a reconnect:
//
//	→ {"type":"subscribe","topic":"room.42","since":"1042"}
//	← {"type":"subscribed","topic":"room.42","position":"1042","recovered":true}
//	← {"type":"message","topic":"room.42","id":"1047","data":…}
//
// The topic's messages after since follow, in order, then the live ones,
// once each ([Subscribed] says what "recovered":false means). A node whose
// subscribers of a topic fell further behind than history holds ends their
// subscription with "unsubscribed" and a reason; they subscribe again with
// since.//
// # Server-sent events
//
// A gateway also serves the frames it sends as server-sent events (GET
// /sse; the README's "Server-sent events"): each event's data is one line
// holding the JSON object of a server frame, messages carry their id in
// the event's "id:" field, and the last event of a stream is
//
//	{"type":"close","code":<close code>,"reason":"…"}
//
// with the code a WebSocket would have been closed with. A stream is
// push-only: it takes no client frames.
package protocol
