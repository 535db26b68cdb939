// A stand-in for the gateway's SSE endpoint (GET /sse) on a real local
// node:http server, for the *.test.js files. It speaks the contract the Go
// gateway implements: the token in "Authorization: Bearer", ?since= and
// ?topics=a,b@id, refusals as an HTTP status with {"code","reason"}, then
// text/event-stream with one JSON object per event (welcome, replayed and
// live messages with "id:", subscribed, error, reconnect, close) and
// ": ping" comments. Messages are kept in a log with stream sequence ids, so
// that since and topics@id replay what came after them.
//
// Every request is recorded (gw.requests); gw.onRequest may answer a
// request itself (refuse, hold it to accept later, write raw bytes), else
// the gateway checks the token (gw.auth) and accepts it.
// (node --test also loads this file; it holds no tests.)

import http from 'node:http';

/** Starts a gateway on 127.0.0.1 and a kernel-picked port. */
export async function startGateway(options = {}) {
  const gw = new Gateway(options);
  await gw.listen();
  return gw;
}

/** Resolves after ms of real time. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits (real time) until cond() is true; fails after timeoutMs. */
export async function until(cond, what = 'condition', timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export class Gateway {
  /** Every request to /sse, in arrival order. */
  requests = [];
  /** Stored messages: {seq, topic?, data}. */
  log = [];
  seq;
  heartbeat;
  /** Whether a token is valid (default: any non-empty token). */
  auth = (token) => typeof token === 'string' && token !== '';
  /** Called with each request first; return "hold" to answer it later. */
  onRequest = null;
  /** Topics a stream refuses with an error event instead of "subscribed": name → {code, reason}. */
  topicRefusals = new Map();
  #server;
  #waiters = [];

  constructor({ startSeq = 100, heartbeat = 30 } = {}) {
    this.seq = startSeq;
    this.heartbeat = heartbeat;
    this.#server = http.createServer((req, res) => this.#handle(req, res));
  }

  listen() {
    return new Promise((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
  }

  get port() {
    return this.#server.address().port;
  }

  /** The WebSocket URL the client is given; /sse is derived from it. */
  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get sseUrl() {
    return `http://127.0.0.1:${this.port}/sse`;
  }

  /** The request with that index, once it arrived. */
  async request(index, timeoutMs = 3000) {
    if (this.requests[index]) return this.requests[index];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for SSE request #${index} (${this.requests.length} arrived)`)), timeoutMs);
      this.#waiters.push({ index, resolve: () => (clearTimeout(timer), resolve()) });
    });
    return this.requests[index];
  }

  /** Accepted streams the client has not closed and the gateway has not ended. */
  get live() {
    return this.requests.filter((r) => r.accepted && !r.finished);
  }

  /** Stores a message and sends it to every live stream it is for. Returns its id. */
  publish({ topic, data = null } = {}) {
    const entry = { seq: ++this.seq, data };
    if (topic !== undefined) entry.topic = topic;
    this.log.push(entry);
    for (const r of this.live) if (r.wants(entry)) r.sendEntry(entry);
    return String(entry.seq);
  }

  async close() {
    for (const r of this.requests) r.finished = true;
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #handle(req, res) {
    const url = new URL(req.url, `http://${req.headers.host}`);
    if (url.pathname !== '/sse') {
      refuse(res, 404, 'not_found', 'no such path');
      return;
    }
    if (req.method !== 'GET') {
      refuse(res, 405, 'method_not_allowed', 'GET only');
      return;
    }
    const r = new SseRequest(this, this.requests.length, url, req, res);
    this.requests.push(r);
    for (const w of [...this.#waiters]) {
      if (w.index < this.requests.length) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve();
      }
    }
    if (r.badTopic) {
      r.refuse(400, 'bad_topic', `bad topic ${r.badTopic}`);
      return;
    }
    if (this.onRequest?.(r) === 'hold' || r.answered) return;
    if (!this.auth(r.token)) {
      r.refuse(401, 'unauthorized', 'invalid or expired token');
      return;
    }
    r.accept();
  }
}

function refuse(res, status, code, reason, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify({ code, reason }));
}

/** One GET /sse: what the client asked for, and the stream the test drives. */
export class SseRequest {
  answered = false;
  accepted = false;
  /** The stream is over: the client closed it or the gateway ended it. */
  finished = false;
  /** The client went away before the gateway ended the response. */
  closedByClient = false;
  /** Topics the stream holds. */
  held = new Set();
  badTopic = null;

  constructor(gw, index, url, req, res) {
    this.gw = gw;
    this.index = index;
    this.url = url;
    this.headers = req.headers;
    this.res = res;
    const auth = req.headers.authorization ?? '';
    this.token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    this.since = url.searchParams.get('since') ?? req.headers['last-event-id'] ?? null;
    /** [{name, since}] from ?topics=a,b@id; since null without "@id". */
    this.topics = [];
    const list = url.searchParams.get('topics');
    if (list) {
      for (const entry of list.split(',')) {
        const at = entry.indexOf('@');
        const name = at < 0 ? entry : entry.slice(0, at);
        const since = at < 0 ? null : entry.slice(at + 1);
        if (!/^[A-Za-z0-9_.:-]+$/.test(name) || (since !== null && !/^[0-9]{1,20}$/.test(since))) this.badTopic = entry;
        this.topics.push({ name, since });
      }
    }
    res.on('close', () => {
      if (!res.writableFinished) this.closedByClient = true;
      this.finished = true;
    });
  }

  /** "name@since" (or "name") of each requested topic, for assertions. */
  get topicList() {
    return this.topics.map((t) => (t.since === null ? t.name : `${t.name}@${t.since}`));
  }

  /** Answers with an HTTP status and the gateway's JSON error body. */
  refuse(status, code, reason, headers = {}) {
    this.answered = true;
    this.finished = true;
    refuse(this.res, status, code, reason, headers);
  }

  /** Starts the stream: welcome, what came after since, subscribed per topic, then live. */
  accept({ welcome = {}, replay = true } = {}) {
    this.answered = true;
    this.accepted = true;
    this.res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    this.res.flushHeaders();
    const head = String(this.gw.seq);
    const w = { type: 'welcome', user: 'alice', conn_id: `c${this.index}`, node: 'gw-test', heartbeat: this.gw.heartbeat, position: head };
    if (this.since !== null) w.recovered = true;
    this.send({ ...w, ...welcome });
    if (replay && this.since !== null) {
      for (const e of this.gw.log) if (e.topic === undefined && e.seq > Number(this.since)) this.sendEntry(e);
    }
    for (const t of this.topics) {
      const refusal = this.gw.topicRefusals.get(t.name);
      if (refusal) {
        this.send({ type: 'error', topic: t.name, ...refusal });
        continue;
      }
      const since = t.since ?? this.since;
      const f = { type: 'subscribed', topic: t.name, position: head };
      if (since !== null) f.recovered = true;
      this.send(f);
      this.held.add(t.name);
      if (replay && since !== null) {
        for (const e of this.gw.log) if (e.topic === t.name && e.seq > Number(since)) this.sendEntry(e);
      }
    }
  }

  wants(entry) {
    return entry.topic === undefined || this.held.has(entry.topic);
  }

  sendEntry(e) {
    const f = { type: 'message', id: String(e.seq), data: e.data };
    if (e.topic !== undefined) f.topic = e.topic;
    this.send(f, f.id);
  }

  /** One event: "id:" (when given) and the JSON object as data. */
  send(obj, id) {
    this.write(`${id !== undefined ? `id: ${id}\n` : ''}data: ${JSON.stringify(obj)}\n\n`);
  }

  comment(text = 'ping') {
    this.write(`: ${text}\n`);
  }

  /** Raw bytes or text, as they are. */
  write(chunk) {
    if (!this.finished) this.res.write(chunk);
  }

  /** The drain notice: {"type":"reconnect"}. */
  reconnectNotice(reason = 'node draining') {
    this.send({ type: 'reconnect', reason });
  }

  /** The close event, then the end of the stream. */
  closeEvent(code, reason = '') {
    this.send({ type: 'close', code, reason });
    this.end();
  }

  /** Ends the stream (without a close event unless one was sent). */
  end() {
    if (this.finished) return;
    this.finished = true;
    this.res.end();
  }
}
