// Test doubles shared by the *.test.js files: a fake WebSocket the test
// drives (open, receive, serverClose) and that records what the client sent,
// a fake clock (setTimeout/clearTimeout/now) and a client factory wiring them.
// (node --test also loads this file; it holds no tests.)

import { connect } from '../src/index.js';

/** Lets pending promise callbacks and microtasks run. */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A manual clock: timers fire only from advance(). */
export class FakeClock {
  t = 1_700_000_000_000;
  timers = new Map();
  #nextId = 1;
  setTimeout = (fn, ms) => {
    const id = this.#nextId++;
    this.timers.set(id, { at: this.t + ms, ms, fn });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  now = () => this.t;

  /** Moves time forward by ms, firing due timers in order. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next = null;
      for (const entry of this.timers) {
        if (entry[1].at <= end && (next === null || entry[1].at < next[1].at)) next = entry;
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
    await flush();
  }
}

/** A WebSocket class whose instances land in sockets. */
export function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closed = null; // {code, reason} once the client closed it
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('WebSocket is not open');
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      if (this.readyState >= 2) return;
      this.closed = { code, reason };
      this.readyState = 3;
      // A real socket reports its close later; the client must have let go.
      queueMicrotask(() => this.onclose?.({ code, reason, wasClean: true }));
    }
    // -- driven by the test --
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: true });
    }
    sentOf(type) {
      return this.sent.filter((f) => f.type === type);
    }
  }
  return { FakeWebSocket, sockets };
}

/** A JWT-shaped token (not signed) with the given claims. */
export function makeJwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}

const EVENTS = ['state', 'welcome', 'message', 'subscribed', 'unsubscribed', 'error', 'recovered', 'unrecovered', 'refreshed', 'reconnect', 'disconnected', 'transport'];

/**
 * A client on a fake socket and clock. random defaults to 0 (backoff
 * delay 0) and onlineEvents to false. Returns the client, the clock, the
 * sockets it opened and every event it emitted ([name, arg]).
 */
export function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const client = connect({
    url: 'ws://gw.test/ws',
    token: async () => 'tok',
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0,
    onlineEvents: false,
    ...options,
  });
  const events = [];
  for (const name of EVENTS) client.on(name, (arg) => events.push([name, arg]));
  const of = (name) => events.filter((e) => e[0] === name).map((e) => e[1]);
  return { client, clock, sockets, events, of };
}

/** Opens a socket, waits for the auth frame and answers with a welcome. */
export async function welcome(sock, fields = {}) {
  sock.open();
  await flush();
  sock.receive({ type: 'welcome', user: 'alice', conn_id: 'c1', node: 'gw-1', heartbeat: 30, ...fields });
  await flush();
}
