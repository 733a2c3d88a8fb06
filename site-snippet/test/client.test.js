// The snippet's connection logic with an injected fake WebSocket and clock:
// reconnect, backoff, resume, dedupe and gap repair, without a network.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient, backoff, pick, matches, mergePatch, safeAttr } = require('../hookcast.js');

function fakeWorld() {
  let t = 0;
  let timers = [];
  let nextId = 1;
  const sockets = [];
  class FakeSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this); }
    send(s) { this.sent.push(JSON.parse(s)); }
    close(code) { this.readyState = 3; this.closedWith = code; }
    // Test drivers:
    open() { this.readyState = 1; this.onopen && this.onopen({}); }
    receive(obj) { this.onmessage && this.onmessage({ data: JSON.stringify(obj) }); }
    drop(code = 1006) { this.readyState = 3; this.onclose && this.onclose({ code, reason: '' }); }
  }
  return {
    sockets,
    FakeSocket,
    now: () => t,
    setTimeout: (fn, ms) => { const id = nextId++; timers.push({ id, at: t + ms, fn }); return id; },
    clearTimeout: (id) => { timers = timers.filter((x) => x.id !== id); },
    advance(ms) {
      const end = t + ms;
      for (;;) {
        timers.sort((a, b) => a.at - b.at);
        const due = timers.find((x) => x.at <= end);
        if (!due) break;
        timers = timers.filter((x) => x !== due);
        t = due.at;
        due.fn();
      }
      t = end;
    },
    pending: () => timers.map((x) => x.at - t),
  };
}

function client(w, extra = {}) {
  const events = [];
  const statuses = [];
  const resets = [];
  const c = createClient({
    url: 'ws://h/ws', WebSocket: w.FakeSocket, now: w.now, random: () => 0.5,
    setTimeout: w.setTimeout, clearTimeout: w.clearTimeout,
    onEvent: (e) => events.push(e.seq), onStatus: (s) => statuses.push(s), onReset: (ch, seq) => resets.push([ch, seq]),
    ...extra,
  });
  return { c, events, statuses, resets };
}

const ev = (seq, channel = 'deploys') => ({ type: 'event', channel, seq, event: 'deploy.succeeded', data: {}, at: '' });

test('backoff is capped exponential with full jitter', () => {
  assert.equal(backoff(0, 500, 30000, () => 0.999), 499);
  assert.equal(backoff(3, 500, 30000, () => 0.999), 3996);
  assert.equal(backoff(20, 500, 30000, () => 0.999), 29970);
  assert.equal(backoff(20, 500, 30000, () => 0), 0);
});

test('subscribes on open, delivers in order, drops duplicates', () => {
  const w = fakeWorld();
  const { c, events, statuses } = client(w);
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  assert.deepEqual(s.sent, [{ action: 'subscribe', channel: 'deploys', batch: true }]);
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 4 });
  assert.equal(c.lastSeq('deploys'), 4);
  s.receive(ev(5));
  s.receive(ev(5));
  s.receive(ev(4));
  s.receive(ev(6));
  assert.deepEqual(events, [5, 6]);
  assert.deepEqual(statuses, ['connecting', 'live']);
});

test('a gap re-subscribes with since and applies buffered events in order', () => {
  const w = fakeWorld();
  const { c, events } = client(w);
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 1 });
  s.receive(ev(4)); // 2 and 3 went missing
  assert.deepEqual(s.sent.at(-1), { action: 'subscribe', channel: 'deploys', batch: true, since: 1 });
  s.receive(ev(5)); // no second resync while one is pending
  assert.equal(s.sent.length, 2);
  s.receive(ev(2));
  s.receive(ev(3));
  s.receive(ev(4));
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 5 });
  assert.deepEqual(events, [2, 3, 4, 5]);
  assert.equal(c.lastSeq('deploys'), 5);
});

test('a batch frame is applied frame by frame, in order, duplicates dropped', () => {
  const w = fakeWorld();
  const { c, events } = client(w);
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 1 });
  s.receive(ev(3)); // a gap: resync with since = 1
  s.receive({ type: 'batch', frames: [ev(2), ev(3), ev(3), { type: 'subscribed', channel: 'deploys', seq: 3 }] });
  assert.deepEqual(events, [2, 3]);
  assert.equal(c.lastSeq('deploys'), 3);
  s.receive({ type: 'batch', frames: 'not a list' });
  s.receive(ev(4));
  assert.deepEqual(events, [2, 3, 4]);
});

test('reconnects with backoff and resumes with since = last seq', () => {
  const w = fakeWorld();
  const { c, events, statuses } = client(w, { baseDelay: 1000, maxDelay: 8000 });
  c.add('deploys');
  c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  w.sockets[0].receive(ev(1));
  w.sockets[0].drop();
  assert.equal(statuses.at(-1), 'reconnecting');
  assert.deepEqual(w.pending(), [500]); // random 0.5 * 1000 * 2^0
  w.advance(499);
  assert.equal(w.sockets.length, 1);
  w.advance(1);
  assert.equal(w.sockets.length, 2);
  w.sockets[1].drop(); // fails again before opening: the delay doubles
  assert.deepEqual(w.pending(), [1000]);
  w.advance(1000);
  w.sockets[2].open();
  assert.deepEqual(w.sockets[2].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 1 }]);
  w.sockets[2].receive(ev(2));
  assert.deepEqual(events, [1, 2]);
});

test('backoff resets only after the connection stayed up minUptime', () => {
  const w = fakeWorld();
  const { c } = client(w, { baseDelay: 1000, maxDelay: 64000, minUptime: 5000 });
  c.add('x');
  c.start();
  for (let i = 0; i < 3; i++) { w.sockets.at(-1).drop(); w.advance(60000); }
  w.sockets.at(-1).open();
  w.advance(1000); // up 1 s: a flap, not a recovery
  w.sockets.at(-1).drop();
  assert.deepEqual(w.pending(), [4000]); // 0.5 * 1000 * 2^3: not reset
  w.advance(4000);
  w.sockets.at(-1).open();
  w.advance(5000);
  w.sockets.at(-1).drop();
  assert.deepEqual(w.pending(), [500]);
});

test('no retry after a policy close', () => {
  const w = fakeWorld();
  const { c, statuses } = client(w);
  c.add('x');
  c.start();
  w.sockets[0].open();
  w.sockets[0].drop(1008);
  assert.equal(statuses.at(-1), 'closed');
  assert.deepEqual(w.pending(), []);
});

test('a reset jumps to the head and tells the page', () => {
  const w = fakeWorld();
  const { c, events, resets } = client(w);
  c.add('deploys');
  c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 3 });
  w.sockets[0].receive(ev(10));
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 12, reset: true });
  assert.deepEqual(resets, [['deploys', 12]]);
  w.sockets[0].receive(ev(13));
  assert.deepEqual(events, [13]);
});

test('the last seq survives a reload through storage', () => {
  const w = fakeWorld();
  const mem = new Map();
  const storage = { getItem: (k) => (mem.has(k) ? mem.get(k) : null), setItem: (k, v) => mem.set(k, v) };
  const first = client(w, { storage });
  first.c.add('deploys');
  first.c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  w.sockets[0].receive(ev(1));
  w.sockets[0].receive(ev(2));
  first.c.stop();
  assert.equal(w.sockets[0].closedWith, 1000);
  const second = client(w, { storage });
  second.c.add('deploys');
  second.c.start();
  w.sockets[1].open();
  assert.deepEqual(w.sockets[1].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 2 }]);
});

test('the epoch travels with since, and a new one (a wiped store) is kept after its reset', () => {
  const w = fakeWorld();
  const mem = new Map();
  const storage = { getItem: (k) => (mem.has(k) ? mem.get(k) : null), setItem: (k, v) => mem.set(k, v) };
  const resets = [];
  const first = client(w, { storage });
  first.c.add('deploys');
  first.c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 0, epoch: 'e1' });
  w.sockets[0].receive(ev(1));
  first.c.stop();
  const second = client(w, { storage, onReset: (c, seq) => resets.push([c, seq]) });
  second.c.add('deploys');
  second.c.start();
  w.sockets[1].open();
  assert.deepEqual(w.sockets[1].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 1, epoch: 'e1' }]);
  // The store was wiped and grew again: the server answers with a reset in its new epoch.
  w.sockets[1].receive({ type: 'subscribed', channel: 'deploys', seq: 7, reset: true, epoch: 'e2' });
  assert.deepEqual(resets, [['deploys', 7]]);
  assert.equal(second.c.lastSeq('deploys'), 7);
  second.c.stop();
  const third = client(w, { storage });
  third.c.add('deploys');
  third.c.start();
  w.sockets[2].open();
  assert.deepEqual(w.sockets[2].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 7, epoch: 'e2' }]);
});

test('pings well inside API Gateway idle timeout', () => {
  const w = fakeWorld();
  const { c } = client(w);
  c.add('x');
  c.start();
  w.sockets[0].open();
  w.advance(4 * 60 * 1000);
  assert.deepEqual(w.sockets[0].sent.at(-1), { action: 'ping' });
  w.advance(4 * 60 * 1000);
  assert.equal(w.sockets[0].sent.filter((m) => m.action === 'ping').length, 2);
});

test('paths and filters', () => {
  const e = { channel: 'c', seq: 3, event: 'deploy.ready', data: { a: { b: 'x' }, n: 0 }, at: 'T' };
  assert.equal(pick(e, 'a.b'), 'x');
  assert.equal(pick(e, 'n'), 0);
  assert.equal(pick(e, 'a.z.q'), undefined);
  assert.equal(pick(e, '@seq'), 3);
  assert.ok(matches('deploy.*', 'deploy.ready'));
  assert.ok(matches('x deploy.ready', 'deploy.ready'));
  assert.ok(!matches('form.*', 'deploy.ready'));
  assert.ok(matches(null, 'anything'));
});

// RFC 7386, Appendix A: every published example.
test('merge patch matches RFC 7386 Appendix A', () => {
  const cases = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, want] of cases) {
    const before = JSON.stringify(target);
    assert.deepEqual(mergePatch(target, patch), want, `${before} + ${JSON.stringify(patch)}`);
    assert.equal(JSON.stringify(target), before, 'the target is not mutated');
  }
});

test('attribute bindings refuse handlers, styles and script URLs', () => {
  const base = 'https://site.example/page';
  assert.ok(safeAttr('title', 'anything <b>', base));
  assert.ok(safeAttr('href', 'https://x.example/a', base));
  assert.ok(safeAttr('href', '/relative', base));
  assert.ok(safeAttr('data-state', 'ready', base));
  assert.ok(!safeAttr('href', 'javascript:alert(1)', base));
  assert.ok(!safeAttr('HREF', ' JavaScript:alert(1)', base));
  assert.ok(!safeAttr('src', 'data:text/html,<script>', base));
  assert.ok(!safeAttr('onclick', 'x()', base));
  assert.ok(!safeAttr('OnMouseOver', 'x()', base));
  assert.ok(!safeAttr('style', 'background:url(//evil)', base));
  assert.ok(!safeAttr('srcdoc', '<script>', base));
});

test('a planned reconnect before API Gateway\'s 2-hour cap resumes at once with since', () => {
  const w = fakeWorld();
  const { c, events } = client(w, { maxLifetime: 60000 });
  c.add('deploys');
  c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 7 });
  w.sockets[0].receive(ev(8));
  w.advance(60000);
  assert.equal(w.sockets[0].closedWith, 1000);
  assert.equal(w.sockets.length, 2, 'the new socket opens without waiting for a backoff');
  w.sockets[1].open();
  assert.deepEqual(w.sockets[1].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 8 }]);
  w.sockets[0].drop(1000); // the old socket's late close changes nothing
  assert.equal(c.status(), 'live');
  w.sockets[1].receive(ev(9));
  assert.deepEqual(events, [8, 9]);
});

test('a paused client resumes with since', () => {
  const w = fakeWorld();
  const { c, statuses } = client(w);
  c.add('deploys');
  c.start();
  w.sockets[0].open();
  w.sockets[0].receive({ type: 'subscribed', channel: 'deploys', seq: 3 });
  c.stop('paused');
  assert.equal(statuses.at(-1), 'paused');
  assert.deepEqual(w.pending(), [], 'no reconnect while paused');
  c.start();
  w.sockets[1].open();
  assert.deepEqual(w.sockets[1].sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 3 }]);
});

test('occupancy: asked after subscribing, then every interval, again after a reconnect', () => {
  const w = fakeWorld();
  const counts = [];
  const { c } = client(w, { occupancyInterval: 30000, onOccupancy: (ch, n) => counts.push([ch, n]) });
  c.watchOccupancy('deploys');
  c.add('news');
  c.start();
  const s = w.sockets[0];
  s.open();
  const asks = (sock) => sock.sent.filter((m) => m.action === 'occupancy');
  assert.deepEqual(asks(s), [], 'not before the subscription is confirmed');
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  s.receive({ type: 'subscribed', channel: 'news', seq: 0 });
  assert.deepEqual(asks(s), [{ action: 'occupancy', channel: 'deploys' }], 'only watched channels');
  s.receive({ type: 'occupancy', channel: 'deploys', count: 12 });
  s.receive({ type: 'occupancy', channel: 'unknown', count: 3 });
  assert.deepEqual(counts, [['deploys', 12]]);
  // A gap repair re-subscribes; that is not a reason to ask again.
  s.receive(ev(2));
  s.receive(ev(1));
  s.receive(ev(2));
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 2 });
  assert.equal(c.lastSeq('deploys'), 2);
  assert.equal(asks(s).length, 1);
  w.advance(29999);
  assert.equal(asks(s).length, 1);
  w.advance(1);
  assert.equal(asks(s).length, 2);
  w.advance(60000);
  assert.equal(asks(s).length, 4);
  // A late watcher on a live connection is asked at once.
  c.watchOccupancy('news');
  assert.deepEqual(asks(s).at(-1), { action: 'occupancy', channel: 'news' });
  s.drop();
  w.advance(60000); // reconnect delay, no asks on a dead socket
  assert.equal(asks(s).length, 5);
  const s2 = w.sockets[1];
  s2.open();
  s2.receive({ type: 'subscribed', channel: 'deploys', seq: 2 });
  assert.deepEqual(asks(s2), [{ action: 'occupancy', channel: 'deploys' }]);
  c.stop();
  w.advance(120000);
  assert.equal(asks(s2).length, 1, 'stopped clients do not ask');
});

test('occupancy interval is at least 10 s', () => {
  const w = fakeWorld();
  const { c } = client(w, { occupancyInterval: 1000 });
  c.watchOccupancy('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  w.advance(9999);
  assert.equal(s.sent.filter((m) => m.action === 'occupancy').length, 1);
  w.advance(1);
  assert.equal(s.sent.filter((m) => m.action === 'occupancy').length, 2);
});

test('subscribe tokens ride along: one for all, or one per channel', () => {
  const w = fakeWorld();
  const { c } = client(w, { token: (ch) => (ch.startsWith('orders/') ? 'v1.tok.' + ch : null) });
  c.add('orders/7');
  c.add('deploys');
  c.start();
  w.sockets[0].open();
  assert.deepEqual(w.sockets[0].sent, [
    { action: 'subscribe', channel: 'orders/7', batch: true, token: 'v1.tok.orders/7' },
    { action: 'subscribe', channel: 'deploys', batch: true },
  ]);
  const w2 = fakeWorld();
  const { c: c2 } = client(w2, { token: 'v1.all' });
  c2.add('team');
  c2.start();
  w2.sockets[0].open();
  assert.deepEqual(w2.sockets[0].sent, [{ action: 'subscribe', channel: 'team', batch: true, token: 'v1.all' }]);
});

test('a fresh page holds live events until its state or head arrives', () => {
  const w = fakeWorld();
  const states = [];
  const { c, events } = client(w, { onState: (m) => states.push([m.seq, m.mode]) });
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  // Event 8 was pushed between the subscribe and the read of the head (7).
  s.receive(ev(8));
  assert.deepEqual(events, [], 'no place in the log yet: held');
  s.receive({ type: 'state', channel: 'deploys', seq: 7, mode: 'merge', state: { a: 1 } });
  assert.deepEqual(states, [[7, 'merge']]);
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 7 });
  assert.deepEqual(events, [8], 'applied after the state, in order');
  // A state older than what the page has is ignored.
  s.receive({ type: 'state', channel: 'deploys', seq: 5, mode: 'merge', state: {} });
  assert.deepEqual(states, [[7, 'merge']]);
  assert.equal(c.lastSeq('deploys'), 8);
});

test('a build stamp is where a channel resumes; what this tab saw after it replays quietly', () => {
  const w = fakeWorld();
  const store = new Map([['hookcast:last:deploys', '12 E1'], ['hookcast:last:forms', '2 E0']]);
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const seen = [];
  const { c } = client(w, {
    storage, stamps: { deploys: 10, forms: 4 }, epoch: 'E1',
    onEvent: (e, quiet) => seen.push([e.channel, e.seq, !!quiet]),
  });
  c.add('deploys');
  c.add('forms');
  c.add('other');
  c.start();
  const s = w.sockets[0];
  s.open();
  assert.deepEqual(s.sent, [
    { action: 'subscribe', channel: 'deploys', batch: true, since: 10, epoch: 'E1' },
    { action: 'subscribe', channel: 'forms', batch: true, since: 4, epoch: 'E1' },
    { action: 'subscribe', channel: 'other', batch: true },
  ]);
  for (const seq of [11, 12, 13]) s.receive(ev(seq));
  s.receive(ev(5, 'forms'));
  assert.deepEqual(seen, [['deploys', 11, true], ['deploys', 12, true], ['deploys', 13, false], ['forms', 5, false]]);
});

// Issue 34: a subscribe that fails (an error frame, API Gateway's own untyped
// frame, no answer at all) is asked again after the one backoff; until then
// the channel stalls, gap repairs included.
const UNAVAILABLE = { type: 'error', code: 'unavailable', message: 'try again', channel: 'deploys' };
const GATEWAY = { message: 'Internal server error', connectionId: 'Ab1=', requestId: 'Cd2=' };

/** A page stamped at deploys=3, news=0; `fail` spoils the first deploys subscribe. */
function failedSubscribe(name, fail, retryAfter) {
  test(name, () => {
    const w = fakeWorld();
    const seen = [];
    const { c } = client(w, { stamps: { deploys: 3, news: 0 }, subscribeTimeout: 10000, onEvent: (e) => seen.push(e.channel + ' ' + e.seq) });
    c.add('deploys');
    c.add('news');
    c.start();
    const s = w.sockets[0];
    s.open();
    const asks = (ch) => s.sent.filter((m) => m.action === 'subscribe' && m.channel === ch);
    s.receive({ type: 'subscribed', channel: 'news', seq: 0 }); // the control channel is answered well
    fail(s);
    s.receive(ev(1, 'news'));
    w.advance(retryAfter - 1);
    assert.equal(asks('deploys').length, 1, 'not before the backoff');
    w.advance(1);
    assert.equal(asks('deploys').length, 2, 'the failed subscribe is asked again');
    assert.deepEqual(asks('deploys')[1], { action: 'subscribe', channel: 'deploys', batch: true, since: 3 });
    s.receive({ type: 'batch', frames: [ev(4), ev(5), { type: 'subscribed', channel: 'deploys', seq: 5 }] });
    s.receive(ev(6));
    s.receive(ev(2, 'news'));
    assert.deepEqual(seen, ['news 1', 'deploys 4', 'deploys 5', 'deploys 6', 'news 2']);
    w.advance(600000);
    assert.equal(asks('deploys').length, 2, 'answered: no more asks');
    assert.equal(asks('news').length, 1, 'the control channel was never asked again');
  });
}
// random() = 0.5, base 500 ms: the first retry waits 250 ms.
failedSubscribe('a subscribe answered by an error frame naming its channel is asked again after a backoff', (s) => s.receive(UNAVAILABLE), 250);
failedSubscribe('an error frame naming no channel fails every pending subscribe', (s) => s.receive({ type: 'error', code: 'rate_limited', message: 'slow down' }), 250);
failedSubscribe('API Gateway\'s untyped error frame fails every pending subscribe', (s) => s.receive(GATEWAY), 250);
failedSubscribe('a subscribe with no answer within the bound is asked again', () => {}, 10000 + 250);

test('a gap repair whose subscribe fails is asked again, and the buffered events follow in order', () => {
  const w = fakeWorld();
  const { c, events } = client(w);
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 1 });
  s.receive(ev(4)); // 2 and 3 went missing: repair with since = 1
  const asks = () => s.sent.filter((m) => m.action === 'subscribe');
  assert.equal(asks().length, 2);
  s.receive(UNAVAILABLE);
  s.receive(ev(5));
  assert.equal(asks().length, 2, 'no second ask before the backoff');
  w.advance(250);
  assert.deepEqual(asks()[2], { action: 'subscribe', channel: 'deploys', batch: true, since: 1 });
  s.receive({ type: 'batch', frames: [ev(2), ev(3), ev(4), ev(5), { type: 'subscribed', channel: 'deploys', seq: 5 }] });
  s.receive(ev(6));
  assert.deepEqual(events, [2, 3, 4, 5, 6]);
  // A repair that goes unanswered is asked again too (default bound 15 s).
  s.receive(ev(8));
  assert.equal(asks().length, 4);
  w.advance(15000 + 249);
  assert.equal(asks().length, 4);
  w.advance(1);
  assert.deepEqual(asks()[4], { action: 'subscribe', channel: 'deploys', batch: true, since: 6 });
  s.receive({ type: 'batch', frames: [ev(7), ev(8), { type: 'subscribed', channel: 'deploys', seq: 8 }] });
  assert.deepEqual(events, [2, 3, 4, 5, 6, 7, 8]);
});

test('the retry backs off per channel and starts over once the channel is answered', () => {
  const w = fakeWorld();
  const { c } = client(w, { baseDelay: 1000, maxDelay: 8000 });
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  const asks = () => s.sent.filter((m) => m.action === 'subscribe').length;
  for (const [n, delay] of [[1, 500], [2, 1000], [3, 2000], [4, 4000], [5, 4000]]) {
    s.receive(UNAVAILABLE);
    s.receive(GATEWAY); // a second report of the same failure changes nothing
    w.advance(delay - 1);
    assert.equal(asks(), n);
    w.advance(1);
    assert.equal(asks(), n + 1, `retry ${n} after ${delay} ms`);
  }
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  s.receive(ev(2));
  s.receive(UNAVAILABLE);
  w.advance(500);
  assert.equal(asks(), 8, 'the backoff started over');
});

test('only errors retrying can help are retried; a late answer cancels the retry', () => {
  const w = fakeWorld();
  const { c } = client(w);
  const fatal = ['forbidden', 'invalid_channel', 'too_many_subscriptions', 'bad_message', 'bad_json', 'unknown_action', 'message_too_large'];
  for (const code of fatal) c.add('x/' + code);
  c.add('deploys');
  c.add('news');
  c.start();
  const s = w.sockets[0];
  s.open();
  for (const code of fatal) s.receive({ type: 'error', code, message: code, channel: 'x/' + code });
  s.receive({ type: 'error', code: 'forbidden', message: 'no channel named' });
  s.receive(GATEWAY);
  s.receive({ type: 'subscribed', channel: 'news', seq: 0 }); // its subscribe was fine after all
  w.advance(600000);
  const asks = (ch) => s.sent.filter((m) => m.action === 'subscribe' && m.channel === ch).length;
  for (const code of fatal) assert.equal(asks('x/' + code), 1, code + ' is not retried');
  assert.equal(asks('news'), 1, 'answered before its retry was due');
  assert.ok(asks('deploys') > 1, 'the failed one is retried');
});

test('a retry is never sent on a socket that has closed; the new socket asks (and retries) itself', () => {
  const w = fakeWorld();
  const { c } = client(w, { baseDelay: 1000, subscribeTimeout: 10000 });
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'subscribed', channel: 'deploys', seq: 0 });
  s.receive(ev(2)); // a repair, then the socket drops before its answer
  s.receive(UNAVAILABLE);
  s.drop();
  w.advance(500); // the reconnect is due; the channel's retry would have been too
  assert.equal(s.sent.filter((m) => m.action === 'subscribe').length, 2);
  const s2 = w.sockets[1];
  s2.open();
  assert.deepEqual(s2.sent, [{ action: 'subscribe', channel: 'deploys', batch: true, since: 0 }]);
  // The channel's backoff goes on (reset only by an answer): its second retry waits 1000 ms.
  w.advance(10000 + 999);
  assert.equal(s2.sent.length, 1);
  w.advance(1);
  assert.equal(s2.sent.length, 2, 'unanswered on the new socket: asked again');
});

test('a subscribed with next continues the replay from there', () => {
  const w = fakeWorld();
  const { c, events } = client(w, { stamps: { deploys: 0 } });
  c.add('deploys');
  c.start();
  const s = w.sockets[0];
  s.open();
  s.receive({ type: 'batch', frames: [ev(1), ev(2), { type: 'subscribed', channel: 'deploys', seq: 9, next: 2 }] });
  assert.deepEqual(s.sent.at(-1), { action: 'subscribe', channel: 'deploys', batch: true, since: 2 });
  s.receive({ type: 'batch', frames: [ev(3), ev(4), { type: 'subscribed', channel: 'deploys', seq: 4 }] });
  assert.equal(s.sent.length, 2);
  assert.deepEqual(events, [1, 2, 3, 4]);
});
