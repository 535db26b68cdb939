// @wsfleet/client: a client for a wsfleet gateway fleet, over WebSocket or
// server-sent events (SSE).
//
// The wire protocol is defined by the Go package protocol (protocol/doc.go,
// frames.go, close.go in the wsfleet repository); this file follows it. The
// SSE transport (GET /sse) carries the same JSON objects as the WebSocket's
// text frames, one per event, push only, with {"type":"close","code":…}
// standing for the WebSocket close frame.
//
// What lives where in this file:
//   - Emitter         a minimal on/off/once event emitter the client extends
//   - RecentIds       a bounded set of recently delivered message ids (dedupe)
//   - helpers         id comparison (decimal stream sequences), JWT exp decoding
//   - SseParser       an incremental text/event-stream parser (bytes in, events out)
//   - Client          the connection manager:
//       transports    "websocket" or "sse"; "auto" falls back to SSE when
//                     WebSockets never open (#noteOpenFailure)
//       dialing       #dial, #onOpen: a socket, then the auth frame (with since);
//                     #runSse: fetch GET /sse with since and topics@position
//       frames        #onFrame: welcome, ping, message, subscribed, ...
//       losing        #lost, #afterLoss: close codes decide how to reconnect
//       backoff       #scheduleRetry: full-jitter exponential backoff
//       heartbeats    #armSilence: two heartbeats of silence mean a dead socket
//       refresh       #scheduleRefresh: in-band auth before the token's exp
//       topics        subscribe/unsubscribe, per-topic resume points; on SSE
//                     a topic change reopens the stream (#sseTopicsChanged)
//       online        navigator.onLine / "online" / "offline" handling
//   - connect         the public entry point
//
// A client holds up to three connections at once:
//   active    welcomed; frames are sent on it and it delivers
//   draining  the previous active after a {"type":"reconnect"} notice: it keeps
//             delivering until the next connection is welcomed (make before break)
//   dialing   opened (or opening), not welcomed yet
//
// A connection is a WebSocket or an SSE stream (conn.transport). An SSE
// stream cannot carry frames from the client: subscribing, unsubscribing and
// refreshing the token open a new stream that replaces the active one once
// welcomed (make before break, like the reconnect notice).

/** WebSocket readyState OPEN. */
const WS_OPEN = 1;

/** Close code this client uses when it gives up on a connection it considers dead. */
const CLOSE_CLIENT_TIMEOUT = 4000;

/** Close codes after which reconnecting needs a token other than the one refused. */
const AUTH_CLOSE_CODES = new Set([4401, 4403]);

/** Close code an SSE request refused for good (403, 404, 400, ...) is reported with. */
const CLOSE_POLICY_VIOLATION = 1008;

/** Topic names an SSE request can carry in ?topics= (the gateway's alphabet). */
const SSE_TOPIC_RE = /^[A-Za-z0-9_.:-]+$/;

/** Codes of a 400 answer to an SSE request that a topic of the request caused. */
const SSE_TOPIC_REFUSALS = new Set(['bad_topic', 'too_many_topics']);

const TRANSPORTS = new Set(['websocket', 'sse', 'auto']);

const DEFAULTS = {
  heartbeatGraceMs: 2000,
  connectTimeoutMs: 20000,
  backoff: { baseMs: 500, maxMs: 30000 },
  dedupeSize: 1024,
  refreshMinLeadMs: 5000,
  refreshFraction: 0.8,
  fallbackAfter: 2,
};

// ---------------------------------------------------------------------------
// Emitter

/** A minimal event emitter: on/off/once. Listener errors never break the client. */
export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Removes a listener added with on or once. */
  off(event, fn) {
    const set = this.#listeners.get(event);
    if (!set) return;
    set.delete(fn);
    for (const f of set) if (f.__wsfleetOnce === fn) set.delete(f);
  }

  /** Adds a listener called once. */
  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    wrapper.__wsfleetOnce = fn;
    return this.on(event, wrapper);
  }

  /** Calls every listener of event with the arguments. A listener that
   * throws is reported asynchronously (as an uncaught error) so that the
   * client's own state stays consistent. */
  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------
// RecentIds

/** A bounded set of recent keys, oldest evicted first. */
class RecentIds {
  #set = new Set();
  #max;
  constructor(max) {
    this.#max = max;
  }
  /** Adds key; returns false if it was already there. */
  add(key) {
    if (this.#set.has(key)) return false;
    this.#set.add(key);
    if (this.#set.size > this.#max) {
      this.#set.delete(this.#set.values().next().value);
    }
    return true;
  }
}

// ---------------------------------------------------------------------------
// helpers

/** Ids of a gateway with resumable delivery are stream sequences: 1-20 digits. */
export function isSeqId(id) {
  return typeof id === 'string' && /^[0-9]{1,20}$/.test(id);
}

/** Compares two decimal sequence ids numerically (-1, 0, 1) without BigInt. */
function compareSeq(a, b) {
  const x = a.replace(/^0+(?=.)/, '');
  const y = b.replace(/^0+(?=.)/, '');
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The higher of a resume point (may be null) and a sequence id. */
function maxSeq(current, id) {
  if (current == null || compareSeq(id, current) > 0) return id;
  return current;
}

/**
 * Returns the "exp" claim of a JWT (unix seconds) or null. The token is
 * decoded, not verified: the client only needs to know when to refresh it.
 */
export function jwtExp(token) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length < 2) return null;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(b64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch {
    return null;
  }
}

/** The shortest delay between two token refreshes. */
const MIN_REFRESH_DELAY_MS = 1000;

/** setTimeout takes at most 2^31-1 ms; longer delays fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The browser's online/offline source, or null outside a browser-like global. */
function defaultOnlineSource() {
  const g = globalThis;
  if (typeof g.addEventListener !== 'function' || typeof g.removeEventListener !== 'function') return null;
  const nav = g.navigator;
  if (typeof nav !== 'object' || nav === null || typeof nav.onLine !== 'boolean') return null;
  return {
    isOnline: () => nav.onLine !== false,
    addEventListener: (type, fn) => g.addEventListener(type, fn),
    removeEventListener: (type, fn) => g.removeEventListener(type, fn),
  };
}

/** Turns a WebSocket message event's data into text. */
function frameText(data) {
  if (typeof data === 'string') return data;
  // Not the protocol (JSON text frames), but decode what a wrapper may hand over.
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}

/**
 * The gateway's SSE URL for its WebSocket URL: ws: becomes http:, wss:
 * becomes https:, and the path's last segment "ws" becomes "sse" (any other
 * path becomes /sse). The query is kept.
 */
export function sseUrlFor(wsUrl) {
  const base = typeof globalThis.location?.href === 'string' ? globalThis.location.href : undefined;
  const u = new URL(wsUrl, base);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  u.pathname = u.pathname.endsWith('/ws') ? `${u.pathname.slice(0, -3)}/sse` : '/sse';
  u.hash = '';
  return u.toString();
}

/** A Retry-After header (seconds or an HTTP date) in ms from now, or 0. */
function retryAfterMs(value, now) {
  if (typeof value !== 'string' || value.trim() === '') return 0;
  const v = value.trim();
  if (/^[0-9]+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : 0;
}

/** An error with a code (and more fields) for promise rejections and throws. */
function codedError(message, fields) {
  return Object.assign(new Error(`wsfleet: ${message}`), fields);
}

// ---------------------------------------------------------------------------
// SseParser

/**
 * An incremental parser of a text/event-stream body, as the HTML standard's
 * "event stream interpretation" describes it: push() takes the body's bytes
 * in chunks split anywhere (inside a CRLF, inside a UTF-8 sequence), and
 * every event (an empty line after one or more data lines) is handed to
 * onEvent as {data, event, id}. Comment lines (":…") are skipped, "retry"
 * is kept in retry, a leading BOM is dropped, and an event the stream ends
 * in the middle of is discarded.
 */
export class SseParser {
  #onEvent;
  #decoder = new TextDecoder('utf-8'); // drops a leading BOM
  #line = ''; // the start of a line whose end has not arrived
  #afterCR = false; // the last text ended with CR: a LF first in the next one ends no line
  #data = '';
  #event = '';
  /** The last event id (the "last event ID buffer"). */
  lastEventId = '';
  /** The stream's "retry" (ms), or null. */
  retry = null;

  constructor(onEvent) {
    this.#onEvent = onEvent;
  }

  /** Parses a chunk of the body (a Uint8Array, or a string already decoded). */
  push(chunk) {
    this.#feed(typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true }));
  }

  /** The body ended: what is left is an incomplete event, which is discarded. */
  end() {
    this.#decoder.decode();
    this.#line = '';
    this.#data = '';
    this.#event = '';
  }

  #feed(text) {
    const n = text.length;
    if (n === 0) return;
    let i = 0;
    if (this.#afterCR) {
      this.#afterCR = false;
      if (text.charCodeAt(0) === 10) i = 1;
    }
    while (i < n) {
      let j = i;
      while (j < n) {
        const c = text.charCodeAt(j);
        if (c === 10 || c === 13) break;
        j++;
      }
      if (j === n) {
        this.#line += text.slice(i);
        return;
      }
      const line = this.#line === '' ? text.slice(i, j) : this.#line + text.slice(i, j);
      this.#line = '';
      if (text.charCodeAt(j) === 13) {
        if (j + 1 === n) this.#afterCR = true;
        else if (text.charCodeAt(j + 1) === 10) j++;
      }
      i = j + 1;
      this.#processLine(line);
    }
  }

  #processLine(line) {
    if (line === '') {
      this.#dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' a comment
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + (line.charCodeAt(colon + 1) === 32 ? 2 : 1));
    }
    switch (field) {
      case 'data':
        this.#data += `${value}\n`;
        break;
      case 'event':
        this.#event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  #dispatch() {
    if (this.#data === '') {
      this.#event = '';
      return;
    }
    const data = this.#data.slice(0, -1);
    const event = this.#event || 'message';
    this.#data = '';
    this.#event = '';
    this.#onEvent({ data, event, id: this.lastEventId });
  }
}

// ---------------------------------------------------------------------------
// Client

/**
 * A connection to a wsfleet gateway that authenticates, answers heartbeats,
 * refreshes its token, reconnects and resumes, over a WebSocket or an SSE
 * stream. Create it with connect().
 */
export class Client extends Emitter {
  // options
  #url;
  #sseUrl;
  #tokenFn;
  #WebSocket;
  #fetch;
  #transportOpt; // 'websocket' | 'sse' | 'auto'
  #fallbackAfter;
  #protocols;
  #graceMs;
  #connectTimeoutMs;
  #backoff;
  #setTimeout;
  #clearTimeout;
  #now;
  #random;
  #online; // {isOnline, addEventListener, removeEventListener} or null
  #onOnline = () => this.#handleOnline();
  #onOffline = () => this.#handleOffline();

  // connections (see the comment at the top of the file)
  #active = null;
  #draining = null;
  #dialing = null;

  // transport
  #transport; // 'websocket' | 'sse': the one new connections use
  #wsOpenFailures = 0; // WebSockets in a row that closed before "open"
  #wsEverOpened = false;
  #sseRefreshWanted = false; // an SSE stream with a fresh token should replace the active one

  // lifecycle
  #state = 'connecting';
  #closed = false;
  #everOpen = false;
  #attempt = 0; // failed attempts since the last welcome
  #immediateUsed = false; // a 1012 reconnect at once was used since the last welcome
  #retryTimer = null;
  #waitingOnline = false; // a reconnect waits for the "online" event
  #reauthing = false; // after a 4401, token() is being asked for a new token
  #prefetchedToken = null; // the new token got after a 4401, used by the next dial

  // token refresh
  #refreshTimer = null;

  // delivery
  #lastId = null; // resume point of the connection (user + broadcast messages)
  #head = null; // the highest id or position seen of any kind: where a new SSE topic starts
  #seen;
  /** @type {Map<string, {since: string|null, token: any, confirmed: boolean, everConfirmed: boolean, sentOn: object|null, last: object|null, waiters: Array<{resolve: Function, reject: Function}>}>} */
  #topics = new Map();
  #unsubWaiters = new Map(); // topic -> resolve functions

  constructor(options) {
    super();
    const isUrl = (u) => typeof u === 'string' || typeof u === 'function';
    const transportOpt = options?.transport ?? 'auto';
    if (!TRANSPORTS.has(transportOpt)) {
      throw new TypeError(`wsfleet: options.transport must be "websocket", "sse" or "auto", not ${JSON.stringify(transportOpt)}`);
    }
    if (!options || !(isUrl(options.url) || (transportOpt === 'sse' && isUrl(options.sseUrl)))) {
      throw new TypeError('wsfleet: options.url (string or function) is required');
    }
    if (options.sseUrl != null && !isUrl(options.sseUrl)) {
      throw new TypeError('wsfleet: options.sseUrl must be a string or a function');
    }
    if (typeof options.token !== 'function') {
      throw new TypeError('wsfleet: options.token (a function returning a token) is required');
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    const fetchFn = options.fetch ?? (typeof globalThis.fetch === 'function' ? (url, init) => globalThis.fetch(url, init) : undefined);
    const hasWS = typeof WS === 'function';
    const hasFetch = typeof fetchFn === 'function';
    if (transportOpt === 'websocket' && !hasWS) {
      throw new TypeError('wsfleet: no global WebSocket; pass options.WebSocket (for example from the "ws" package)');
    }
    if (transportOpt === 'sse' && !hasFetch) {
      throw new TypeError('wsfleet: the SSE transport needs fetch; pass options.fetch');
    }
    if (transportOpt === 'auto' && !hasWS && !hasFetch) {
      throw new TypeError('wsfleet: neither a WebSocket nor fetch is available; pass options.WebSocket or options.fetch');
    }
    this.#url = options.url;
    this.#sseUrl = options.sseUrl ?? null;
    this.#tokenFn = options.token;
    this.#WebSocket = hasWS ? WS : null;
    this.#fetch = hasFetch ? fetchFn : null;
    this.#transportOpt = transportOpt;
    this.#transport = transportOpt === 'sse' || (transportOpt === 'auto' && !hasWS) ? 'sse' : 'websocket';
    this.#fallbackAfter = options.fallbackAfter ?? DEFAULTS.fallbackAfter;
    this.#protocols = options.protocols;
    this.#graceMs = options.heartbeatGraceMs ?? DEFAULTS.heartbeatGraceMs;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    this.#backoff = {
      baseMs: options.backoff?.baseMs ?? DEFAULTS.backoff.baseMs,
      maxMs: options.backoff?.maxMs ?? DEFAULTS.backoff.maxMs,
    };
    const st = options.setTimeout ?? ((fn, ms) => setTimeout(fn, ms));
    const ct = options.clearTimeout ?? ((id) => clearTimeout(id));
    this.#setTimeout = (fn, ms) => st(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    this.#clearTimeout = ct;
    this.#now = options.now ?? (() => Date.now());
    this.#random = options.random ?? Math.random;
    this.#seen = new RecentIds(options.dedupeSize ?? DEFAULTS.dedupeSize);

    const onlineOpt = options.onlineEvents ?? true;
    this.#online = onlineOpt === true ? defaultOnlineSource() : onlineOpt || null;
    if (this.#online) {
      this.#online.addEventListener('online', this.#onOnline);
      this.#online.addEventListener('offline', this.#onOffline);
    }

    // Dial on the next microtask so that the caller can add listeners first.
    queueMicrotask(() => this.#dial());
  }

  // -- public API -----------------------------------------------------------

  /** "connecting" (before the first welcome), "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  /** The connection's resume point: the highest id received (or the welcome's position). */
  get lastId() {
    return this.#lastId;
  }

  /** The tracked topics and their resume points. */
  get topics() {
    const out = new Map();
    for (const [topic, t] of this.#topics) out.set(topic, t.since);
    return out;
  }

  /**
   * The transport new connections use: "websocket" or "sse". With the
   * "auto" option it starts as "websocket" (when a WebSocket constructor
   * exists) and turns "sse" for good after fallbackAfter WebSockets in a
   * row failed to open (the "transport" event says so).
   */
  get transport() {
    return this.#transport;
  }

  /**
   * Sends a publish frame. Returns true if it was written to an open
   * connection, false if there is none (nothing is queued). Throws (code
   * "publish_unsupported") on the SSE transport, which is push only.
   */
  publish(data, opts = {}) {
    if (this.#transport === 'sse') {
      throw codedError('publish needs the WebSocket transport (this client uses server-sent events, which are push only); publish through the router instead', { code: 'publish_unsupported', transport: 'sse' });
    }
    const frame = { type: 'publish', data: data === undefined ? null : data };
    if (opts.topic) frame.topic = opts.topic;
    const conn = this.#active ?? this.#draining;
    return conn ? this.#send(conn, frame) : false;
  }

  /**
   * Subscribes to a topic, now or as soon as a connection is welcomed, and
   * again after every reconnect (with the topic's resume point as since).
   * Resolves with the "subscribed" frame; rejects on an error frame naming
   * the topic, on unsubscribe() or on close().
   */
  subscribe(topic, opts = {}) {
    if (typeof topic !== 'string' || topic === '') return Promise.reject(new TypeError('wsfleet: topic must be a non-empty string'));
    if (this.#closed) return Promise.reject(closedError());
    const sse = this.#transport === 'sse';
    if (sse && !SSE_TOPIC_RE.test(topic)) {
      return Promise.reject(codedError(`subscribe ${topic}: bad_topic: a topic name of the SSE transport has only A-Z a-z 0-9 _ - : and .`, { code: 'bad_topic', topic }));
    }
    if (sse && opts.token !== undefined) {
      return Promise.reject(codedError(`subscribe ${topic}: subscription tokens need the WebSocket transport (this client uses server-sent events)`, { code: 'token_unsupported', topic, transport: 'sse' }));
    }
    let t = this.#topics.get(topic);
    if (!t) {
      t = { since: null, token: undefined, confirmed: false, everConfirmed: false, sentOn: null, last: null, waiters: [] };
      this.#topics.set(topic, t);
    }
    if (opts.token !== undefined) t.token = opts.token;
    if (typeof opts.since === 'string' && isSeqId(opts.since)) t.since = opts.since;
    const p = new Promise((resolve, reject) => t.waiters.push({ resolve, reject }));
    if (sse) {
      // Already held by the stream that delivers: nothing to reopen.
      if (t.confirmed && t.last && this.#active?.topics?.has(topic)) {
        const waiters = t.waiters;
        t.waiters = [];
        for (const w of waiters) w.resolve(t.last);
      } else {
        this.#sseTopicsChanged();
      }
    } else if (this.#active) {
      this.#sendSubscribe(this.#active, topic, t);
    }
    return p;
  }

  /**
   * Stops tracking a topic and unsubscribes from it. Resolves on the
   * "unsubscribed" answer (on SSE: once a stream without the topic is
   * welcomed), or at once when no connection is open.
   */
  unsubscribe(topic) {
    const t = this.#topics.get(topic);
    if (t) {
      this.#topics.delete(topic);
      for (const w of t.waiters) w.reject(Object.assign(new Error(`wsfleet: unsubscribed from ${topic}`), { code: 'unsubscribed', topic }));
    }
    if (this.#transport === 'sse') {
      const held = [this.#active, this.#draining, this.#dialing].some((c) => c?.topics?.has(topic));
      if (this.#closed || !held) return Promise.resolve();
      const p = new Promise((resolve) => {
        const list = this.#unsubWaiters.get(topic) ?? [];
        list.push(resolve);
        this.#unsubWaiters.set(topic, list);
      });
      this.#sseTopicsChanged();
      return p;
    }
    const conn = this.#active ?? this.#draining;
    if (!conn || !this.#send(conn, { type: 'unsubscribe', topic })) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#unsubWaiters.get(topic) ?? [];
      list.push(resolve);
      this.#unsubWaiters.set(topic, list);
    });
  }

  /** Closes every connection with 1000 and stops reconnecting. */
  close() {
    this.#shutdown();
  }

  // -- state ----------------------------------------------------------------

  #updateState() {
    let next;
    if (this.#closed) next = 'closed';
    else if (this.#active || this.#draining) next = 'open';
    else next = this.#everOpen ? 'reconnecting' : 'connecting';
    if (next !== this.#state) {
      this.#state = next;
      this.emit('state', next, { transport: this.#transport });
    }
  }

  #shutdown() {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearRetry();
    this.#clearRefresh();
    for (const conn of [this.#active, this.#draining, this.#dialing]) {
      if (conn) this.#closeConn(conn, 1000, 'client closed');
    }
    this.#active = this.#draining = this.#dialing = null;
    if (this.#online) {
      this.#online.removeEventListener('online', this.#onOnline);
      this.#online.removeEventListener('offline', this.#onOffline);
    }
    for (const t of this.#topics.values()) {
      for (const w of t.waiters) w.reject(closedError());
      t.waiters = [];
    }
    for (const list of this.#unsubWaiters.values()) for (const resolve of list) resolve();
    this.#unsubWaiters.clear();
    this.#updateState();
  }

  // -- dialing --------------------------------------------------------------

  /**
   * Opens a new connection unless one is being dialed or the client is
   * closed; while offline it waits for "online" unless force is set.
   */
  #dial(force = false) {
    this.#clearRetry();
    if (this.#closed || this.#dialing) return;
    // An up-to-date connection delivers: nothing to dial (an SSE stream is
    // replaced when its topics or its token should change).
    if (this.#active && !this.#sseNeedsReopen()) return;
    if (!force && this.#online && !this.#online.isOnline()) {
      this.#waitingOnline = true;
      this.#updateState();
      return;
    }
    this.#waitingOnline = false;

    const conn = {
      transport: this.#transport,
      ws: null,
      abort: null, // SSE: the AbortController of the request
      topics: null, // SSE: the topics of the request, once it is sent
      opened: false, // the WebSocket opened / the SSE request was answered 200
      token: null, // the token sent in this connection's auth frame (or its last refresh)
      welcomed: false,
      dead: false,
      heartbeatMs: 0,
      lastSeen: 0,
      timer: null, // connect timeout before the welcome, silence check after
    };
    this.#dialing = conn;
    this.#updateState();

    // Ask for the token while the socket opens.
    const tokenPromise = this.#prefetchedToken !== null
      ? Promise.resolve(this.#prefetchedToken)
      : Promise.resolve().then(() => this.#tokenFn());
    this.#prefetchedToken = null;
    tokenPromise.catch(() => {}); // handled in #onOpen; the socket may never open

    conn.timer = this.#setTimeout(() => this.#lost(conn, CLOSE_CLIENT_TIMEOUT, 'no welcome in time'), this.#connectTimeoutMs);
    if (conn.transport === 'sse') {
      conn.abort = new AbortController();
      this.#runSse(conn, tokenPromise);
      return;
    }

    let ws;
    try {
      const url = typeof this.#url === 'function' ? this.#url() : this.#url;
      ws = this.#protocols ? new this.#WebSocket(url, this.#protocols) : new this.#WebSocket(url);
    } catch (err) {
      this.emit('error', { code: 'connect_failed', reason: String(err?.message ?? err) });
      this.#lost(conn, 1006, 'could not create the WebSocket');
      return;
    }
    conn.ws = ws;
    ws.onopen = () => {
      conn.opened = true;
      this.#wsEverOpened = true;
      this.#onOpen(conn, tokenPromise);
    };
    ws.onmessage = (ev) => this.#onFrame(conn, ev.data);
    ws.onclose = (ev) => this.#lost(conn, ev?.code ?? 1006, ev?.reason ?? '', true);
    ws.onerror = () => {}; // a close event follows
  }

  // -- the SSE transport ----------------------------------------------------

  /**
   * GET /sse with the token in the Authorization header, since and
   * topics@position in the query; then reads the event stream until it
   * ends, the client lets go of it (conn.abort) or a close event arrives.
   */
  async #runSse(conn, tokenPromise) {
    const token = await this.#tokenFor(conn, tokenPromise);
    if (token === null) return;

    let url;
    try {
      url = this.#sseRequestUrl(conn);
    } catch (err) {
      this.emit('error', { code: 'connect_failed', reason: String(err?.message ?? err) });
      this.#lost(conn, 1006, 'bad SSE URL');
      return;
    }

    let res;
    try {
      res = await this.#fetch(url, {
        method: 'GET',
        headers: { Accept: 'text/event-stream', Authorization: `Bearer ${token}` },
        signal: conn.abort.signal,
      });
    } catch (err) {
      if (conn.dead) return;
      this.#lost(conn, 1006, `request failed: ${err?.message ?? err}`, true);
      return;
    }
    if (conn.dead) {
      res.body?.cancel?.().catch(() => {});
      return;
    }
    if (res.status !== 200) {
      await this.#sseRefused(conn, res);
      return;
    }
    const type = res.headers.get('content-type') ?? '';
    if (!/^\s*text\/event-stream\s*(;|$)/i.test(type) || !res.body) {
      res.body?.cancel?.().catch(() => {});
      this.#lost(conn, 1006, `not an event stream (${type || 'no content type'})`, true);
      return;
    }
    conn.opened = true;
    conn.lastSeen = this.#now();

    const parser = new SseParser((ev) => this.#onFrame(conn, ev.data));
    let reader;
    try {
      reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (conn.dead) return;
        if (done) break;
        // Any byte counts as life, heartbeat comments included.
        conn.lastSeen = this.#now();
        parser.push(value);
        if (conn.dead) return;
      }
    } catch (err) {
      if (conn.dead) return;
      this.#lost(conn, 1006, `stream failed: ${err?.message ?? err}`, true);
      return;
    }
    parser.end();
    // The node ends a stream with a close event first; without one the
    // connection was lost (the WebSocket's abnormal closure).
    this.#lost(conn, 1006, 'stream ended without a close event', true);
  }

  /** The URL of an SSE request: since and every tracked topic with its resume point. */
  #sseRequestUrl(conn) {
    let base;
    if (this.#sseUrl !== null) {
      base = typeof this.#sseUrl === 'function' ? this.#sseUrl() : this.#sseUrl;
    } else {
      base = sseUrlFor(typeof this.#url === 'function' ? this.#url() : this.#url);
    }
    const u = new URL(base, typeof globalThis.location?.href === 'string' ? globalThis.location.href : undefined);
    u.searchParams.delete('token');
    if (this.#lastId !== null) u.searchParams.set('since', this.#lastId);
    else u.searchParams.delete('since');

    // Names the query cannot carry (subscribed over a WebSocket before a
    // fallback) are refused here, as the node would.
    for (const [topic, t] of [...this.#topics]) {
      if (!SSE_TOPIC_RE.test(topic)) this.#refuseTopic(topic, t, 'bad_topic', 'not a topic name of the SSE transport');
    }
    const parts = [];
    conn.topics = new Set();
    for (const [topic, t] of this.#topics) {
      // A topic without a point of its own would resume from since: a new
      // one starts from the newest id or position seen instead.
      const pos = t.since ?? this.#head;
      parts.push(pos === null ? topic : `${topic}@${pos}`);
      conn.topics.add(topic);
      t.sentOn = conn;
    }
    if (parts.length > 0) u.searchParams.set('topics', parts.join(','));
    else u.searchParams.delete('topics');
    return u.toString();
  }

  /** An SSE request answered with another status than 200. */
  async #sseRefused(conn, res) {
    const status = res.status;
    let body = null;
    try {
      body = JSON.parse(await res.text());
    } catch {
      // not the gateway's JSON: the status decides
    }
    if (conn.dead) return;
    const code = typeof body?.code === 'string' ? body.code : `http_${status}`;
    const reason = typeof body?.reason === 'string' ? body.reason : (res.statusText || `HTTP ${status}`);
    const extra = { status };
    if (status === 401) {
      // Like close 4401: a new token or stop.
      this.#lost(conn, 4401, reason, true, extra);
      return;
    }
    if (status === 503 || status === 408 || status === 429) {
      // Like close 1013: back off, at least for Retry-After.
      extra.retryAfterMs = retryAfterMs(res.headers.get('retry-after'), this.#now());
      this.#lost(conn, 1013, reason, true, extra);
      return;
    }
    if (status >= 500 || (status >= 200 && status < 300)) {
      this.#lost(conn, 1006, reason, true, extra);
      return;
    }
    if (status === 400 && SSE_TOPIC_REFUSALS.has(code)) {
      // A topic of the request: the ones never held yet are refused, and the
      // stream is requested again without them.
      const suspects = [...(conn.topics ?? [])].filter((topic) => this.#topics.get(topic)?.everConfirmed === false);
      if (suspects.length > 0) {
        for (const topic of suspects) {
          this.#refuseTopic(topic, this.#topics.get(topic), code, reason, status);
          conn.topics.delete(topic);
        }
        this.#lost(conn, 4400, reason, true, extra);
        return;
      }
    }
    // 400, 403, 404, 405, 431, ...: asking again the same way cannot work.
    extra.fatal = { code, reason, status };
    this.#lost(conn, CLOSE_POLICY_VIOLATION, reason, true, extra);
  }

  /** A tracked topic the gateway refuses (or would): it leaves the set, its subscribe rejects. */
  #refuseTopic(topic, t, code, reason, status) {
    if (!t || this.#topics.get(topic) !== t) return;
    this.#topics.delete(topic);
    const ev = { code, reason, topic };
    if (status !== undefined) ev.status = status;
    this.emit('error', ev);
    const err = codedError(`subscribe ${topic}: ${code}: ${reason ?? ''}`, { code, topic, reason });
    for (const w of t.waiters) w.reject(err);
    t.waiters = [];
    if (t.everConfirmed) this.emit('unsubscribed', { type: 'unsubscribed', topic, reason: reason ?? code, code });
  }

  /** Whether the active SSE stream should be replaced: other topics, or a fresh token. */
  #sseNeedsReopen() {
    const conn = this.#active;
    if (!conn || conn.transport !== 'sse' || conn.topics === null) return false;
    if (this.#sseRefreshWanted) return true;
    if (conn.topics.size !== this.#topics.size) return true;
    for (const topic of this.#topics.keys()) if (!conn.topics.has(topic)) return true;
    return false;
  }

  /** subscribe/unsubscribe on SSE: a stream with the new topic list replaces the current one. */
  #sseTopicsChanged() {
    if (this.#closed || this.#transport !== 'sse') return;
    const d = this.#dialing;
    if (d) {
      if (d.topics === null) return; // its request is not sent yet: it carries the new list
      const same = d.topics.size === this.#topics.size && [...this.#topics.keys()].every((topic) => d.topics.has(topic));
      if (same) return;
      // Not welcomed and asking for the old list: replace it.
      this.#dialing = null;
      this.#closeConn(d, 1000, 'topics changed');
    } else if (!this.#active || this.#retryTimer !== null || this.#reauthing || this.#waitingOnline) {
      // A reconnect is pending: it carries the new list.
      return;
    }
    this.#dial();
    this.#updateState();
  }

  /**
   * The token for a new connection, or null when token() failed (the
   * connection is then lost) or the connection died while it ran.
   */
  async #tokenFor(conn, tokenPromise) {
    let token;
    try {
      token = await tokenPromise;
    } catch (err) {
      if (!conn.dead) {
        this.emit('error', { code: 'token_failed', reason: String(err?.message ?? err) });
        this.#lost(conn, CLOSE_CLIENT_TIMEOUT, 'token() failed');
      }
      return null;
    }
    if (conn.dead) return null;
    conn.token = token;
    return token;
  }

  /** First-message authentication: {"type":"auth","token":…,"since":…}. */
  async #onOpen(conn, tokenPromise) {
    const token = await this.#tokenFor(conn, tokenPromise);
    if (token === null) return;
    const frame = { type: 'auth', token };
    if (this.#lastId !== null) frame.since = this.#lastId;
    this.#send(conn, frame);
  }

  #send(conn, frame) {
    const ws = conn.ws; // null on SSE: nothing can be sent
    if (!ws || conn.dead || ws.readyState !== WS_OPEN) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // -- frames ---------------------------------------------------------------

  #onFrame(conn, data) {
    if (conn.dead) return;
    conn.lastSeen = this.#now();
    let f;
    try {
      f = JSON.parse(frameText(data));
    } catch {
      return; // not a protocol frame
    }
    if (typeof f !== 'object' || f === null) return;
    switch (f.type) {
      case 'ping':
        this.#send(conn, { type: 'pong' });
        break;
      case 'welcome':
        this.#onWelcome(conn, f);
        break;
      case 'message':
        this.#onMessage(f);
        break;
      case 'reconnect':
        this.#onReconnectNotice(conn, f);
        break;
      case 'refreshed':
        this.emit('refreshed', { exp: f.exp });
        break;
      case 'subscribed':
        this.#onSubscribed(conn, f);
        break;
      case 'unsubscribed':
        this.#onUnsubscribed(conn, f);
        break;
      case 'error':
        this.#onErrorFrame(conn, f);
        break;
      case 'close':
        // SSE: what the WebSocket says with a close frame, last before the end.
        if (conn.transport === 'sse') {
          const code = Number.isInteger(f.code) ? f.code : 1006;
          this.#lost(conn, code, typeof f.reason === 'string' ? f.reason : '', true);
        }
        break;
      default:
        // pong and frame types this client does not know are ignored.
        break;
    }
  }

  #onWelcome(conn, f) {
    if (conn !== this.#dialing) return;
    this.#clearConnTimer(conn);
    conn.welcomed = true;
    this.#dialing = null;
    // Make before break: the draining connection delivered until now.
    if (this.#draining) {
      this.#closeConn(this.#draining, 1000, 'moved to a new connection');
      this.#draining = null;
    }
    // SSE: the stream this one replaces (other topics, a fresh token).
    const replaced = this.#active && this.#active !== conn ? this.#active : null;
    if (replaced) this.#closeConn(replaced, 1000, 'replaced');
    this.#active = conn;
    this.#everOpen = true;
    this.#attempt = 0;
    this.#immediateUsed = false;

    conn.heartbeatMs = typeof f.heartbeat === 'number' && f.heartbeat > 0 ? f.heartbeat * 1000 : 0;
    this.#armSilence(conn);

    // Resume point: "position" covers the connection before any message; with
    // recovered:false what came before it is lost, so it replaces the old one.
    if (isSeqId(f.position) && (this.#lastId === null || f.recovered === false)) this.#lastId = f.position;
    if (isSeqId(f.position)) this.#head = maxSeq(this.#head, f.position);

    this.#updateState();
    this.emit('welcome', f);
    if (f.recovered === true) this.emit('recovered', { scope: 'connection', position: f.position });
    if (f.recovered === false) this.emit('unrecovered', { scope: 'connection', position: f.position });

    if (conn.transport === 'sse') {
      this.#onSseWelcome(conn, replaced);
      return;
    }
    for (const [topic, t] of this.#topics) {
      t.confirmed = false;
      this.#sendSubscribe(conn, topic, t);
    }
    this.#scheduleRefresh(conn);
  }

  /** The request carried the topics: their "subscribed" events follow. */
  #onSseWelcome(conn, replaced) {
    this.#sseRefreshWanted = false;
    for (const [topic, t] of this.#topics) if (conn.topics.has(topic)) t.confirmed = false;
    // Unsubscribes are done once a stream without the topic delivers.
    for (const [topic, list] of [...this.#unsubWaiters]) {
      if (conn.topics.has(topic)) continue;
      this.#unsubWaiters.delete(topic);
      const f = { type: 'unsubscribed', topic };
      for (const resolve of list) resolve(f);
      this.emit('unsubscribed', f);
    }
    // A stream with a new token replaced the one of the old token.
    if (replaced && replaced.token !== conn.token) {
      const exp = jwtExp(conn.token);
      if (exp !== null) this.emit('refreshed', { exp });
    }
    this.#scheduleRefresh(conn);
    // Topics changed while this stream was being opened.
    if (this.#sseNeedsReopen()) this.#dial();
  }

  #onMessage(f) {
    const id = typeof f.id === 'string' ? f.id : undefined;
    const topic = typeof f.topic === 'string' && f.topic !== '' ? f.topic : undefined;
    // The same message may arrive on the draining and the new connection.
    if (id !== undefined && !this.#seen.add(`${topic ?? ''}\n${id}`)) return;
    if (isSeqId(id)) {
      this.#head = maxSeq(this.#head, id);
      if (topic === undefined) {
        this.#lastId = maxSeq(this.#lastId, id);
      } else {
        // A topic's messages resume per topic; they never move the
        // connection's point (that would skip user messages on resume).
        const t = this.#topics.get(topic);
        if (t) t.since = maxSeq(t.since, id);
      }
    }
    const msg = { id, data: f.data };
    if (topic !== undefined) msg.topic = topic;
    this.emit('message', msg);
  }

  /** {"type":"reconnect"}: dial a new connection now; the old one drains. */
  #onReconnectNotice(conn, f) {
    this.emit('reconnect', { reason: f.reason });
    if (conn !== this.#active) return;
    this.#clearRefresh();
    this.#active = null;
    if (this.#draining) this.#closeConn(this.#draining, 1000, 'superseded');
    this.#draining = conn;
    if (!this.#dialing) {
      // The node asks to move: no backoff, and do not wait for "online".
      this.#dial(true);
    }
    this.#updateState();
  }

  #onSubscribed(conn, f) {
    const topic = f.topic;
    const t = this.#topics.get(topic);
    if (isSeqId(f.position)) this.#head = maxSeq(this.#head, f.position);
    if (t) {
      if (t.sentOn === conn) t.sentOn = null;
      t.confirmed = true;
      t.everConfirmed = true;
      t.last = f;
      if (isSeqId(f.position) && (t.since === null || f.recovered === false)) t.since = f.position;
      const waiters = t.waiters;
      t.waiters = [];
      for (const w of waiters) w.resolve(f);
    }
    this.emit('subscribed', f);
    if (f.recovered === true) this.emit('recovered', { scope: 'topic', topic, position: f.position });
    if (f.recovered === false) this.emit('unrecovered', { scope: 'topic', topic, position: f.position });
  }

  #onUnsubscribed(conn, f) {
    const topic = f.topic;
    if (f.reason) {
      conn.topics?.delete(topic); // the stream no longer holds it: no reopen for it
      // The node ended the subscription: the topic is no longer tracked.
      const t = this.#topics.get(topic);
      if (t) {
        this.#topics.delete(topic);
        for (const w of t.waiters) w.reject(Object.assign(new Error(`wsfleet: ${topic}: ${f.reason}`), { code: 'unsubscribed', topic, reason: f.reason }));
      }
    }
    const list = this.#unsubWaiters.get(topic);
    if (list) {
      this.#unsubWaiters.delete(topic);
      for (const resolve of list) resolve(f);
    }
    this.emit('unsubscribed', f);
  }

  #onErrorFrame(conn, f) {
    this.emit('error', { code: f.code, reason: f.reason, topic: f.topic });
    const topic = f.topic;
    if (!topic) return;
    const t = this.#topics.get(topic);
    // An error naming a topic whose subscribe is unanswered refuses it.
    if (!t || t.sentOn !== conn) return;
    this.#topics.delete(topic);
    conn.topics?.delete(topic); // SSE: the stream does not hold it
    const err = Object.assign(new Error(`wsfleet: subscribe ${topic}: ${f.code}: ${f.reason ?? ''}`), { code: f.code, topic, reason: f.reason });
    for (const w of t.waiters) w.reject(err);
    // A topic held before a reconnect and refused now is lost: say so.
    if (t.everConfirmed) this.emit('unsubscribed', { type: 'unsubscribed', topic, reason: f.reason ?? f.code, code: f.code });
  }

  async #sendSubscribe(conn, topic, t) {
    const frame = { type: 'subscribe', topic };
    if (t.since !== null) frame.since = t.since;
    t.sentOn = conn;
    if (t.token !== undefined) {
      let tok = t.token;
      if (typeof tok === 'function') {
        try {
          tok = await tok();
        } catch (err) {
          this.emit('error', { code: 'token_failed', topic, reason: String(err?.message ?? err) });
          return;
        }
        // The topic may have changed meanwhile.
        if (this.#topics.get(topic) !== t || t.sentOn !== conn) return;
        if (t.since !== null) frame.since = t.since;
      }
      if (tok) frame.token = tok;
    }
    this.#send(conn, frame);
  }

  // -- losing a connection --------------------------------------------------

  /**
   * A connection closed (fromSocket: by the other side or the network), or
   * the client gave up on it. extra (SSE requests refused with an HTTP
   * status): {status, retryAfterMs, fatal}.
   */
  #lost(conn, code, reason, fromSocket = false, extra = {}) {
    if (conn.dead) return;
    this.#closeConn(conn, CLOSE_CLIENT_TIMEOUT, reason, !fromSocket);
    const wasActive = conn === this.#active;
    if (conn === this.#active) {
      this.#active = null;
      this.#clearRefresh();
    } else if (conn === this.#draining) {
      this.#draining = null;
    } else if (conn === this.#dialing) {
      this.#dialing = null;
    } else {
      return;
    }
    if (wasActive || conn.welcomed) {
      for (const t of this.#topics.values()) t.confirmed = false;
    }
    const ev = { code, reason, welcomed: conn.welcomed, transport: conn.transport };
    if (extra.status !== undefined) ev.status = extra.status;
    this.emit('disconnected', ev);
    if (extra.fatal) {
      // Asking again the same way cannot work: say why and stop.
      this.emit('error', extra.fatal);
      this.#shutdown();
      return;
    }
    const fellBack = this.#noteOpenFailure(conn);
    if (fellBack && !this.#closed && !this.#active && !this.#dialing && this.#retryTimer === null && !this.#reauthing && !this.#waitingOnline) {
      this.#dial(); // the first SSE stream: at once
    } else {
      this.#afterLoss(conn, code, reason, extra.retryAfterMs ?? 0);
    }
    this.#updateState();
  }

  /**
   * transport "auto": a WebSocket that closed before "open", and none of
   * this client ever opened. After fallbackAfter in a row, new connections
   * use SSE. Returns whether it switched now.
   */
  #noteOpenFailure(conn) {
    if (this.#transportOpt !== 'auto' || conn.transport !== 'websocket' || this.#transport !== 'websocket') return false;
    if (conn.opened || this.#wsEverOpened) {
      this.#wsOpenFailures = 0;
      return false;
    }
    this.#wsOpenFailures++;
    if (this.#wsOpenFailures < this.#fallbackAfter || this.#fetch === null) return false;
    this.#transport = 'sse';
    this.emit('transport', {
      transport: 'sse',
      previous: 'websocket',
      reason: `the WebSocket failed to open ${this.#wsOpenFailures} times in a row`,
    });
    return true;
  }

  /** Decides, from the close code, how and when to connect again. */
  #afterLoss(conn, code, reason, minDelayMs = 0) {
    if (this.#closed || this.#dialing || this.#retryTimer !== null || this.#reauthing || this.#waitingOnline) return;
    // A connection still delivers: only a stale SSE stream wants another.
    if (this.#active && !this.#sseNeedsReopen()) return;
    if (AUTH_CLOSE_CODES.has(code)) {
      this.#reauth(conn, code, reason);
      return;
    }
    if (code === 1012 && !this.#immediateUsed) {
      // The node is draining: another one takes the connection, at once
      // (once per welcome: a second 1012 in a row backs off).
      this.#immediateUsed = true;
      this.#dial();
      return;
    }
    this.#scheduleRetry(minDelayMs);
  }

  /** After 4401/4403: reconnect only if token() yields a token other than the refused one. */
  async #reauth(conn, code, reason) {
    this.#reauthing = true;
    let token;
    try {
      token = await this.#tokenFn();
    } catch (err) {
      this.#reauthing = false;
      if (this.#closed) return;
      this.emit('error', { code: 'token_failed', reason: String(err?.message ?? err) });
      this.#scheduleRetry();
      return;
    }
    this.#reauthing = false;
    if (this.#closed) return;
    if (typeof token !== 'string' || token === '' || token === conn.token) {
      this.emit('error', { code: code === 4403 ? 'kicked' : 'unauthorized', closeCode: code, reason });
      this.#shutdown();
      return;
    }
    this.#prefetchedToken = token;
    this.#scheduleRetry();
    this.#updateState();
  }

  // -- backoff --------------------------------------------------------------

  /**
   * Full jitter: a delay uniformly random in [0, min(max, base * 2^attempt)),
   * and at least minDelayMs (an SSE answer's Retry-After) up to max.
   */
  #scheduleRetry(minDelayMs = 0) {
    if (this.#closed || this.#retryTimer !== null) return;
    if (this.#online && !this.#online.isOnline()) {
      this.#waitingOnline = true;
      return;
    }
    const cap = Math.min(this.#backoff.maxMs, this.#backoff.baseMs * 2 ** this.#attempt);
    const delay = Math.max(Math.floor(this.#random() * cap), Math.min(minDelayMs, this.#backoff.maxMs));
    this.#attempt++;
    this.#retryTimer = this.#setTimeout(() => {
      this.#retryTimer = null;
      this.#dial();
    }, delay);
  }

  #clearRetry() {
    if (this.#retryTimer !== null) {
      this.#clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
  }

  // -- heartbeats -----------------------------------------------------------

  /** Silence (no frame at all) for two heartbeats plus the grace: the connection is dead. */
  #armSilence(conn) {
    this.#clearConnTimer(conn);
    if (!conn.heartbeatMs) return;
    const limit = 2 * conn.heartbeatMs + this.#graceMs;
    const check = () => {
      conn.timer = null;
      if (conn.dead) return;
      const idle = this.#now() - conn.lastSeen;
      if (idle >= limit) {
        this.#lost(conn, CLOSE_CLIENT_TIMEOUT, 'heartbeat timeout');
      } else {
        conn.timer = this.#setTimeout(check, limit - idle);
      }
    };
    conn.timer = this.#setTimeout(check, limit);
  }

  #clearConnTimer(conn) {
    if (conn.timer !== null) {
      this.#clearTimeout(conn.timer);
      conn.timer = null;
    }
  }

  /** Closes a connection's socket (or aborts its SSE request) and forgets its handlers. */
  #closeConn(conn, code, reason, closeSocket = true) {
    conn.dead = true;
    this.#clearConnTimer(conn);
    if (conn.abort) {
      // An ended stream has nothing to abort; aborting it is harmless.
      try {
        conn.abort.abort();
      } catch {
        // nothing to abort
      }
      return;
    }
    const ws = conn.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (closeSocket) {
      try {
        ws.close(code, reason);
      } catch {
        // already closed
      }
    }
  }

  // -- token refresh --------------------------------------------------------

  /**
   * Schedules an in-band auth frame with a fresh token at 80% of the
   * remaining lifetime of the connection's token, and at least 5 s before exp.
   * On SSE, which has no in-band auth, a stream with the fresh token then
   * replaces the connection (make before break).
   */
  #scheduleRefresh(conn) {
    this.#clearRefresh();
    const exp = jwtExp(conn.token);
    if (exp === null) return;
    const remaining = exp * 1000 - this.#now();
    // Too late to refresh: at exp the node closes 4401 and the reconnect
    // gets a fresh token from token().
    if (remaining <= MIN_REFRESH_DELAY_MS) return;
    const delay = Math.max(
      MIN_REFRESH_DELAY_MS, // a token with under 5 s left is refreshed soon, never in a tight loop
      Math.min(remaining * DEFAULTS.refreshFraction, remaining - DEFAULTS.refreshMinLeadMs),
    );
    this.#refreshTimer = this.#setTimeout(() => this.#refresh(conn), delay);
  }

  async #refresh(conn) {
    this.#refreshTimer = null;
    if (conn !== this.#active) return;
    let token;
    try {
      token = await this.#tokenFn();
    } catch (err) {
      this.emit('error', { code: 'token_failed', reason: String(err?.message ?? err) });
      token = null;
    }
    if (conn !== this.#active || this.#closed) return;
    if (typeof token !== 'string' || token === '' || token === conn.token) {
      // No new token yet: ask again soon, until exp (then the node closes 4401).
      const exp = jwtExp(conn.token);
      const remaining = exp === null ? 0 : exp * 1000 - this.#now();
      if (remaining > 0) {
        this.#refreshTimer = this.#setTimeout(() => this.#refresh(conn), Math.min(5000, Math.max(MIN_REFRESH_DELAY_MS, remaining / 2)));
      }
      return;
    }
    if (conn.transport === 'sse') {
      // No in-band auth: a stream with the new token replaces this one. (A
      // stream being opened already asked token() for its own.)
      this.#sseRefreshWanted = true;
      if (this.#dialing === null) {
        this.#prefetchedToken = token;
        if (this.#retryTimer === null) this.#dial();
      }
      return;
    }
    if (this.#send(conn, { type: 'auth', token })) {
      conn.token = token;
      this.#scheduleRefresh(conn);
    }
  }

  #clearRefresh() {
    if (this.#refreshTimer !== null) {
      this.#clearTimeout(this.#refreshTimer);
      this.#refreshTimer = null;
    }
  }

  // -- online/offline -------------------------------------------------------

  /** Back online: reconnect at once if a reconnect was waiting. */
  #handleOnline() {
    if (this.#closed) return;
    if (this.#waitingOnline || this.#retryTimer !== null) {
      this.#attempt = 0;
      this.#clearRetry();
      this.#dial();
    }
  }

  /** Offline: stop reconnect attempts (an open connection is left to its heartbeat). */
  #handleOffline() {
    if (this.#closed) return;
    if (this.#retryTimer !== null) {
      this.#clearRetry();
      this.#waitingOnline = true;
    }
  }
}

function closedError() {
  return Object.assign(new Error('wsfleet: client closed'), { code: 'closed' });
}

/**
 * Connects to a wsfleet gateway and keeps connected until close().
 * @param {import('./index.js').ConnectOptions} options
 * @returns {Client}
 */
export function connect(options) {
  return new Client(options);
}

export default connect;
