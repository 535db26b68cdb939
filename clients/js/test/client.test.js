// Connection behaviour: auth, heartbeats, reconnects and close codes,
// make-before-break, resume, token refresh, close(), online/offline.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, jwtExp } from '../src/index.js';
import { setup, welcome, flush, makeJwt, fakeWebSocket, FakeClock } from './harness.js';

test('sends the auth frame first, then reports open and the welcome', async () => {
  const { sockets, of } = setup({ token: async () => 'secret' });
  await flush();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, 'ws://gw.test/ws');
  assert.deepEqual(of('state'), [], 'the initial "connecting" is the state, not an event');
  await welcome(sockets[0]);
  assert.deepEqual(sockets[0].sent[0], { type: 'auth', token: 'secret' });
  assert.equal(sockets[0].sent.length, 1);
  assert.deepEqual(of('state'), ['open']);
  assert.equal(of('welcome')[0].node, 'gw-1');
});

test('throws without a WebSocket constructor (transport "websocket", or "auto" without fetch either)', () => {
  const saved = globalThis.WebSocket;
  const savedFetch = globalThis.fetch;
  try {
    delete globalThis.WebSocket;
    assert.throws(() => connect({ url: 'ws://x', token: async () => 't', transport: 'websocket' }), /WebSocket/);
    // "auto" falls back to SSE when there is no WebSocket (test/sse.test.js);
    // with neither a WebSocket nor fetch there is nothing to use.
    delete globalThis.fetch;
    assert.throws(() => connect({ url: 'ws://x', token: async () => 't' }), /WebSocket/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
    globalThis.fetch = savedFetch;
  }
});

test('answers a ping with a pong at once', async () => {
  const { sockets } = setup();
  await flush();
  await welcome(sockets[0]);
  sockets[0].receive({ type: 'ping' });
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'pong' });
});

test('delivers messages and ignores unknown frame types', async () => {
  const { sockets, of } = setup();
  await flush();
  await welcome(sockets[0]);
  sockets[0].receive({ type: 'message', id: 'a-1', data: { text: 'hi' } });
  sockets[0].receive({ type: 'message', topic: 'room.1', id: 'a-2', data: 7 });
  sockets[0].receive({ type: 'future-frame', x: 1 });
  sockets[0].receive('not json');
  assert.deepEqual(of('message'), [
    { id: 'a-1', data: { text: 'hi' } },
    { id: 'a-2', data: 7, topic: 'room.1' },
  ]);
});

test('silence for two heartbeats closes the connection and reconnects', async () => {
  const { sockets, clock, of } = setup({ heartbeatGraceMs: 1000 });
  await flush();
  await welcome(sockets[0], { heartbeat: 10 });
  // A frame at 15 s pushes the deadline to 15 + 21 = 36 s.
  await clock.advance(15000);
  sockets[0].receive({ type: 'ping' });
  await clock.advance(20000);
  assert.equal(sockets.length, 1, 'still alive before the deadline');
  await clock.advance(1000);
  assert.equal(sockets[0].closed?.code, 4000);
  assert.equal(sockets.length, 2, 'a new connection is dialed');
  assert.deepEqual(of('state'), ['open', 'reconnecting']);
});

test('backoff: full jitter within min(max, base * 2^attempt), reset after a welcome', async () => {
  const { sockets, clock } = setup({ random: () => 0.999, backoff: { baseMs: 100, maxMs: 1000 } });
  await flush();
  await welcome(sockets[0]);
  const caps = [100, 200, 400, 800, 1000, 1000];
  for (const cap of caps) {
    const n = sockets.length;
    sockets[n - 1].serverClose(1013);
    const delay = Math.floor(0.999 * cap);
    await clock.advance(delay - 1);
    assert.equal(sockets.length, n, `no dial before ${delay} ms`);
    await clock.advance(1);
    assert.equal(sockets.length, n + 1, `dial at ${delay} ms (cap ${cap})`);
  }
  // A welcome resets the attempts: the next delay is within the base again.
  await welcome(sockets.at(-1));
  const n = sockets.length;
  sockets.at(-1).serverClose(4500);
  await clock.advance(99);
  assert.equal(sockets.length, n + 1);
});

test('backoff delay never exceeds the cap with random near 1 and is 0 with random 0', async () => {
  const { sockets, clock } = setup({ random: () => 0, backoff: { baseMs: 5000, maxMs: 5000 } });
  await flush();
  await welcome(sockets[0]);
  sockets[0].serverClose(4429);
  await clock.advance(0);
  assert.equal(sockets.length, 2);
});

test('4401: stops when token() returns the same token', async () => {
  const { sockets, clock, of, client } = setup({ token: async () => 'same' });
  await flush();
  await welcome(sockets[0]);
  sockets[0].serverClose(4401, 'token expired');
  await clock.advance(60000);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, 'closed');
  assert.deepEqual(of('state'), ['open', 'reconnecting', 'closed']);
  assert.deepEqual(of('error').at(-1), { code: 'unauthorized', closeCode: 4401, reason: 'token expired' });
});

test('4401: reconnects with a new token', async () => {
  let n = 0;
  const { sockets, clock, client } = setup({ token: async () => `tok-${++n}` });
  await flush();
  await welcome(sockets[0]);
  assert.equal(sockets[0].sent[0].token, 'tok-1');
  sockets[0].serverClose(4401, 'token expired');
  await clock.advance(0);
  assert.equal(sockets.length, 2);
  await welcome(sockets[1]);
  assert.equal(sockets[1].sent[0].token, 'tok-2', 'the token got after the 4401 is used');
  assert.equal(n, 2, 'token() is not asked twice');
  assert.equal(client.state, 'open');
});

test('1012 reconnects at once, even with a long backoff', async () => {
  const { sockets, clock } = setup({ random: () => 0.999, backoff: { baseMs: 60000, maxMs: 60000 } });
  await flush();
  await welcome(sockets[0]);
  sockets[0].serverClose(1012, 'service restart');
  await flush();
  assert.equal(sockets.length, 2, 'dialed without waiting');
  // A second 1012 before any welcome backs off.
  sockets[1].serverClose(1012);
  await clock.advance(1000);
  assert.equal(sockets.length, 2);
});

test('1000 from close() does not reconnect; close() rejects pending subscribes', async () => {
  const { sockets, clock, client, of } = setup();
  await flush();
  await welcome(sockets[0]);
  const pending = client.subscribe('room.1');
  client.close();
  await assert.rejects(pending, /closed/);
  assert.deepEqual(sockets[0].closed, { code: 1000, reason: 'client closed' });
  await clock.advance(120000);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, 'closed');
  assert.deepEqual(of('state'), ['open', 'closed']);
  assert.equal(client.publish({ x: 1 }), false);
});

test('close() while dialing stops the dial and any later retry', async () => {
  const { sockets, clock, client } = setup();
  await flush();
  client.close();
  sockets[0].open();
  await clock.advance(60000);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].closed.code, 1000);
  assert.equal(sockets[0].sent.length, 0);
});

test('reconnect notice: make before break, duplicates dropped', async () => {
  const { sockets, of, client } = setup();
  await flush();
  await welcome(sockets[0], { position: '10' });
  const old = sockets[0];
  old.receive({ type: 'message', id: '11', data: 'a' });
  old.receive({ type: 'reconnect', reason: 'node draining' });
  await flush();
  assert.equal(sockets.length, 2, 'the new connection is dialed at once');
  const next = sockets[1];
  // The old one keeps delivering until the new one is welcomed.
  old.receive({ type: 'message', id: '12', data: 'b' });
  assert.equal(client.state, 'open');
  assert.equal(old.closed, null);
  next.open();
  await flush();
  assert.deepEqual(next.sent[0], { type: 'auth', token: 'tok', since: '12' });
  // The old one races ahead before the welcome arrives.
  old.receive({ type: 'message', id: '13', data: 'c' });
  next.receive({ type: 'welcome', user: 'alice', conn_id: 'c2', node: 'gw-2', heartbeat: 30, position: '12', recovered: true });
  assert.deepEqual(old.closed?.code, 1000);
  next.receive({ type: 'message', id: '13', data: 'c' });
  next.receive({ type: 'message', id: '14', data: 'd' });
  assert.deepEqual(of('message').map((m) => m.id), ['11', '12', '13', '14']);
  assert.equal(client.publish('x'), true);
  assert.deepEqual(next.sent.at(-1), { type: 'publish', data: 'x' });
  assert.deepEqual(of('state'), ['open'], 'no state change across the move');
});

test('reconnect notice: old connection closed by the node before the new welcome', async () => {
  const { sockets, client } = setup();
  await flush();
  await welcome(sockets[0]);
  sockets[0].receive({ type: 'reconnect', reason: 'node draining' });
  await flush();
  sockets[0].serverClose(1012);
  await flush();
  assert.equal(sockets.length, 2, 'no second dial while one is under way');
  assert.equal(client.state, 'reconnecting');
  await welcome(sockets[1]);
  assert.equal(client.state, 'open');
});

test('since: the highest id of the user messages, not of topic messages', async () => {
  const { sockets, clock, client } = setup();
  await flush();
  await welcome(sockets[0], { position: '41' });
  assert.equal(client.lastId, '41');
  sockets[0].receive({ type: 'message', id: '43', data: 1 });
  sockets[0].receive({ type: 'message', id: '42', data: 2 }); // late, fetched after a gap
  sockets[0].receive({ type: 'message', id: '99', topic: 'room.1', data: 3 });
  sockets[0].serverClose(1013);
  await clock.advance(0);
  sockets[1].open();
  await flush();
  assert.deepEqual(sockets[1].sent[0], { type: 'auth', token: 'tok', since: '43' });
});

test('since: compares long ids numerically', async () => {
  const { sockets, clock } = setup();
  await flush();
  await welcome(sockets[0], { position: '9' });
  sockets[0].receive({ type: 'message', id: '10', data: 1 });
  sockets[0].receive({ type: 'message', id: '18446744073709551615', data: 1 });
  sockets[0].receive({ type: 'message', id: '9999', data: 1 });
  sockets[0].serverClose(1001);
  await clock.advance(0);
  sockets[1].open();
  await flush();
  assert.equal(sockets[1].sent[0].since, '18446744073709551615');
});

test('since: not sent when ids are not stream sequences', async () => {
  const { sockets, clock } = setup();
  await flush();
  await welcome(sockets[0]);
  sockets[0].receive({ type: 'message', id: 'order-1234', data: 1 });
  sockets[0].serverClose(1001);
  await clock.advance(0);
  sockets[1].open();
  await flush();
  assert.deepEqual(sockets[1].sent[0], { type: 'auth', token: 'tok' });
});

test('welcome recovered:false emits unrecovered and resumes from the position', async () => {
  const { sockets, clock, of, client } = setup();
  await flush();
  await welcome(sockets[0], { position: '500' });
  sockets[0].receive({ type: 'message', id: '501', data: 1 });
  sockets[0].serverClose(1013);
  await clock.advance(0);
  await welcome(sockets[1], { position: '20', recovered: false });
  assert.deepEqual(sockets[1].sent[0].since, '501');
  assert.deepEqual(of('unrecovered'), [{ scope: 'connection', position: '20' }]);
  assert.equal(client.lastId, '20', 'history was recreated: resume from the new position');
  sockets[1].serverClose(1013);
  await clock.advance(0);
  await welcome(sockets[2], { position: '20', recovered: true });
  assert.deepEqual(of('recovered'), [{ scope: 'connection', position: '20' }]);
});

test('token refresh: in-band auth at 80% of the lifetime, at least 5 s before exp', async () => {
  const clock0 = new FakeClock();
  const nowS = clock0.t / 1000;
  const tokens = [makeJwt({ sub: 'alice', exp: nowS + 100 }), makeJwt({ sub: 'alice', exp: nowS + 120 + 20 })];
  let calls = 0;
  const { sockets, clock, of } = setup({ token: async () => tokens[Math.min(calls++, tokens.length - 1)] });
  clock.t = clock0.t;
  await flush();
  await welcome(sockets[0], { heartbeat: 0 }); // no silence check here
  assert.equal(calls, 1);
  await clock.advance(79999);
  assert.equal(calls, 1, 'not before 80 s');
  await clock.advance(1);
  assert.equal(calls, 2);
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'auth', token: tokens[1] });
  sockets[0].receive({ type: 'refreshed', exp: nowS + 140 });
  assert.deepEqual(of('refreshed'), [{ exp: nowS + 140 }]);
  // The second token has 60 s left at 80 s: 80% is 48 s; 5 s before exp is 55 s → 48 s.
  await clock.advance(47999);
  assert.equal(calls, 2);
  await clock.advance(1);
  assert.equal(calls, 3);
});

test('token refresh: a short token is refreshed 5 s before exp', async () => {
  const clock0 = new FakeClock();
  const nowS = clock0.t / 1000;
  let calls = 0;
  const { sockets, clock } = setup({ token: async () => makeJwt({ exp: nowS + 20, n: calls++ }) });
  clock.t = clock0.t;
  await flush();
  await welcome(sockets[0], { heartbeat: 0 }); // no silence check here
  await clock.advance(14999);
  assert.equal(calls, 1);
  await clock.advance(1);
  assert.equal(calls, 2);
  assert.equal(sockets[0].sentOf('auth').length, 2);
});

test('token refresh: the same token is not sent again', async () => {
  const clock0 = new FakeClock();
  const tok = makeJwt({ exp: clock0.t / 1000 + 100 });
  let calls = 0;
  const { sockets, clock } = setup({ token: async () => (calls++, tok) });
  clock.t = clock0.t;
  await flush();
  await welcome(sockets[0], { heartbeat: 0 }); // no silence check here
  await clock.advance(90000);
  assert.ok(calls >= 2);
  assert.equal(sockets[0].sentOf('auth').length, 1);
});

test('token refresh: tokens about to expire never refresh in a tight loop', async () => {
  const clock0 = new FakeClock();
  let calls = 0;
  const { sockets, clock } = setup({ token: async () => makeJwt({ exp: Math.floor(clock0.t / 1000) + 3, n: calls++ }) });
  clock.t = clock0.t;
  await flush();
  await welcome(sockets[0], { heartbeat: 0 });
  await clock.advance(10000);
  assert.ok(calls <= 4, `token() called ${calls} times`);
});

test('jwtExp decodes base64url payloads and rejects junk', () => {
  assert.equal(jwtExp(makeJwt({ exp: 1767225600, name: 'Zoë ~~~???' })), 1767225600);
  assert.equal(jwtExp('nope'), null);
  assert.equal(jwtExp('a.!!!.c'), null);
  assert.equal(jwtExp(makeJwt({ sub: 'x' })), null);
});

test('offline: no reconnect attempts until online', async () => {
  const listeners = {};
  let online = true;
  const source = {
    isOnline: () => online,
    addEventListener: (type, fn) => (listeners[type] = fn),
    removeEventListener: (type, fn) => listeners[type] === fn && delete listeners[type],
  };
  const { sockets, clock, client } = setup({ onlineEvents: source, random: () => 0.5, backoff: { baseMs: 1000, maxMs: 1000 } });
  await flush();
  await welcome(sockets[0]);
  sockets[0].serverClose(1013);
  // Goes offline while the retry waits: the retry is cancelled.
  online = false;
  listeners.offline();
  await clock.advance(60000);
  assert.equal(sockets.length, 1);
  online = true;
  listeners.online();
  assert.equal(sockets.length, 2, 'online reconnects at once');
  await welcome(sockets[1]);
  // Offline when the connection drops: nothing is scheduled.
  online = false;
  sockets[1].serverClose(1006);
  await clock.advance(60000);
  assert.equal(sockets.length, 2);
  assert.equal(client.state, 'reconnecting');
  online = true;
  listeners.online();
  assert.equal(sockets.length, 3);
  client.close();
  assert.deepEqual(Object.keys(listeners), [], 'listeners removed on close');
});

test('the offline check is skipped without a browser global', async () => {
  // onlineEvents defaults to true; in Node there is no window "online" event.
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const client = connect({ url: 'ws://x', token: async () => 't', WebSocket: FakeWebSocket });
  await flush();
  assert.equal(sockets.length, 1);
  client.close();
});
