// @wsfleet/client: a WebSocket client for a wsfleet gateway fleet.
//
// The wire protocol is defined by the Go package protocol (protocol/doc.go,
// frames.go, close.go in the wsfleet repository); this file follows it.
//
// What lives where in this file:
//   - Emitter         a minimal on/off/once event emitter the client extends
//   - RecentIds       a bounded set of recently delivered message ids (dedupe)
//   - helpers         id comparison (decimal stream sequences), JWT exp decoding
//   - Client          the connection manager:
//       dialing       #dial, #onOpen: a socket, then the auth frame (with since)
//       frames        #onFrame: welcome, ping, message, subscribed, ...
//       losing        #lost, #afterLoss: close codes decide how to reconnect
//       backoff       #scheduleRetry: full-jitter exponential backoff
//       heartbeats    #armSilence: two heartbeats of silence mean a dead socket
//       refresh       #scheduleRefresh: in-band auth before the token's exp
//       topics        subscribe/unsubscribe, per-topic resume points
//       online        navigator.onLine / "online" / "offline" handling
//   - connect         the public entry point
//
// A client holds up to three connections at once:
//   active    welcomed; frames are sent on it and it delivers
//   draining  the previous active after a {"type":"reconnect"} notice: it keeps
//             delivering until the next connection is welcomed (make before break)
//   dialing   opened (or opening), not welcomed yet

/** WebSocket readyState OPEN. */
const WS_OPEN = 1;

/** Close code this client uses when it gives up on a connection it considers dead. */
const CLOSE_CLIENT_TIMEOUT = 4000;

/** Close codes after which reconnecting needs a token other than the one refused. */
const AUTH_CLOSE_CODES = new Set([4401, 4403]);

const DEFAULTS = {
  heartbeatGraceMs: 2000,
  connectTimeoutMs: 20000,
  backoff: { baseMs: 500, maxMs: 30000 },
  dedupeSize: 1024,
  refreshMinLeadMs: 5000,
  refreshFraction: 0.8,
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
    const wrapper = (arg) => {
      this.off(event, wrapper);
      fn(arg);
    };
    wrapper.__wsfleetOnce = fn;
    return this.on(event, wrapper);
  }

  /** Calls every listener of event with arg. A listener that throws is
   * reported asynchronously (as an uncaught error) so that the client's own
   * state stays consistent. */
  emit(event, arg) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
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

// ---------------------------------------------------------------------------
// Client

/**
 * A connection to a wsfleet gateway that authenticates, answers heartbeats,
 * refreshes its token, reconnects and resumes. Create it with connect().
 */
export class Client extends Emitter {
  // options
  #url;
  #tokenFn;
  #WebSocket;
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
  #seen;
  /** @type {Map<string, {since: string|null, token: any, confirmed: boolean, everConfirmed: boolean, sentOn: object|null, waiters: Array<{resolve: Function, reject: Function}>}>} */
  #topics = new Map();
  #unsubWaiters = new Map(); // topic -> resolve functions

  constructor(options) {
    super();
    if (!options || (typeof options.url !== 'string' && typeof options.url !== 'function')) {
      throw new TypeError('wsfleet: options.url (string or function) is required');
    }
    if (typeof options.token !== 'function') {
      throw new TypeError('wsfleet: options.token (a function returning a token) is required');
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('wsfleet: no global WebSocket; pass options.WebSocket (for example from the "ws" package)');
    }
    this.#url = options.url;
    this.#tokenFn = options.token;
    this.#WebSocket = WS;
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
   * Sends a publish frame. Returns true if it was written to an open
   * connection, false if there is none (nothing is queued).
   */
  publish(data, opts = {}) {
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
    let t = this.#topics.get(topic);
    if (!t) {
      t = { since: null, token: undefined, confirmed: false, everConfirmed: false, sentOn: null, waiters: [] };
      this.#topics.set(topic, t);
    }
    if (opts.token !== undefined) t.token = opts.token;
    if (typeof opts.since === 'string' && isSeqId(opts.since)) t.since = opts.since;
    const p = new Promise((resolve, reject) => t.waiters.push({ resolve, reject }));
    if (this.#active) this.#sendSubscribe(this.#active, topic, t);
    return p;
  }

  /**
   * Stops tracking a topic and unsubscribes from it. Resolves on the
   * "unsubscribed" answer, or at once when no connection is open.
   */
  unsubscribe(topic) {
    const t = this.#topics.get(topic);
    if (t) {
      this.#topics.delete(topic);
      for (const w of t.waiters) w.reject(Object.assign(new Error(`wsfleet: unsubscribed from ${topic}`), { code: 'unsubscribed', topic }));
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
      this.emit('state', next);
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
    if (!force && this.#online && !this.#online.isOnline()) {
      this.#waitingOnline = true;
      this.#updateState();
      return;
    }
    this.#waitingOnline = false;

    const conn = {
      ws: null,
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
    conn.timer = this.#setTimeout(() => this.#lost(conn, CLOSE_CLIENT_TIMEOUT, 'no welcome in time'), this.#connectTimeoutMs);
    ws.onopen = () => this.#onOpen(conn, tokenPromise);
    ws.onmessage = (ev) => this.#onFrame(conn, ev.data);
    ws.onclose = (ev) => this.#lost(conn, ev?.code ?? 1006, ev?.reason ?? '', true);
    ws.onerror = () => {}; // a close event follows
  }

  /** First-message authentication: {"type":"auth","token":…,"since":…}. */
  async #onOpen(conn, tokenPromise) {
    let token;
    try {
      token = await tokenPromise;
    } catch (err) {
      if (conn.dead) return;
      this.emit('error', { code: 'token_failed', reason: String(err?.message ?? err) });
      this.#lost(conn, CLOSE_CLIENT_TIMEOUT, 'token() failed');
      return;
    }
    if (conn.dead) return;
    conn.token = token;
    const frame = { type: 'auth', token };
    if (this.#lastId !== null) frame.since = this.#lastId;
    this.#send(conn, frame);
  }

  #send(conn, frame) {
    const ws = conn.ws;
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
        this.#onUnsubscribed(f);
        break;
      case 'error':
        this.#onErrorFrame(conn, f);
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
    if (this.#active && this.#active !== conn) this.#closeConn(this.#active, 1000, 'replaced');
    this.#active = conn;
    this.#everOpen = true;
    this.#attempt = 0;
    this.#immediateUsed = false;

    conn.heartbeatMs = typeof f.heartbeat === 'number' && f.heartbeat > 0 ? f.heartbeat * 1000 : 0;
    this.#armSilence(conn);

    // Resume point: "position" covers the connection before any message; with
    // recovered:false what came before it is lost, so it replaces the old one.
    if (isSeqId(f.position) && (this.#lastId === null || f.recovered === false)) this.#lastId = f.position;

    this.#updateState();
    this.emit('welcome', f);
    if (f.recovered === true) this.emit('recovered', { scope: 'connection', position: f.position });
    if (f.recovered === false) this.emit('unrecovered', { scope: 'connection', position: f.position });

    for (const [topic, t] of this.#topics) {
      t.confirmed = false;
      this.#sendSubscribe(conn, topic, t);
    }
    this.#scheduleRefresh(conn);
  }

  #onMessage(f) {
    const id = typeof f.id === 'string' ? f.id : undefined;
    const topic = typeof f.topic === 'string' && f.topic !== '' ? f.topic : undefined;
    // The same message may arrive on the draining and the new connection.
    if (id !== undefined && !this.#seen.add(`${topic ?? ''}\n${id}`)) return;
    if (isSeqId(id)) {
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
    if (t) {
      if (t.sentOn === conn) t.sentOn = null;
      t.confirmed = true;
      t.everConfirmed = true;
      if (isSeqId(f.position) && (t.since === null || f.recovered === false)) t.since = f.position;
      const waiters = t.waiters;
      t.waiters = [];
      for (const w of waiters) w.resolve(f);
    }
    this.emit('subscribed', f);
    if (f.recovered === true) this.emit('recovered', { scope: 'topic', topic, position: f.position });
    if (f.recovered === false) this.emit('unrecovered', { scope: 'topic', topic, position: f.position });
  }

  #onUnsubscribed(f) {
    const topic = f.topic;
    if (f.reason) {
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

  /** A connection closed (fromSocket), or the client gave up on it. */
  #lost(conn, code, reason, fromSocket = false) {
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
    this.emit('disconnected', { code, reason, welcomed: conn.welcomed });
    this.#afterLoss(conn, code, reason);
    this.#updateState();
  }

  /** Decides, from the close code, how and when to connect again. */
  #afterLoss(conn, code, reason) {
    if (this.#closed || this.#active || this.#dialing || this.#retryTimer !== null || this.#reauthing || this.#waitingOnline) return;
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
    this.#scheduleRetry();
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

  /** Full jitter: a delay uniformly random in [0, min(max, base * 2^attempt)). */
  #scheduleRetry() {
    if (this.#closed || this.#retryTimer !== null) return;
    if (this.#online && !this.#online.isOnline()) {
      this.#waitingOnline = true;
      return;
    }
    const cap = Math.min(this.#backoff.maxMs, this.#backoff.baseMs * 2 ** this.#attempt);
    const delay = Math.floor(this.#random() * cap);
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

  /** Closes a connection's socket and forgets its handlers. */
  #closeConn(conn, code, reason, closeSocket = true) {
    conn.dead = true;
    this.#clearConnTimer(conn);
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
