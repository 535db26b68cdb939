// The SSE transport against a real local HTTP server speaking the gateway's
// /sse contract (test/sse-gateway.js): the request (URL, Authorization,
// since, topics@id), refusals by status, close events, heartbeat silence,
// the reconnect notice, topic changes reopening the stream, token refresh,
// publish refused, and the "auto" fallback from WebSockets. Client timers
// run on the fake clock; network events are awaited in real time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, sseUrlFor } from '../src/index.js';
import { setup, flush, makeJwt, FakeClock, fakeWebSocket, welcome } from './harness.js';
import { startGateway, until } from './sse-gateway.js';

/** A gateway and a client on it with transport "sse" (fake clock, random 0). */
async function sseSetup(t, options = {}, gwOptions = {}) {
  const gw = await startGateway(gwOptions);
  const env = setup({ url: gw.wsUrl, transport: 'sse', ...options });
  t.after(async () => {
    env.client.close();
    await gw.close();
  });
  return { gw, ...env };
}

/** Waits until the client's state is s. */
const stateIs = (client, s) => until(() => client.state === s, `state ${s}`);

test('sseUrlFor: ws→http, wss→https, /ws→/sse, query kept', () => {
  assert.equal(sseUrlFor('ws://gw.test/ws'), 'http://gw.test/sse');
  assert.equal(sseUrlFor('wss://gw.test:8443/ws?x=1'), 'https://gw.test:8443/sse?x=1');
  assert.equal(sseUrlFor('wss://example.com/realtime/ws'), 'https://example.com/realtime/sse');
  assert.equal(sseUrlFor('wss://example.com/'), 'https://example.com/sse');
});

test('sse: GET /sse with the token in the Authorization header; welcome and messages delivered', async (t) => {
  const { gw, client, of } = await sseSetup(t, { token: async () => 'secret' });
  const stateInfo = [];
  client.on('state', (state, info) => stateInfo.push([state, info.transport]));
  assert.equal(client.transport, 'sse');
  const r = await gw.request(0);
  assert.equal(r.url.pathname, '/sse');
  assert.equal(r.headers.authorization, 'Bearer secret');
  assert.equal(r.headers.accept, 'text/event-stream');
  assert.equal(r.url.searchParams.get('token'), null, 'the token is never in the URL');
  assert.equal(r.since, null);
  assert.deepEqual(r.topics, []);
  await stateIs(client, 'open');
  assert.deepEqual(stateInfo, [['open', 'sse']]);
  assert.equal(of('welcome')[0].node, 'gw-test');
  assert.equal(client.lastId, '100', 'the welcome position is the resume point');
  gw.publish({ data: { text: 'hi' } });
  gw.publish({ data: 2 });
  await until(() => of('message').length === 2, 'two messages');
  assert.deepEqual(of('message'), [
    { id: '101', data: { text: 'hi' } },
    { id: '102', data: 2 },
  ]);
  assert.equal(client.lastId, '102');
});

test('sse: an explicit sseUrl is used as is (plus since and topics)', async (t) => {
  const gw = await startGateway();
  const { client } = setup({ url: 'ws://unused.invalid/ws', sseUrl: `${gw.sseUrl}?tenant=a`, transport: 'sse' });
  t.after(async () => {
    client.close();
    await gw.close();
  });
  const r = await gw.request(0);
  assert.equal(r.url.searchParams.get('tenant'), 'a');
});

test('sse: a stream ending without a close event reconnects with since and topics@position', async (t) => {
  const { gw, client, clock, of } = await sseSetup(t);
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  // Topics: the first is subscribed before anything arrived on a topic.
  const a = client.subscribe('room.a');
  const r1 = await gw.request(1);
  assert.deepEqual(r1.topicList, ['room.a@100'], 'a new topic starts from the newest position seen');
  assert.equal(r1.since, '100');
  await a;
  await until(() => r0.finished, 'the old stream closed after the new welcome');
  assert.ok(r0.closedByClient);
  const b = client.subscribe('room.b');
  const r2 = await gw.request(2);
  await b;
  gw.publish({ topic: 'room.a', data: 'a1' }); // 101
  gw.publish({ data: 'u1' }); // 102
  gw.publish({ topic: 'room.b', data: 'b1' }); // 103
  gw.publish({ topic: 'room.a', data: 'a2' }); // 104
  await until(() => of('message').length === 4, 'four messages');
  // An event the stream ends in the middle of is not delivered.
  r2.write('id: 999\ndata: {"type":"message","id":"999","data":"partial"}\n');
  r2.end();
  await until(() => of('disconnected').length === 1, 'disconnected');
  assert.deepEqual(of('disconnected')[0], { code: 1006, reason: 'stream ended without a close event', welcomed: true, transport: 'sse' });
  assert.equal(client.state, 'reconnecting');
  await clock.advance(0); // backoff (random 0)
  const r3 = await gw.request(3);
  assert.equal(r3.since, '102', 'the highest user message id');
  assert.deepEqual(r3.topicList, ['room.a@104', 'room.b@103'], 'each topic resumes from its own point');
  assert.equal(r3.headers.authorization, 'Bearer tok');
  await stateIs(client, 'open');
  assert.ok(!of('message').some((m) => m.id === '999'));
  assert.deepEqual([...client.topics], [['room.a', '104'], ['room.b', '103']]);
});

test('sse 401: no retry when token() returns the refused token', async (t) => {
  let calls = 0;
  const { gw, client, clock, of } = await sseSetup(t, { token: async () => (calls++, 'same') });
  gw.auth = () => false;
  await gw.request(0);
  await until(() => client.state === 'closed', 'closed');
  await clock.advance(120000);
  await flush();
  assert.equal(gw.requests.length, 1, 'no second request');
  assert.equal(calls, 2, 'token() asked once more after the 401');
  assert.deepEqual(of('disconnected')[0], { code: 4401, reason: 'invalid or expired token', welcomed: false, transport: 'sse', status: 401 });
  assert.deepEqual(of('error').at(-1), { code: 'unauthorized', closeCode: 4401, reason: 'invalid or expired token' });
});

test('sse 401: reconnects with the new token', async (t) => {
  let n = 0;
  const { gw, client, clock } = await sseSetup(t, { token: async () => `tok-${++n}` });
  gw.auth = (tok) => tok === 'tok-2';
  await gw.request(0);
  await until(() => n === 2, 'a new token asked for');
  await clock.advance(0);
  const r1 = await gw.request(1);
  assert.equal(r1.headers.authorization, 'Bearer tok-2');
  await stateIs(client, 'open');
  assert.equal(n, 2, 'token() is not asked twice');
});

test('sse 503: backs off at least Retry-After, then asks again', async (t) => {
  const { gw, client, clock, of } = await sseSetup(t, { backoff: { baseMs: 100, maxMs: 30000 } });
  gw.onRequest = (r) => {
    if (r.index < 2) r.refuse(503, 'node_full', 'the node is full', { 'Retry-After': '3' });
  };
  await gw.request(0);
  await until(() => of('disconnected').length === 1, 'disconnected');
  assert.deepEqual(of('disconnected')[0], { code: 1013, reason: 'the node is full', welcomed: false, transport: 'sse', status: 503 });
  await clock.advance(2999);
  await flush();
  assert.equal(gw.requests.length, 1, 'not before Retry-After');
  await clock.advance(1);
  await gw.request(1);
  await until(() => of('disconnected').length === 2, 'second refusal');
  await clock.advance(3000);
  await gw.request(2);
  await stateIs(client, 'open');
  assert.equal(of('error').length, 0, 'a 503 is no error event');
});

test('sse 400/403/404: no retry; error with the code and status; closed', async (t) => {
  for (const [status, code] of [
    [400, 'bad_since'],
    [403, 'origin_not_allowed'],
    [404, 'not_found'],
  ]) {
    const { gw, client, clock, of } = await sseSetup(t);
    gw.onRequest = (r) => r.refuse(status, code, `refused ${status}`);
    await gw.request(0);
    await until(() => client.state === 'closed', `closed after ${status}`);
    await clock.advance(120000);
    await flush();
    assert.equal(gw.requests.length, 1, `no retry after ${status}`);
    assert.deepEqual(of('error'), [{ code, reason: `refused ${status}`, status }]);
    assert.equal(of('disconnected')[0].status, status);
  }
});

test('sse close events are handled as the WebSocket close codes', async (t) => {
  await t.test('4401: a new token, then reconnect with it', async (t) => {
    let n = 0;
    const { gw, client, clock, of } = await sseSetup(t, { token: async () => `tok-${++n}` });
    const r0 = await gw.request(0);
    await stateIs(client, 'open');
    r0.closeEvent(4401, 'token expired');
    await until(() => n === 2, 'token() asked');
    assert.deepEqual(of('disconnected')[0], { code: 4401, reason: 'token expired', welcomed: true, transport: 'sse' });
    await clock.advance(0);
    const r1 = await gw.request(1);
    assert.equal(r1.headers.authorization, 'Bearer tok-2');
    assert.equal(r1.since, '100');
  });
  await t.test('1012: at once, without the backoff', async (t) => {
    const { gw, client } = await sseSetup(t, { random: () => 0.999, backoff: { baseMs: 60000, maxMs: 60000 } });
    const r0 = await gw.request(0);
    await stateIs(client, 'open');
    r0.closeEvent(1012, 'service restart');
    await gw.request(1); // no clock advance needed
  });
  for (const code of [1013, 4500, 4408]) {
    await t.test(`${code}: backoff`, async (t) => {
      const { gw, client, clock, of } = await sseSetup(t, { random: () => 0.5, backoff: { baseMs: 1000, maxMs: 1000 } });
      const r0 = await gw.request(0);
      await stateIs(client, 'open');
      r0.closeEvent(code, 'bye');
      await until(() => of('disconnected').length === 1, 'disconnected');
      assert.equal(of('disconnected')[0].code, code);
      assert.ok(r0.finished);
      await clock.advance(499);
      await flush();
      assert.equal(gw.requests.length, 1, 'not before the backoff delay');
      await clock.advance(1);
      await gw.request(1);
    });
  }
  await t.test('1013 before the welcome: backoff, still connecting', async (t) => {
    const { gw, client, clock, of } = await sseSetup(t, { random: () => 0.5, backoff: { baseMs: 1000, maxMs: 1000 } });
    gw.onRequest = (r) => {
      if (r.index > 0) return;
      r.answered = true;
      r.res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      r.closeEvent(1013, 'overloaded');
      return 'hold';
    };
    await gw.request(0);
    await until(() => of('disconnected').length === 1, 'disconnected');
    assert.deepEqual(of('disconnected')[0], { code: 1013, reason: 'overloaded', welcomed: false, transport: 'sse' });
    assert.equal(client.state, 'connecting');
    await clock.advance(500);
    await gw.request(1);
    await stateIs(client, 'open');
  });
  await t.test('a 200 that is not an event stream: as 1006, backoff', async (t) => {
    const { gw, client, clock, of } = await sseSetup(t);
    gw.onRequest = (r) => {
      if (r.index > 0) return;
      r.answered = true;
      r.res.writeHead(200, { 'Content-Type': 'text/html' });
      r.res.end('<html>captive portal</html>');
      return 'hold';
    };
    await gw.request(0);
    await until(() => of('disconnected').length === 1, 'disconnected');
    assert.equal(of('disconnected')[0].code, 1006);
    await clock.advance(0);
    await gw.request(1);
    await stateIs(client, 'open');
  });
  await t.test('4403 with the same token: stops (kicked)', async (t) => {
    const { gw, client, of } = await sseSetup(t);
    const r0 = await gw.request(0);
    await stateIs(client, 'open');
    r0.closeEvent(4403, 'logged out');
    await until(() => client.state === 'closed', 'closed');
    assert.deepEqual(of('error').at(-1), { code: 'kicked', closeCode: 4403, reason: 'logged out' });
  });
});

test('sse heartbeat: comments keep the stream alive; two heartbeats of silence reconnect', async (t) => {
  let chunks = 0;
  const tap = async (url, init) => {
    const res = await fetch(url, init);
    const body = res.body.pipeThrough(new TransformStream({ transform: (c, ctrl) => (chunks++, ctrl.enqueue(c)) }));
    return new Response(body, { status: res.status, headers: res.headers });
  };
  const { gw, client, clock, of } = await sseSetup(t, { heartbeatGraceMs: 1000, fetch: tap }, { heartbeat: 10 });
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  // A ": ping" at 15 s pushes the deadline to 15 + 2·10 + 1 = 36 s.
  await clock.advance(15000);
  const before = chunks;
  r0.comment('ping');
  await until(() => chunks > before, 'the comment read');
  await flush();
  await clock.advance(20000);
  assert.equal(gw.requests.length, 1, 'alive before the deadline');
  assert.equal(r0.closedByClient, false);
  await clock.advance(1000);
  assert.deepEqual(of('disconnected')[0], { code: 4000, reason: 'heartbeat timeout', welcomed: true, transport: 'sse' });
  await until(() => r0.closedByClient, 'the dead stream aborted');
  await clock.advance(0);
  const r1 = await gw.request(1);
  assert.equal(r1.since, '100');
  await stateIs(client, 'open');
});

test('sse reconnect notice: make before break, no duplicates', async (t) => {
  const { gw, client, of } = await sseSetup(t);
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  gw.publish({ data: 'a' }); // 101
  await until(() => of('message').length === 1, 'a');
  gw.onRequest = () => 'hold'; // the next stream is welcomed when the test says
  r0.reconnectNotice('node draining');
  const r1 = await gw.request(1);
  assert.deepEqual(of('reconnect'), [{ reason: 'node draining' }]);
  assert.equal(r1.since, '101');
  // The old stream keeps delivering until the new one is welcomed.
  gw.publish({ data: 'b' }); // 102: on r0 only
  await until(() => of('message').length === 2, 'b');
  assert.equal(r0.finished, false);
  assert.equal(client.state, 'open');
  // The new stream replays after since=101: "b" again (dropped), then live.
  r1.accept();
  await until(() => r0.finished, 'old stream closed once the new one is welcomed');
  assert.ok(r0.closedByClient);
  gw.publish({ data: 'c' }); // 103
  await until(() => of('message').length === 3, 'c');
  await flush();
  assert.deepEqual(of('message').map((m) => m.id), ['101', '102', '103']);
  assert.deepEqual(of('state'), ['open'], 'no state change across the move');
  assert.equal(of('disconnected').length, 0);
});

test('sse subscribe/unsubscribe reopen the stream (make before break) with the new topic list', async (t) => {
  const { gw, client, of } = await sseSetup(t);
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  gw.publish({ data: 'u1' }); // 101
  await until(() => of('message').length === 1, 'u1');
  gw.onRequest = () => 'hold';
  const p = client.subscribe('room.42');
  const r1 = await gw.request(1);
  assert.deepEqual(r1.topicList, ['room.42@101']);
  assert.equal(r1.since, '101');
  // Until the new stream is welcomed, the old one delivers.
  gw.publish({ data: 'u2' }); // 102
  await until(() => of('message').length === 2, 'u2');
  assert.equal(r0.finished, false);
  r1.accept();
  const sub = await p;
  assert.equal(sub.topic, 'room.42');
  await until(() => r0.closedByClient, 'old stream closed');
  gw.publish({ topic: 'room.42', data: 't1' }); // 103
  await until(() => of('message').length === 3, 't1');
  assert.deepEqual(of('message').map((m) => m.id), ['101', '102', '103'], 'u2 replayed on the new stream, delivered once');
  assert.equal(client.topics.get('room.42'), '103');
  // Subscribing again to a held topic resolves at once, without a new stream.
  await client.subscribe('room.42');
  assert.equal(gw.requests.length, 2);
  // Several changes at once: one stream carries them.
  const q = Promise.all([client.subscribe('room.43'), client.subscribe('room.44')]);
  const r2 = await gw.request(2);
  r2.accept();
  await q;
  assert.deepEqual(r2.topicList, ['room.42@103', 'room.43@103', 'room.44@103']);
  await until(() => r1.closedByClient, 'r1 closed');
  // Unsubscribe: resolves once a stream without the topic delivers.
  let done = false;
  const u = client.unsubscribe('room.43').then((f) => ((done = true), f));
  const r3 = await gw.request(3);
  assert.deepEqual(r3.topicList, ['room.42@103', 'room.44@103']);
  await flush();
  assert.equal(done, false);
  r3.accept();
  assert.deepEqual(await u, { type: 'unsubscribed', topic: 'room.43' });
  await until(() => r2.closedByClient, 'r2 closed');
  assert.deepEqual([...client.topics.keys()], ['room.42', 'room.44']);
  assert.equal(client.state, 'open');
  assert.deepEqual(of('state'), ['open']);
  assert.equal(gw.live.length, 1);
});

test('sse subscribe: a topic change while the new stream is being opened replaces it', async (t) => {
  const { gw, client } = await sseSetup(t);
  await gw.request(0);
  await stateIs(client, 'open');
  gw.onRequest = () => 'hold';
  const a = client.subscribe('room.a');
  const r1 = await gw.request(1);
  const b = client.subscribe('room.b');
  const r2 = await gw.request(2);
  await until(() => r1.closedByClient, 'the stale request aborted');
  assert.deepEqual(r2.topicList.map((s) => s.split('@')[0]), ['room.a', 'room.b']);
  r2.accept();
  await Promise.all([a, b]);
});

test('sse subscribe: names the query cannot carry and subscription tokens are refused at once', async (t) => {
  const { gw, client } = await sseSetup(t);
  await gw.request(0);
  await assert.rejects(client.subscribe('a,b'), (err) => err.code === 'bad_topic');
  await assert.rejects(client.subscribe('x@1'), (err) => err.code === 'bad_topic');
  await assert.rejects(client.subscribe('room.1', { token: 'sub-tok' }), (err) => err.code === 'token_unsupported');
  assert.equal(client.topics.size, 0);
});

test('sse 400 bad_topic for a new topic: the topic is refused, the stream stays', async (t) => {
  const { gw, client, of } = await sseSetup(t);
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  await client.subscribe('room.ok').catch(() => {}); // reopens: r1
  gw.onRequest = (r) => {
    if (r.topics.some((x) => x.name === 'room.toomany')) r.refuse(400, 'too_many_topics', 'at most 1 topic');
  };
  const p = client.subscribe('room.toomany');
  await assert.rejects(p, (err) => err.code === 'too_many_topics' && err.topic === 'room.toomany');
  assert.deepEqual(of('error'), [{ code: 'too_many_topics', reason: 'at most 1 topic', topic: 'room.toomany', status: 400 }]);
  assert.deepEqual([...client.topics.keys()], ['room.ok']);
  assert.equal(client.state, 'open');
  assert.ok(r0.finished);
  assert.equal(gw.live.length, 1, 'the stream of room.ok stays');
  assert.equal(gw.live[0].index, 1);
});

test('sse error event refusing a topic rejects its subscribe, the stream stays', async (t) => {
  const { gw, client, of } = await sseSetup(t);
  await gw.request(0);
  await stateIs(client, 'open');
  gw.topicRefusals.set('staff.1', { code: 'forbidden', reason: 'not allowed' });
  await assert.rejects(client.subscribe('staff.1'), (err) => err.code === 'forbidden' && err.topic === 'staff.1');
  assert.deepEqual(of('error'), [{ code: 'forbidden', topic: 'staff.1', reason: 'not allowed' }]);
  assert.equal(client.topics.size, 0);
  await flush();
  assert.equal(gw.requests.length, 2, 'no reopen for a topic the stream refused');
  assert.equal(client.state, 'open');
});

test('sse publish is refused with a clear error', async (t) => {
  const { gw, client } = await sseSetup(t);
  await gw.request(0);
  await stateIs(client, 'open');
  assert.throws(() => client.publish({ x: 1 }), (err) => err.code === 'publish_unsupported' && /WebSocket transport/.test(err.message));
});

test('sse token refresh: a stream with the fresh token replaces the old one before exp', async (t) => {
  const clock0 = new FakeClock();
  const nowS = clock0.t / 1000;
  const tokens = [makeJwt({ sub: 'alice', exp: nowS + 100 }), makeJwt({ sub: 'alice', exp: nowS + 200 })];
  let calls = 0;
  // heartbeat 0: no silence check here (the WebSocket refresh tests do the same)
  const { gw, client, clock, of } = await sseSetup(t, { token: async () => tokens[Math.min(calls++, 1)] }, { heartbeat: 0 });
  clock.t = clock0.t;
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  assert.equal(r0.headers.authorization, `Bearer ${tokens[0]}`);
  await clock.advance(79999);
  await flush();
  assert.equal(gw.requests.length, 1, 'not before 80% of the lifetime');
  await clock.advance(1);
  const r1 = await gw.request(1);
  assert.equal(r1.headers.authorization, `Bearer ${tokens[1]}`);
  assert.equal(r1.since, '100');
  await until(() => r0.closedByClient, 'the old stream closed after the new welcome');
  assert.deepEqual(of('refreshed'), [{ exp: nowS + 200 }]);
  assert.equal(calls, 2);
  assert.deepEqual(of('state'), ['open']);
});

test('auto: falls back to SSE after two WebSockets that never opened, and stays', async (t) => {
  const gw = await startGateway();
  const { client, clock, sockets, of } = setup({ url: gw.wsUrl }); // transport "auto" by default
  const stateInfo = [];
  client.on('state', (state, info) => stateInfo.push([state, info.transport]));
  t.after(async () => {
    client.close();
    await gw.close();
  });
  assert.equal(client.transport, 'websocket');
  await flush();
  assert.equal(sockets.length, 1);
  sockets[0].serverClose(1006); // never opened
  await clock.advance(0);
  assert.equal(sockets.length, 2);
  assert.equal(client.transport, 'websocket', 'one failure is not enough');
  sockets[1].serverClose(1006);
  await flush();
  assert.equal(client.transport, 'sse');
  assert.deepEqual(of('transport'), [{ transport: 'sse', previous: 'websocket', reason: 'the WebSocket failed to open 2 times in a row' }]);
  const r0 = await gw.request(0); // at once, no backoff
  assert.equal(r0.url.pathname, '/sse');
  await stateIs(client, 'open');
  assert.deepEqual(stateInfo, [['open', 'sse']]);
  assert.throws(() => client.publish('x'), /WebSocket transport/);
  // It stays on SSE across reconnects.
  r0.closeEvent(1013, 'try later');
  await until(() => of('disconnected').length === 3, 'disconnected');
  await clock.advance(0);
  await gw.request(1);
  assert.equal(sockets.length, 2, 'no WebSocket again');
});

test('auto: a client whose WebSocket once opened does not fall back', async (t) => {
  const gw = await startGateway();
  const { client, clock, sockets } = setup({ url: gw.wsUrl, fallbackAfter: 1 });
  t.after(async () => {
    client.close();
    await gw.close();
  });
  await flush();
  await welcome(sockets[0]);
  sockets[0].serverClose(1006);
  for (let i = 1; i <= 3; i++) {
    await clock.advance(0);
    sockets[i].serverClose(1006); // before open
  }
  assert.equal(client.transport, 'websocket');
  assert.equal(gw.requests.length, 0);
});

test('auto: a WebSocket that times out before open counts as a failure to open', async (t) => {
  const gw = await startGateway();
  const { client, clock, sockets, of } = setup({ url: gw.wsUrl, connectTimeoutMs: 5000 });
  t.after(async () => {
    client.close();
    await gw.close();
  });
  await flush();
  await clock.advance(5000);
  await clock.advance(0);
  assert.equal(sockets.length, 2);
  await clock.advance(5000);
  assert.equal(client.transport, 'sse');
  assert.equal(sockets[1].closed.code, 4000);
  await gw.request(0);
  await stateIs(client, 'open');
  assert.equal(of('transport').length, 1);
});

test('auto: SSE from the start when there is no WebSocket constructor', async (t) => {
  const gw = await startGateway();
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  let client;
  try {
    client = connect({ url: gw.wsUrl, token: async () => 't', onlineEvents: false });
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
  t.after(async () => {
    client.close();
    await gw.close();
  });
  assert.equal(client.transport, 'sse');
  await gw.request(0);
  await stateIs(client, 'open');
});

test('transport "websocket" never falls back', async () => {
  const { FakeWebSocket, sockets } = fakeWebSocket();
  const clock = new FakeClock();
  const client = connect({
    url: 'ws://gw.test/ws',
    token: async () => 't',
    transport: 'websocket',
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0,
    onlineEvents: false,
  });
  await flush();
  for (let i = 0; i < 4; i++) {
    sockets[i].serverClose(1006);
    await clock.advance(0);
  }
  assert.equal(client.transport, 'websocket');
  assert.equal(sockets.length, 5);
  client.close();
  assert.throws(() => connect({ url: 'ws://x', token: async () => 't', transport: 'carrier-pigeon' }), /transport/);
});

test('close() aborts the SSE stream and stops', async (t) => {
  const { gw, client, clock } = await sseSetup(t);
  const r0 = await gw.request(0);
  await stateIs(client, 'open');
  client.close();
  await until(() => r0.closedByClient, 'stream aborted');
  await clock.advance(60000);
  assert.equal(gw.requests.length, 1);
  assert.equal(client.state, 'closed');
});
