// Hand-written types of @wsfleet/client (src/index.js). The frames mirror the
// Go package protocol of wsfleet (protocol/frames.go); the SSE transport
// carries the same objects, one per event.

/** What the client needs of a WebSocket: the browser API, or the "ws" package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Where the client learns that the device went offline or came back. */
export interface OnlineSource {
  isOnline(): boolean;
  addEventListener(type: 'online' | 'offline', fn: () => void): void;
  removeEventListener(type: 'online' | 'offline', fn: () => void): void;
}

/** The transport a connection uses: a WebSocket, or server-sent events (GET /sse, push only). */
export type Transport = 'websocket' | 'sse';

/** What the SSE transport hands to fetch. */
export interface SseRequestInit {
  method: 'GET';
  headers: { Accept: string; Authorization: string };
  signal: AbortSignal;
}

/** What the SSE transport needs of fetch's Response (the standard one has it all). */
export interface SseResponseLike {
  readonly status: number;
  readonly statusText?: string;
  readonly headers: { get(name: string): string | null };
  readonly body: {
    getReader(): { read(): Promise<{ done: boolean; value?: Uint8Array }> };
    cancel?(reason?: unknown): Promise<void>;
  } | null;
  text(): Promise<string>;
}

export type FetchLike = (url: string, init: SseRequestInit) => Promise<SseResponseLike>;

export interface ConnectOptions {
  /**
   * The gateway's WebSocket URL, e.g. "wss://ws.example.com/ws" (or a
   * function returning it, called per dial). The SSE URL is derived from it
   * (see sseUrlFor) unless sseUrl is given. Required, except with transport
   * "sse" and an sseUrl.
   */
  url?: string | (() => string);
  /**
   * "auto" (default): WebSocket when a constructor exists (options.WebSocket
   * or the global one), SSE when none does, and SSE for good once
   * fallbackAfter WebSockets in a row failed to open (closed, errored or
   * timed out before "open") while none of this client ever opened.
   * "websocket" or "sse": that transport only.
   */
  transport?: Transport | 'auto';
  /** transport "auto": WebSockets in a row that fail to open before falling back to SSE. Default 2. */
  fallbackAfter?: number;
  /** The gateway's SSE URL, e.g. "https://ws.example.com/sse" (or a function returning it, called per request). */
  sseUrl?: string | (() => string);
  /** fetch for the SSE transport; defaults to globalThis.fetch. */
  fetch?: FetchLike;
  /**
   * Returns a connection token (a JWT). Called for every new connection,
   * before the token's exp to refresh it in-band, and after a 4401/4403 close:
   * returning the same token as the refused one stops the client.
   */
  token: () => string | Promise<string>;
  /** WebSocket constructor; defaults to globalThis.WebSocket (Node 20 has none: pass the "ws" package's). */
  WebSocket?: WebSocketConstructor;
  /** Subprotocols to offer (the gateway selects "wsfleet.v1"); none by default. */
  protocols?: string | string[];
  /** Added to two heartbeat intervals of silence before a connection counts as dead. Default 2000. */
  heartbeatGraceMs?: number;
  /** How long a new connection may take to be welcomed. Default 20000. */
  connectTimeoutMs?: number;
  /** Full-jitter exponential backoff: a delay in [0, min(maxMs, baseMs * 2^attempt)). Default 500 / 30000. */
  backoff?: { baseMs?: number; maxMs?: number };
  /**
   * true (default): use navigator.onLine and the global "online"/"offline"
   * events when they exist (browsers, workers); false: never; or a source.
   */
  onlineEvents?: boolean | OnlineSource;
  /** How many recent message ids are remembered to drop duplicates. Default 1024. */
  dedupeSize?: number;
  /** Timer and randomness hooks, for tests. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  now?: () => number;
  random?: () => number;
}

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** {"type":"welcome",...} */
export interface WelcomeFrame {
  type: 'welcome';
  user: string;
  conn_id: string;
  node: string;
  /** Seconds between server pings. */
  heartbeat: number;
  /** With resumable delivery: the id the connection is covered from. */
  position?: string;
  /** Answers a "since": false means history no longer holds everything after it. */
  recovered?: boolean;
}

/** A delivery. id is a decimal stream sequence when the gateway runs with --resume. */
export interface Message<T = unknown> {
  id?: string;
  data: T;
  /** Set on a topic's messages. */
  topic?: string;
}

/** {"type":"subscribed",...} */
export interface SubscribedFrame {
  type: 'subscribed';
  topic: string;
  position?: string;
  recovered?: boolean;
}

/** {"type":"unsubscribed",...}; reason set when the node (or a refused resubscribe) ended it. */
export interface UnsubscribedEvent {
  type: 'unsubscribed';
  topic: string;
  reason?: string;
  /** The error code, when a resubscribe after a reconnect was refused. */
  code?: string;
}

/**
 * An error frame from the gateway (code "forbidden", "bad_topic",
 * "rate_limited", ...), or one of the client's own:
 * "unauthorized"/"kicked" (4401/4403 and no new token: the client stopped),
 * "token_failed" (token() threw), "connect_failed" (the WebSocket
 * constructor threw, or the SSE URL is not a URL).
 *
 * With status: an SSE request the gateway refused with that HTTP status and
 * code ("bad_since", "origin_not_allowed", ..., or "http_<status>" without
 * the gateway's JSON body). Asking again the same way cannot work, so the
 * client stopped ("closed"); except for "bad_topic"/"too_many_topics" naming
 * a topic (topic set): that topic was refused, the client goes on without it.
 */
export interface ErrorEvent {
  code: string;
  reason?: string;
  topic?: string;
  /** The WebSocket close code, for "unauthorized" and "kicked". */
  closeCode?: number;
  /** The HTTP status of a refused SSE request. */
  status?: number;
}

/** Resume outcome: scope "connection" (the welcome) or "topic" (a subscribed frame). */
export interface RecoveryEvent {
  scope: 'connection' | 'topic';
  topic?: string;
  position?: string;
}

export interface DisconnectedEvent {
  /**
   * The close code (on SSE: of the close event; 1006 when the stream ended
   * without one; for a refused request, the code it is handled as: 4401 for
   * 401, 1013 for 503/408/429, 1006 for other 5xx, 1008 for the rest).
   */
  code: number;
  reason: string;
  /** Whether the lost connection had been welcomed. */
  welcomed: boolean;
  transport: Transport;
  /** The HTTP status of a refused SSE request. */
  status?: number;
}

/** The client switched transports (transport "auto" after WebSockets failed to open). */
export interface TransportEvent {
  transport: Transport;
  previous: Transport;
  reason: string;
}

/** The second argument of "state" listeners. */
export interface StateInfo {
  /** The transport new connections use. */
  transport: Transport;
}

export interface ClientEvents {
  state: ClientState;
  welcome: WelcomeFrame;
  message: Message;
  subscribed: SubscribedFrame;
  unsubscribed: UnsubscribedEvent;
  error: ErrorEvent;
  /** recovered:true: everything after since follows. */
  recovered: RecoveryEvent;
  /** recovered:false: reload the state of the connection (user messages) or of the topic. */
  unrecovered: RecoveryEvent;
  /**
   * An in-band token refresh was accepted (on SSE: a stream with a new
   * token replaced the previous one); exp in unix seconds.
   */
  refreshed: { exp: number };
  /** The node asked to move ({"type":"reconnect"}); the client already is. */
  reconnect: { reason?: string };
  disconnected: DisconnectedEvent;
  transport: TransportEvent;
}

export class Emitter<Events extends Record<string, any> = ClientEvents> {
  /** Adds a listener; returns a function removing it. */
  on<K extends keyof Events & string>(event: K, fn: (arg: Events[K]) => void): () => void;
  off<K extends keyof Events & string>(event: K, fn: (arg: Events[K]) => void): void;
  once<K extends keyof Events & string>(event: K, fn: (arg: Events[K]) => void): () => void;
  emit<K extends keyof Events & string>(event: K, arg: Events[K]): void;
}

export interface SubscribeOptions {
  /** A subscription token (JWT with sub and topic claims), or a function returning a fresh one for every (re)subscribe. */
  token?: string | (() => string | Promise<string>);
  /** A resume point to start from (a message id of this topic). */
  since?: string;
}

export class Client extends Emitter<ClientEvents> {
  /** Same as connect(options). */
  constructor(options: ConnectOptions);
  /** "state" listeners also get the transport in use. */
  on(event: 'state', fn: (state: ClientState, info: StateInfo) => void): () => void;
  on<K extends keyof ClientEvents & string>(event: K, fn: (arg: ClientEvents[K]) => void): () => void;
  once(event: 'state', fn: (state: ClientState, info: StateInfo) => void): () => void;
  once<K extends keyof ClientEvents & string>(event: K, fn: (arg: ClientEvents[K]) => void): () => void;
  off(event: 'state', fn: (state: ClientState, info: StateInfo) => void): void;
  off<K extends keyof ClientEvents & string>(event: K, fn: (arg: ClientEvents[K]) => void): void;
  readonly state: ClientState;
  /** The transport new connections use ("auto" starts with "websocket" when it can, and may turn "sse"). */
  readonly transport: Transport;
  /** The connection's resume point (user and broadcast messages), or null. */
  readonly lastId: string | null;
  /** Tracked topics and their resume points. */
  readonly topics: Map<string, string | null>;
  /**
   * Sends {"type":"publish",...}; false when no connection is open (nothing
   * is queued). Throws an Error with code "publish_unsupported" on the SSE
   * transport (push only: publish through the router).
   */
  publish(data: unknown, opts?: { topic?: string }): boolean;
  /**
   * Subscribes now or once welcomed, and again after every reconnect. On
   * SSE: reopens the stream with the topic (make before break); rejects at
   * once (code "bad_topic") for a name outside A-Z a-z 0-9 _ - : . and (code
   * "token_unsupported") with a subscription token.
   */
  subscribe(topic: string, opts?: SubscribeOptions): Promise<SubscribedFrame>;
  /**
   * Stops tracking the topic; resolves on the answer (on SSE: once a stream
   * without the topic is welcomed; at once when not connected).
   */
  unsubscribe(topic: string): Promise<UnsubscribedEvent | void>;
  /** Closes with 1000 (on SSE: aborts the request) and stops reconnecting. */
  close(): void;
}

/** Connects and keeps connected until close(). */
export function connect(options: ConnectOptions): Client;
export default connect;

/**
 * The SSE URL of a gateway WebSocket URL: ws: → http:, wss: → https:, a
 * path ending in /ws → the same ending in /sse (any other path → /sse);
 * the query is kept.
 */
export function sseUrlFor(wsUrl: string): string;

/** An event of a text/event-stream. */
export interface SseEvent {
  data: string;
  /** The "event" field, "message" by default. */
  event: string;
  /** The last event id of the stream. */
  id: string;
}

/**
 * An incremental text/event-stream parser (the HTML standard's rules):
 * chunks may be split anywhere, including inside CRLF and UTF-8 sequences.
 */
export class SseParser {
  constructor(onEvent: (ev: SseEvent) => void);
  /** The last "id" field seen. */
  lastEventId: string;
  /** The last valid "retry" field (ms), or null. */
  retry: number | null;
  /** Parses a chunk of the body. */
  push(chunk: Uint8Array | string): void;
  /** The body ended: an incomplete last event is discarded. */
  end(): void;
}

/** The exp claim (unix seconds) of a JWT, decoded without verification, or null. */
export function jwtExp(token: string): number | null;

/** Whether an id is a stream sequence (1-20 decimal digits). */
export function isSeqId(id: unknown): id is string;
