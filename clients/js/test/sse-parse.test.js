// The SSE parser: the HTML standard's event stream rules, and the same
// events whatever the chunk boundaries (inside CRLF, inside UTF-8
// sequences), both on the parser alone and through a client reading a real
// HTTP response re-chunked at chosen byte offsets.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SseParser, connect } from '../src/index.js';
import { startGateway, until } from './sse-gateway.js';

const enc = new TextEncoder();

/** A body with every line ending, comments, multi-line data, a BOM and multi-byte UTF-8. */
const PARTS = [
  '\uFEFF', // a BOM, dropped at the start of the stream
  ': hello\r\n',
  'retry: 1500\n',
  'data: {"type":"welcome","user":"zoë","conn_id":"c1","node":"gw-☃","heartbeat":30,"position":"100"}\r\n\r\n',
  // CR-only line ends, data over two lines (joined with LF: still JSON)
  'id: 101\rdata: {"type":"message","id":"101",\rdata: "data":"naïve 🚀 日本語"}\r\r',
  ': ping\n',
  // no space after the colon; an event name
  'event: message\nid: 102\ndata:{"type":"message","id":"102","data":{"family":"👩‍👩‍👧"}}\n\n',
  '\n\n', // empty events: nothing dispatched
  'data\n\n', // a field without a colon: data "" (not JSON: ignored by the client)
  // CRLF inside an event: a CR ending a chunk must not make the LF a blank line
  'id: 103\r\ndata: {"type":"message","topic":"room.42",\r\ndata: "id":"103","data":"x\\u2028y €"}\r\n\r\n',
  'unknown: field\nid: 104\ndata: {"type":"message","id":"104","data":"ünïcödé"}\n\n',
  'data: {"type":"message","id":"105","data":"last"}\r\n\r\n',
];
const BODY = enc.encode(PARTS.join(''));

const EXPECTED_EVENTS = [
  { data: '{"type":"welcome","user":"zoë","conn_id":"c1","node":"gw-☃","heartbeat":30,"position":"100"}', event: 'message', id: '' },
  { data: '{"type":"message","id":"101",\n"data":"naïve 🚀 日本語"}', event: 'message', id: '101' },
  { data: '{"type":"message","id":"102","data":{"family":"👩‍👩‍👧"}}', event: 'message', id: '102' },
  { data: '', event: 'message', id: '102' },
  { data: '{"type":"message","topic":"room.42",\n"id":"103","data":"x\\u2028y €"}', event: 'message', id: '103' },
  { data: '{"type":"message","id":"104","data":"ünïcödé"}', event: 'message', id: '104' },
  // No "id:" line: the last event ID stays (the standard's "last event ID buffer").
  { data: '{"type":"message","id":"105","data":"last"}', event: 'message', id: '104' },
];

const EXPECTED_MESSAGES = [
  { id: '101', data: 'naïve 🚀 日本語' },
  { id: '102', data: { family: '👩‍👩‍👧' } },
  { id: '103', data: 'x\u2028y €', topic: 'room.42' },
  { id: '104', data: 'ünïcödé' },
  { id: '105', data: 'last' },
];

/** Parses bytes cut at the given offsets; returns the events and the parser. */
function parseSplit(bytes, cuts) {
  const events = [];
  const p = new SseParser((ev) => events.push(ev));
  let start = 0;
  for (const c of [...cuts, bytes.length]) {
    p.push(bytes.subarray(start, c));
    start = c;
  }
  p.end();
  return { events, parser: p };
}

/** A deterministic PRNG (mulberry32). */
function prng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('parser: the standard rules on one chunk', () => {
  const { events, parser } = parseSplit(BODY, []);
  assert.deepEqual(events, EXPECTED_EVENTS);
  assert.equal(parser.retry, 1500);
});

test('parser: same events for every split point and every pair of split points', () => {
  for (let i = 0; i <= BODY.length; i++) {
    assert.deepEqual(parseSplit(BODY, [i]).events, EXPECTED_EVENTS, `split at ${i}`);
    for (let j = i; j <= BODY.length; j += 7) {
      assert.deepEqual(parseSplit(BODY, [i, j]).events, EXPECTED_EVENTS, `splits at ${i}, ${j}`);
    }
  }
});

test('parser: same events one byte at a time and with random cuts', () => {
  const all = Array.from({ length: BODY.length }, (_, i) => i);
  assert.deepEqual(parseSplit(BODY, all).events, EXPECTED_EVENTS, 'one byte per chunk');
  const rnd = prng(42);
  for (let round = 0; round < 500; round++) {
    const cuts = all.filter(() => rnd() < 0.1);
    assert.deepEqual(parseSplit(BODY, cuts).events, EXPECTED_EVENTS, `cuts ${cuts.join(',')}`);
  }
});

test('parser: CR then LF in the next chunk ends one line, CR then CR ends two', () => {
  const crlf = enc.encode('data: a\r\ndata: b\r\n\r\ndata: c\r\r');
  for (let i = 0; i <= crlf.length; i++) {
    assert.deepEqual(parseSplit(crlf, [i]).events.map((e) => e.data), ['a\nb', 'c'], `split at ${i}`);
  }
  // A CR at the end of a chunk whose next chunk is only a partial UTF-8 sequence.
  const tricky = enc.encode('data: x\r€\n\n');
  for (let i = 0; i <= tricky.length; i++) {
    for (let j = i; j <= tricky.length; j++) {
      // "€" after the CR is a line of its own (a field "€", ignored).
      assert.deepEqual(parseSplit(tricky, [i, j]).events.map((e) => e.data), ['x'], `splits at ${i}, ${j}`);
    }
  }
});

test('parser: an event the stream ends in the middle of is discarded; id with NUL ignored', () => {
  assert.deepEqual(parseSplit(enc.encode('data: done\n\ndata: partial\n'), []).events.map((e) => e.data), ['done']);
  const { events } = parseSplit(enc.encode('id: 7\n\nid: a\0b\ndata: x\n\n'), []);
  assert.deepEqual(events, [{ data: 'x', event: 'message', id: '7' }]);
  // Only a BOM at the very start is dropped; a leading space after the colon only once.
  const { events: e2 } = parseSplit(enc.encode('data:  two spaces\n\n'), []);
  assert.equal(e2[0].data, ' two spaces');
});

/**
 * A fetch whose response body is re-chunked so that chunks end at every
 * given byte offset (on top of however the network delivered it).
 */
function splittingFetch(cuts) {
  const sorted = [...cuts].sort((a, b) => a - b);
  return async (url, init) => {
    const res = await fetch(url, init);
    let offset = 0;
    const body = res.body.pipeThrough(
      new TransformStream({
        transform(chunk, ctrl) {
          let start = 0;
          for (const c of sorted) {
            const at = c - offset;
            if (at > start && at < chunk.length) {
              ctrl.enqueue(chunk.subarray(start, at));
              start = at;
            }
          }
          ctrl.enqueue(chunk.subarray(start));
          offset += chunk.length;
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/** A client reading BODY through a real HTTP response cut at cuts; resolves with its messages. */
async function readThroughClient(gw, cuts) {
  const client = connect({
    url: gw.wsUrl,
    token: async () => 'tok',
    transport: 'sse',
    fetch: splittingFetch(cuts),
    onlineEvents: false,
  });
  const messages = [];
  const welcomes = [];
  client.on('message', (m) => messages.push(m));
  client.on('welcome', (w) => welcomes.push(w));
  try {
    await until(() => messages.length >= EXPECTED_MESSAGES.length, `messages with cuts ${cuts}`);
  } finally {
    client.close();
  }
  assert.equal(welcomes.length, 1);
  assert.equal(welcomes[0].user, 'zoë');
  return messages;
}

test('client over HTTP: the same messages for every split point of the body', async () => {
  const gw = await startGateway();
  gw.onRequest = (r) => {
    r.answered = true;
    r.res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8' });
    r.res.write(BODY);
    return 'hold'; // the stream stays open: the client closes it
  };
  try {
    for (let i = 1; i < BODY.length; i++) {
      assert.deepEqual(await readThroughClient(gw, [i]), EXPECTED_MESSAGES, `split at ${i}`);
    }
    const rnd = prng(7);
    for (let round = 0; round < 40; round++) {
      const cuts = Array.from({ length: BODY.length }, (_, i) => i).filter(() => rnd() < 0.15);
      assert.deepEqual(await readThroughClient(gw, cuts), EXPECTED_MESSAGES, `cuts ${cuts.join(',')}`);
    }
    await until(() => gw.requests.every((r) => r.finished), 'every stream closed by its client');
  } finally {
    await gw.close();
  }
});
