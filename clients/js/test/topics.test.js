// Topics: subscribe/unsubscribe promises, refusals, per-topic resume points,
// resubscribe after a reconnect, recovered:false, ended subscriptions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, welcome, flush } from './harness.js';

test('subscribe resolves on subscribed; waits for the welcome when not open', async () => {
  const { sockets, client, of } = setup();
  const p = client.subscribe('room.42');
  await flush();
  assert.equal(sockets[0].sentOf('subscribe').length, 0);
  await welcome(sockets[0]);
  assert.deepEqual(sockets[0].sentOf('subscribe'), [{ type: 'subscribe', topic: 'room.42' }]);
  sockets[0].receive({ type: 'subscribed', topic: 'room.42', position: '7' });
  assert.deepEqual(await p, { type: 'subscribed', topic: 'room.42', position: '7' });
  assert.equal(of('subscribed').length, 1);
  assert.deepEqual([...client.topics], [['room.42', '7']]);
});

test('subscribe sends a subscription token (string or function)', async () => {
  const { sockets, client } = setup();
  await flush();
  await welcome(sockets[0]);
  client.subscribe('room.1', { token: 'sub-tok' });
  client.subscribe('room.2', { token: async () => 'fresh-tok' });
  await flush();
  assert.deepEqual(sockets[0].sentOf('subscribe'), [
    { type: 'subscribe', topic: 'room.1', token: 'sub-tok' },
    { type: 'subscribe', topic: 'room.2', token: 'fresh-tok' },
  ]);
});

test('subscribe rejects on an error frame naming the topic', async () => {
  const { sockets, client, of } = setup();
  await flush();
  await welcome(sockets[0]);
  const p = client.subscribe('staff.1');
  sockets[0].receive({ type: 'error', code: 'forbidden', topic: 'staff.1', reason: 'not allowed' });
  await assert.rejects(p, (err) => err.code === 'forbidden' && err.topic === 'staff.1');
  assert.deepEqual(of('error'), [{ code: 'forbidden', topic: 'staff.1', reason: 'not allowed' }]);
  assert.equal(client.topics.size, 0);
  assert.equal(client.state, 'open', 'the connection stays');
});

test('a publish refused for a held topic does not drop it', async () => {
  const { sockets, client } = setup();
  await flush();
  await welcome(sockets[0]);
  const p = client.subscribe('room.1');
  sockets[0].receive({ type: 'subscribed', topic: 'room.1' });
  await p;
  assert.equal(client.publish({ t: 1 }, { topic: 'room.1' }), true);
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'publish', data: { t: 1 }, topic: 'room.1' });
  sockets[0].receive({ type: 'error', code: 'forbidden', topic: 'room.1', reason: 'no publish' });
  assert.equal(client.topics.size, 1);
});

test('after a reconnect every topic is subscribed again with its own since', async () => {
  const { sockets, clock, client } = setup();
  await flush();
  await welcome(sockets[0], { position: '5' });
  const a = client.subscribe('room.a');
  const b = client.subscribe('room.b');
  client.subscribe('room.c'); // never answered: no since
  sockets[0].receive({ type: 'subscribed', topic: 'room.a', position: '10' });
  sockets[0].receive({ type: 'subscribed', topic: 'room.b', position: '20' });
  await Promise.all([a, b]);
  sockets[0].receive({ type: 'message', topic: 'room.a', id: '15', data: 1 });
  sockets[0].receive({ type: 'message', topic: 'room.a', id: '12', data: 1 });
  sockets[0].receive({ type: 'message', id: '16', data: 1 });
  sockets[0].serverClose(1013);
  await clock.advance(0);
  await welcome(sockets[1], { position: '16', recovered: true });
  assert.equal(sockets[1].sent[0].since, '16');
  assert.deepEqual(sockets[1].sentOf('subscribe'), [
    { type: 'subscribe', topic: 'room.a', since: '15' },
    { type: 'subscribe', topic: 'room.b', since: '20' },
    { type: 'subscribe', topic: 'room.c' },
  ]);
});

test('subscribed recovered:false emits unrecovered for the topic and moves its point', async () => {
  const { sockets, clock, client, of } = setup();
  await flush();
  await welcome(sockets[0]);
  client.subscribe('room.a');
  sockets[0].receive({ type: 'subscribed', topic: 'room.a', position: '10' });
  sockets[0].serverClose(1001);
  await clock.advance(0);
  await welcome(sockets[1]);
  assert.equal(sockets[1].sentOf('subscribe')[0].since, '10');
  sockets[1].receive({ type: 'subscribed', topic: 'room.a', position: '300', recovered: false });
  assert.deepEqual(of('unrecovered'), [{ scope: 'topic', topic: 'room.a', position: '300' }]);
  assert.equal(client.topics.get('room.a'), '300');
  sockets[1].serverClose(1001);
  await clock.advance(0);
  await welcome(sockets[2]);
  sockets[2].receive({ type: 'subscribed', topic: 'room.a', position: '300', recovered: true });
  assert.deepEqual(of('recovered'), [{ scope: 'topic', topic: 'room.a', position: '300' }]);
});

test('unsubscribed with a reason ends the topic; a refused resubscribe is reported', async () => {
  const { sockets, clock, client, of } = setup();
  await flush();
  await welcome(sockets[0]);
  client.subscribe('room.a');
  client.subscribe('room.b');
  sockets[0].receive({ type: 'subscribed', topic: 'room.a' });
  sockets[0].receive({ type: 'subscribed', topic: 'room.b' });
  sockets[0].receive({ type: 'unsubscribed', topic: 'room.a', reason: 'the refreshed token no longer allows this topic' });
  assert.deepEqual([...client.topics.keys()], ['room.b']);
  assert.equal(of('unsubscribed')[0].reason, 'the refreshed token no longer allows this topic');
  sockets[0].serverClose(1013);
  await clock.advance(0);
  await welcome(sockets[1]);
  assert.deepEqual(sockets[1].sentOf('subscribe').map((f) => f.topic), ['room.b']);
  sockets[1].receive({ type: 'error', code: 'forbidden', topic: 'room.b', reason: 'expired' });
  assert.equal(client.topics.size, 0);
  assert.deepEqual(of('unsubscribed').at(-1), { type: 'unsubscribed', topic: 'room.b', reason: 'expired', code: 'forbidden' });
});

test('unsubscribe resolves on the answer and stops tracking the topic', async () => {
  const { sockets, clock, client } = setup();
  await flush();
  await welcome(sockets[0]);
  client.subscribe('room.a');
  sockets[0].receive({ type: 'subscribed', topic: 'room.a' });
  const p = client.unsubscribe('room.a');
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'unsubscribe', topic: 'room.a' });
  sockets[0].receive({ type: 'unsubscribed', topic: 'room.a' });
  await p;
  assert.equal(client.topics.size, 0);
  sockets[0].serverClose(1013);
  await clock.advance(0);
  await welcome(sockets[1]);
  assert.equal(sockets[1].sentOf('subscribe').length, 0);
  // Not connected: resolves at once.
  sockets[1].serverClose(1013);
  await client.unsubscribe('room.z');
});

test('topic messages are deduplicated per topic across make-before-break', async () => {
  const { sockets, client, of } = setup();
  await flush();
  await welcome(sockets[0]);
  client.subscribe('room.a');
  sockets[0].receive({ type: 'subscribed', topic: 'room.a', position: '1' });
  sockets[0].receive({ type: 'reconnect', reason: 'node lost NATS' });
  await flush();
  sockets[0].receive({ type: 'message', topic: 'room.a', id: '2', data: 'x' });
  await welcome(sockets[1]);
  assert.deepEqual(sockets[1].sentOf('subscribe'), [{ type: 'subscribe', topic: 'room.a', since: '2' }]);
  sockets[1].receive({ type: 'subscribed', topic: 'room.a', position: '2', recovered: true });
  sockets[1].receive({ type: 'message', topic: 'room.a', id: '2', data: 'x' });
  sockets[1].receive({ type: 'message', topic: 'room.a', id: '3', data: 'y' });
  assert.deepEqual(of('message').map((m) => m.id), ['2', '3']);
});
