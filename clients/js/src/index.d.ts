// Hand-written types of @wsfleet/client (src/index.js). The frames mirror the
// Go package protocol of wsfleet (protocol/frames.go).

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

export interface ConnectOptions {
  /** The gateway's WebSocket URL, e.g. "wss://ws.example.com/ws" (or a function returning it, called per dial). */
  url: string | (() => string);
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
 * "token_failed" (token() threw), "connect_failed" (the WebSocket constructor threw).
 */
export interface ErrorEvent {
  code: string;
  reason?: string;
  topic?: string;
  /** The WebSocket close code, for "unauthorized" and "kicked". */
  closeCode?: number;
}

/** Resume outcome: scope "connection" (the welcome) or "topic" (a subscribed frame). */
export interface RecoveryEvent {
  scope: 'connection' | 'topic';
  topic?: string;
  position?: string;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  /** Whether the lost connection had been welcomed. */
  welcomed: boolean;
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
  /** An in-band token refresh was accepted; exp in unix seconds. */
  refreshed: { exp: number };
  /** The node asked to move ({"type":"reconnect"}); the client already is. */
  reconnect: { reason?: string };
  disconnected: DisconnectedEvent;
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
  readonly state: ClientState;
  /** The connection's resume point (user and broadcast messages), or null. */
  readonly lastId: string | null;
  /** Tracked topics and their resume points. */
  readonly topics: Map<string, string | null>;
  /** Sends {"type":"publish",...}; false when no connection is open (nothing is queued). */
  publish(data: unknown, opts?: { topic?: string }): boolean;
  /** Subscribes now or once welcomed, and again after every reconnect. */
  subscribe(topic: string, opts?: SubscribeOptions): Promise<SubscribedFrame>;
  /** Stops tracking the topic; resolves on the answer (at once when not connected). */
  unsubscribe(topic: string): Promise<UnsubscribedEvent | void>;
  /** Closes with 1000 and stops reconnecting. */
  close(): void;
}

/** Connects and keeps connected until close(). */
export function connect(options: ConnectOptions): Client;
export default connect;

/** The exp claim (unix seconds) of a JWT, decoded without verification, or null. */
export function jwtExp(token: string): number | null;

/** Whether an id is a stream sequence (1-20 decimal digits). */
export function isSeqId(id: unknown): id is string;
