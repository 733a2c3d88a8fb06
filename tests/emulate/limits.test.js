// The stack under AWS's limits, as `hookcast emulate` keeps them by default
// (Lambda concurrency and throttles, API Gateway's route, account and
// new-connection buckets, @connections latency, DynamoDB's per-partition
// capacity charged on item size), with faults injected where AWS would fail:
// a throttled function, a throttled table, API Gateway's own error frames, a
// lost frame, a failing subscriber read, 429s from @connections. Clients are
// independent of the Rust code: Debian chromium running the snippet the stack
// serves, node's `ws`, webhooks sent with node's fetch (the Zapier token
// source), moto's SQS and DynamoDB read directly.
//
// Stacks: one shared by the tests whose parameters agree (SourcesConfig with
// a [limits] table of 1 s fan-out retries, PostsPerSecondPerWorker=50,
// FanoutMaxWorkers=2, no StateConfig); the concurrency surge and the bill
// have their own, and the unmodelled key never starts one.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { launch, CEILING } = require('../browser/harness.js');
const harness = require('./harness.js');

const { ROOT, BUILD, until, running } = harness;
const NETLIFY = 'limits-netlify-secret-0123456789';
const ZAPIER = 'limits-zapier-token-0123456789';
const ORIGIN = 'http://127.0.0.1';
const PARAMS = [`NetlifySecret=${NETLIFY}`, `ZapierToken=${ZAPIER}`, `AllowedOrigins=${ORIGIN}:*,${ORIGIN}`, 'AlertEmail=none'];
// config/hookcast.toml's sources, with fan-out jobs that failed coming
// back after 1 s (functions/core/src/config.rs RawLimits) instead of 5 s doubling.
const SOURCES = `[sources.netlify]
kind = "netlify"
[sources.netlify.forms.guestbook]
fields = ["name", "message"]
[sources.zapier]
kind = "token"
header = "x-hookcast-token"
channels = ["zaps/*"]
fields = ["i", "n", "pad", "big", "k", "t"]
[limits]
fanout_retry_base_secs = 1
fanout_retry_max_secs = 1
`;
const SHARED = ['PostsPerSecondPerWorker=50', 'FanoutMaxWorkers=2'];
// template.yaml's Shards default.
const SHARDS = 8;
// functions/aws/src/dynamo.rs: a subscription transaction cancelled by a
// conflict or a throttle is tried this many times in all, then given up.
const CONFLICT_ATTEMPTS = 10;
// functions/aws/src/lib.rs: the DynamoDB client tries each request 6 times.
const SDK_ATTEMPTS = 6;
// The snippet's own: errors after which asking again cannot help.
const FATAL = /^(forbidden|invalid_channel|too_many_subscriptions|bad_message|bad_json|unknown_action|message_too_large)$/;

const pause = (ms) => new Promise((r) => setTimeout(r, ms));
/** The snippet's backoff: full jitter, capped (500 ms base, 30 s cap). */
const backoff = (attempt, base = 500, max = 30000) => Math.floor(Math.random() * Math.min(max, base * 2 ** attempt));

// ---- The emulator ----------------------------------------------------------

/** `hookcast emulate` with this file's parameters first. */
const emulate = (o = {}) => harness.emulate({ ...o, params: [...PARAMS, ...(o.params || [])] });
const started = (params, extra, config) => harness.started({ params: [...PARAMS, ...(params || [])], extra, config });

let shared = null;
/** The stack the tests with the shared parameters use (started once). */
async function sharedStack() {
  if (!shared) shared = started(SHARED, [], SOURCES);
  return shared;
}
/** Stops the shared stack before a test that runs its own (two core machine). */
async function releaseShared() {
  if (!shared) return;
  const s = await shared.catch(() => null);
  shared = null;
  if (s) await s.stop();
}

test.before(() => {
  assert.ok(fs.existsSync(path.join(BUILD, 'WebhookFunction', 'bootstrap')), `no sam build output in ${BUILD}`);
});

test.after(async () => {
  for (const s of [...running]) {
    const { code, signal } = await s.stop();
    assert.ok(code === 0 || signal === 'SIGTERM', `emulate stopped with ${code} ${signal}:${s.tail()}`);
  }
});

// ---- Calls -------------------------------------------------------------------

async function body(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { text };
  }
}

async function control(url, req) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
  const b = await body(res);
  assert.equal(res.status, 200, `${url} ${JSON.stringify(req)}: ${JSON.stringify(b)}`);
  return b;
}
/** A Lambda or WebSocket fault (the stack's `fn fault`). */
const fault = (stack, req) => control(`${stack.http}/__emulate/faults`, req);
/** A DynamoDB fault at the front; and what is pending / has fired there. */
const frontFault = (stack, req) => control(`${stack.dynamodb}/__emulate/faults`, req);
const frontFaults = async (stack) => (await fetch(`${stack.dynamodb}/__emulate/faults`)).json();
const bill = async (stack) => (await fetch(stack.bill)).json();
const wsCounters = async (stack) =>
  (await fetch(`${stack.websocket.replace('ws://', 'http://').replace(/\/[^/]*$/, '')}/__emulate/counters`)).json();
const fn = (b, id) => b.counts.functions[id];

/** A webhook from the Zapier token source; its status, answer and time. */
async function zap(stack, channel, event, data) {
  const t0 = Date.now();
  const res = await fetch(`${stack.http}/hooks/zapier`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-hookcast-token': ZAPIER },
    body: JSON.stringify({ channel, event, data }),
  });
  const answer = await body(res);
  return { status: res.status, body: answer, ms: Date.now() - t0, retryAfter: Number(res.headers.get('retry-after')) || 0 };
}

async function zapOk(stack, channel, event, data) {
  const r = await zap(stack, channel, event, data);
  assert.equal(r.status, 200, `webhook to ${channel}: ${JSON.stringify(r.body)}${stack.tail()}`);
  return r.body;
}

/**
 * As a sender does: a 503 (the event is not in the log: the table did not
 * take it) or API Gateway's 429 is sent again after a backoff; anything else
 * but 200 fails the test. How many were sent again.
 */
async function zapAsSender(stack, channel, event, data) {
  for (let attempt = 0; ; attempt++) {
    const r = await zap(stack, channel, event, data);
    if (r.status === 200) return attempt;
    assert.ok([429, 503].includes(r.status) && attempt < 12, `webhook to ${channel}: ${r.status} ${JSON.stringify(r.body)}${stack.tail()}`);
    await pause(Math.max(r.retryAfter * 1000, backoff(attempt)));
  }
}

/** moto itself (the emulator's `aws`), in the JSON protocol. */
async function aws(stack, service, target, req) {
  const res = await fetch(stack.aws, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0', 'x-amz-target': target,
      authorization: `AWS4-HMAC-SHA256 Credential=emulated/20260101/us-east-1/${service}/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: JSON.stringify(req),
  });
  const b = await body(res);
  assert.equal(res.status, 200, `${target}: ${JSON.stringify(b)}`);
  return b;
}

/** The queue whose name holds `name`: how many messages wait, are in flight, are delayed. */
async function queue(stack, name) {
  const { QueueUrls = [] } = await aws(stack, 'sqs', 'AmazonSQS.ListQueues', {});
  const url = QueueUrls.find((u) => u.includes(name));
  assert.ok(url, `no queue named *${name}* in ${JSON.stringify(QueueUrls)}`);
  const { Attributes: a } = await aws(stack, 'sqs', 'AmazonSQS.GetQueueAttributes', {
    QueueUrl: url,
    AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'],
  });
  return {
    url,
    waiting: Number(a.ApproximateNumberOfMessages),
    inFlight: Number(a.ApproximateNumberOfMessagesNotVisible),
    delayed: Number(a.ApproximateNumberOfMessagesDelayed || 0),
  };
}

/** The fan-out has nothing left to do: its queue holds no job, waiting or in flight. */
async function fanoutDrained(stack, ceiling = CEILING) {
  await until('the fan-out queue to drain', async () => {
    const q = await queue(stack, 'FanoutQueue');
    return q.waiting + q.inFlight + q.delayed === 0;
  }, ceiling);
}

/** Which of the channel's subscriber shards (partitions subs#<channel>#<shard>) hold items, as moto has them. */
async function shardsHolding(stack, channel) {
  const { TableNames } = await aws(stack, 'dynamodb', 'DynamoDB_20120810.ListTables', {});
  const table = TableNames.find((t) => t.startsWith('hookcast-'));
  const held = [];
  for (let shard = 0; shard < SHARDS; shard++) {
    const r = await aws(stack, 'dynamodb', 'DynamoDB_20120810.Query', {
      TableName: table, KeyConditionExpression: 'pk = :pk', ConsistentRead: true,
      ExpressionAttributeValues: { ':pk': { S: `subs#${channel}#${shard}` } },
    });
    if (r.Items.length) held.push({ shard, items: r.Items.length });
  }
  return held;
}

// ---- Node clients ------------------------------------------------------------

/** API Gateway's own frame (a failed, throttled or refused frame): no type. */
const fromGateway = (f) => !f.type && typeof f.message === 'string';

let visitors = 0;
/**
 * A socket that records every frame (batches unwrapped). Each is a visitor of
 * its own, from an address of its own (the emulator's X-Emulate-Source-Ip:
 * every client here is on loopback, and the stack budgets each address).
 */
function client(stack) {
  const frames = [];
  visitors += 1;
  const address = `10.${(visitors >> 16) & 255}.${(visitors >> 8) & 255}.${visitors & 255}`;
  const ws = new WebSocket(stack.websocket, { headers: { Origin: ORIGIN, 'X-Emulate-Source-Ip': address } });
  ws.on('message', (m) => {
    let msg;
    try {
      msg = JSON.parse(String(m));
    } catch {
      msg = { unparsed: String(m) };
    }
    for (const f of msg.type === 'batch' ? msg.frames : [msg]) frames.push(f);
  });
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  opened.catch(() => {});
  ws.on('error', () => {});
  return {
    ws, frames, opened,
    send: (o) => ws.send(JSON.stringify(o)),
    events: (ch) => frames.filter((f) => f.type === 'event' && f.channel === ch),
    close: () => { try { ws.close(); } catch { /* already gone */ } },
  };
}

/**
 * `n` open sockets, opened `batch` at a time (API Gateway takes 500 new
 * connections a second and the stage's route bucket); a handshake API
 * Gateway throttles (429) is tried again after a backoff.
 */
async function connectAll(stack, n, batch) {
  const clients = [];
  let throttled = 0;
  for (let attempt = 0; clients.length < n;) {
    const want = Math.min(batch, n - clients.length);
    const cs = Array.from({ length: want }, () => client(stack));
    const settled = await Promise.allSettled(cs.map((c) => c.opened));
    const refused = settled.filter((s) => s.status === 'rejected').map((s) => String(s.reason && s.reason.message));
    clients.push(...cs.filter((_, i) => settled[i].status === 'fulfilled'));
    if (refused.length) {
      assert.ok(refused.every((m) => m.includes('429')) && attempt < 12, `handshakes refused: ${refused.slice(0, 3).join('; ')}${stack.tail()}`);
      throttled += refused.length;
      await pause(backoff(attempt++));
    }
  }
  return { clients, throttled };
}

/**
 * A channel's events as the snippet applies them from `since`: in seq order,
 * a seq already applied dropped, one ahead of a gap held until it fills.
 */
function applied(frames, channel, since = 0) {
  let last = since;
  const events = [];
  const held = new Map();
  let repeats = 0;
  for (const f of frames) {
    if (f.type !== 'event' || f.channel !== channel) continue;
    if (f.seq <= last || held.has(f.seq)) {
      repeats += 1;
      continue;
    }
    held.set(f.seq, f);
    while (held.has(last + 1)) {
      events.push(held.get(last + 1));
      held.delete(last + 1);
      last += 1;
    }
  }
  return { events, held: [...held.keys()], repeats, last };
}

/**
 * Subscribes as the snippet does: a subscribe answered by an error frame (its
 * channel's, or one naming none), by API Gateway's own frame, or not at all
 * within `timeout` (15 s, the snippet's) is sent again after the snippet's
 * backoff, from where the client stands; `next` in the reply is followed.
 * One subscribe in flight per socket. Resolves with the reply and the failures.
 */
async function subscribe(c, channel, { since = null, batch = false, timeout = 15000 } = {}) {
  const failures = [];
  let from = since;
  for (let attempt = 0; ; attempt++) {
    const seen = c.frames.length;
    const msg = { action: 'subscribe', channel };
    if (batch) msg.batch = true;
    if (from != null) msg.since = Math.max(from, applied(c.frames, channel, since).last);
    c.send(msg);
    const sentAt = Date.now();
    const answer = await until(`an answer to a subscribe to ${channel}`, () => {
      for (let i = seen; i < c.frames.length; i++) {
        const f = c.frames[i];
        if (f.type === 'subscribed' && f.channel === channel) return { reply: f };
        if ((f.type === 'error' && (!f.channel || f.channel === channel)) || fromGateway(f)) return { failed: f };
      }
      return Date.now() - sentAt > timeout ? { failed: { unanswered: timeout } } : null;
    }, timeout + CEILING);
    if (answer.reply && answer.reply.next != null) {
      from = answer.reply.next;
      continue;
    }
    if (answer.reply) return { reply: answer.reply, failures };
    failures.push(answer.failed);
    if (FATAL.test(answer.failed.code || '') || failures.length > 20) {
      throw new Error(`subscribe to ${channel} failed: ${JSON.stringify(failures)}`);
    }
    await pause(backoff(attempt));
  }
}

/** How often each failure was seen, by kind. */
function kinds(failures) {
  const out = {};
  for (const f of failures) {
    const k = f.unanswered ? 'no answer' : f.type === 'error' ? `error ${f.code}` : `API Gateway: ${f.message}`;
    out[k] = (out[k] || 0) + 1;
  }
  return out;
}

// ---- Chromium ----------------------------------------------------------------

/** Records the page's WebSocket traffic and its hookcast:event details. */
function recorder() {
  window.__got = [];
  window.__sent = [];
  window.__events = [];
  const Native = window.WebSocket;
  function Recorded(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener('message', (e) => window.__got.push({ at: Date.now(), frame: JSON.parse(String(e.data)) }));
    const send = ws.send.bind(ws);
    ws.send = (d) => {
      window.__sent.push({ at: Date.now(), frame: JSON.parse(String(d)) });
      send(d);
    };
    return ws;
  }
  Recorded.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Recorded[k] = Native[k];
  window.WebSocket = Recorded;
  document.addEventListener('hookcast:event', (e) => window.__events.push(e.detail));
}

// ---- The tests ---------------------------------------------------------------

test('a page whose subscribe fails gets every later event in order without a reload', async (t) => {
  const stack = await sharedStack();
  const site = http.createServer((req, res) => {
    const ch = new URL(req.url, 'http://site').searchParams.get('ch');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><meta charset="utf-8"><title>${ch}</title>
      <p id="status" data-hookcast-status>…</p>
      <ul id="list"><template data-hookcast-append="${ch}" data-hookcast-max="100"><li data-hookcast-text="n"></li></template></ul>
      <script src="${stack.http}/hookcast.js" data-spread="0" data-storage="none"></script>`);
  });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  t.after(() => site.close());
  const browser = await launch();
  t.after(() => browser.close());

  const gatewayError = (f) => fromGateway(f) && f.message === 'Internal server error' && typeof f.connectionId === 'string';
  const subscribes = (wire, ch) => wire.sent.filter((s) => s.frame.action === 'subscribe' && s.frame.channel === ch);
  // Each way a first subscribe fails, arranged just before the page loads:
  // its first frame is that subscribe (no occupancy watched, pings every 4 min).
  const modes = [
    {
      name: 'lambda',
      arrange: () => fault(stack, { service: 'lambda', function: 'WsMessageFunction', count: 1 }),
      check: ({ ch, wire, before, after }) => {
        assert.equal(fn(after, 'WsMessageFunction').throttled - fn(before, 'WsMessageFunction').throttled, 1, 'the function was throttled once');
        assert.ok(gatewayError(wire.got[0].frame), `first answer: API Gateway's Internal server error, got ${JSON.stringify(wire.got[0])}`);
        assert.equal(fn(after, 'WsMessageFunction').invocations - fn(before, 'WsMessageFunction').invocations, 1, 'only the retry ran');
        assert.equal(subscribes(wire, ch).length, 2);
      },
    },
    {
      name: 'dynamodb',
      // The subscribe's TransactWriteItems writes conn#<id>/sub#<channel> and
      // subs#<channel>#<shard>: throttled on the second, every one of the
      // function's tries, it gives up and answers `unavailable`.
      arrange: (ch) => frontFault(stack, { target: 'TransactWriteItems', key_prefix: `subs#${ch}#`, count: CONFLICT_ATTEMPTS, error: 'throttle' }),
      check: ({ ch, wire, before, after, front0, front1 }) => {
        assert.deepEqual(wire.got[0].frame, { type: 'error', code: 'unavailable', message: wire.got[0].frame.message, channel: ch },
          'first answer: the function\'s unavailable, naming the channel');
        assert.equal(front1.fired - front0.fired, CONFLICT_ATTEMPTS, 'every throttle was used');
        assert.deepEqual(front1.pending, [], 'none left');
        assert.ok(after.counts.dynamodb_throttled - before.counts.dynamodb_throttled >= CONFLICT_ATTEMPTS);
        assert.equal(fn(after, 'WsMessageFunction').invocations - fn(before, 'WsMessageFunction').invocations, 2);
        assert.equal(subscribes(wire, ch).length, 2);
      },
    },
    {
      name: 'error',
      arrange: () => fault(stack, { service: 'websocket', route: 'subscribe', mode: 'error', count: 1 }),
      check: ({ ch, wire, before, after }) => {
        assert.ok(gatewayError(wire.got[0].frame), `first answer: API Gateway's Internal server error, got ${JSON.stringify(wire.got[0])}`);
        assert.equal(fn(after, 'WsMessageFunction').invocations - fn(before, 'WsMessageFunction').invocations, 1, 'the failed frame reached no function');
        assert.equal(fn(after, 'WsMessageFunction').throttled - fn(before, 'WsMessageFunction').throttled, 0);
        assert.equal(subscribes(wire, ch).length, 2);
      },
    },
    {
      name: 'drop',
      arrange: () => fault(stack, { service: 'websocket', route: 'subscribe', mode: 'drop', count: 1 }),
      check: ({ ch, wire, before, after }) => {
        const sent = subscribes(wire, ch);
        assert.equal(sent.length, 2);
        assert.ok(sent[1].at - sent[0].at >= 15000, `asked again after the 15 s subscribe timeout, not ${sent[1].at - sent[0].at} ms`);
        assert.ok(wire.got.every((g) => g.at >= sent[1].at), 'nothing answered the lost subscribe');
        assert.equal(fn(after, 'WsMessageFunction').invocations - fn(before, 'WsMessageFunction').invocations, 1, 'the lost frame reached no function');
      },
    },
  ];

  const pages = [];
  for (const m of modes) {
    const ch = `zaps/retry/${m.name}`;
    const [before, front0] = [await bill(stack), await frontFaults(stack)];
    await m.arrange(ch);
    const tab = await browser.newPage();
    const problems = [];
    let loads = 0;
    tab.on('pageerror', (e) => problems.push(String(e)));
    tab.on('console', (msg) => { if (msg.type() === 'error') problems.push(msg.text()); });
    tab.on('load', () => { loads += 1; });
    await tab.addInitScript(recorder);
    await tab.goto(`http://127.0.0.1:${site.address().port}/?ch=${encodeURIComponent(ch)}`);
    await tab.waitForFunction((c) => window.Hookcast && window.Hookcast.client && window.Hookcast.client.lastSeq(c) !== null, ch);
    const wire = await tab.evaluate(() => ({ got: window.__got, sent: window.__sent }));
    const [after, front1] = [await bill(stack), await frontFaults(stack)];
    m.check({ ch, wire, before, after, front0, front1 });
    t.diagnostic(`${m.name}: ${JSON.stringify(wire.got.slice(0, 1).map((g) => g.frame))} then subscribed after ${subscribes(wire, ch).length} subscribes`);
    pages.push({ ch, tab, problems, loads: () => loads });
  }

  // Several webhooks to each channel, interleaved; every page shows each once, in order.
  const N = 5;
  for (let n = 1; n <= N; n++) for (const p of pages) await zapOk(stack, p.ch, 'tick', { n });
  for (const p of pages) {
    await p.tab.waitForFunction(([c, k]) => window.__events.filter((e) => e.channel === c).length >= k, [p.ch, N]);
  }
  await fanoutDrained(stack);
  for (const p of pages) {
    const seen = await p.tab.evaluate(() => window.__events);
    assert.deepEqual(seen.map((e) => [e.channel, e.seq, e.data.n]), Array.from({ length: N }, (_, i) => [p.ch, i + 1, i + 1]), p.ch);
    // The list is newest first.
    const shown = await p.tab.$$eval('#list li', (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(shown, Array.from({ length: N }, (_, i) => String(N - i)), p.ch);
    assert.equal(p.loads(), 1, `${p.ch}: no reload`);
    assert.equal(await p.tab.getAttribute('#status', 'data-state'), 'live');
    assert.deepEqual(p.problems, [], p.ch);
    await p.tab.close();
  }
});

test('a FIFO group whose first job fails 12 times loses none of its later events', async (t) => {
  const stack = await sharedStack();
  const ch = 'zaps/fifo/first-fails';
  const page = client(stack);
  t.after(() => page.close());
  await page.opened;
  const { failures } = await subscribe(page, ch);
  assert.deepEqual(failures, []);
  // The page's shard is its FIFO group (channel#shard); its subscriber-page
  // Query fails every one of the SDK's tries, 12 times over.
  const held = await shardsHolding(stack, ch);
  assert.equal(held.length, 1, `one shard holds the page: ${JSON.stringify(held)}`);
  const { shard } = held[0];
  const prefix = `subs#${ch}#${shard}`;
  const JOB_FAILURES = 12;
  const front0 = await frontFaults(stack);
  await frontFault(stack, { target: 'Query', key_prefix: prefix, count: JOB_FAILURES * SDK_ATTEMPTS, error: 'internal' });
  const t0 = Date.now();
  for (let n = 1; n <= 3; n++) await zapOk(stack, ch, 'n', { n });
  // A job the worker gave up on is in the dead-letter queue: no need to wait on.
  let looked = 0;
  const deadLettered = async () => {
    if (Date.now() - looked < 1000) return false;
    looked = Date.now();
    return (await queue(stack, 'FanoutDeadLetters')).waiting > 0;
  };
  await until('the three events on the page (or a job dead-lettered)', async () => page.events(ch).length >= 3 || deadLettered(), 300000);
  const took = Date.now() - t0;
  await fanoutDrained(stack);
  assert.deepEqual(page.events(ch).map((e) => [e.seq, e.data.n]), [[1, 1], [2, 2], [3, 3]], 'in order, exactly once');
  const front1 = await frontFaults(stack);
  assert.equal(front1.fired - front0.fired, JOB_FAILURES * SDK_ATTEMPTS, 'every injected failure was used');
  assert.deepEqual(front1.pending, []);
  const dead = await queue(stack, 'FanoutDeadLetters');
  assert.deepEqual([dead.waiting, dead.inFlight, dead.delayed], [0, 0, 0], 'nothing in the dead-letter queue');
  // The worker's own count of the job's failures (functions/aws/src/pipeline.rs logs each).
  const tries = stack.stderr().split('\n')
    .filter((l) => l.includes('fan-out failed') && l.includes(`channel=${ch} `) && / seq=1 /.test(l) && l.includes(` shard=${shard} `))
    .map((l) => Number(/failures=(\d+)/.exec(l)[1]));
  assert.deepEqual(tries, Array.from({ length: JOB_FAILURES }, (_, i) => i + 1), 'the group\'s first job failed 12 times');
  t.diagnostic(`shard ${shard}; first job failed ${tries.length} times; all three events on the page after ${took} ms`);
});

test('a fan-out at 50 posts/s per worker with 429s injected finishes every page within the timeout and reaches every page exactly once', async (t) => {
  const stack = await sharedStack();
  const ch = 'zaps/paced/crowd';
  const PAGES = 150;
  const THROTTLES = 60;
  const { clients, throttled } = await connectAll(stack, PAGES, 50);
  t.after(() => clients.forEach((c) => c.close()));
  const subs = await Promise.all(clients.map((c) => subscribe(c, ch)));
  const retried = subs.flatMap((s) => s.failures);
  const [before, wc0] = [await bill(stack), await wsCounters(stack)];
  await fault(stack, { service: 'websocket', route: '@connections', mode: 'throttle', count: THROTTLES });
  const t0 = Date.now();
  await zapOk(stack, ch, 'n', { n: 1 });
  await zapOk(stack, ch, 'n', { n: 2 });
  await until(`${PAGES} pages to get both events`, () => clients.every((c) => c.events(ch).length >= 2), 300000);
  const took = Date.now() - t0;
  await fanoutDrained(stack);
  const wrong = clients.map((c) => c.events(ch).map((e) => e.seq)).filter((seqs) => JSON.stringify(seqs) !== '[1,2]');
  assert.deepEqual(wrong, [], 'every page got 1 then 2, once each');
  const [after, wc1] = [await bill(stack), await wsCounters(stack)];
  assert.equal(fn(after, 'FanoutFunction').timeouts, 0, 'no fan-out invocation ran past its timeout');
  assert.ok(wc1.throttled - wc0.throttled >= THROTTLES, `the ${THROTTLES} injected 429s were met (${wc1.throttled - wc0.throttled})`);
  assert.equal(wc1.posted - wc0.posted, 2 * PAGES, 'one post per page per event');
  t.diagnostic(`${PAGES} pages (${throttled} handshakes throttled, subscribe retries ${JSON.stringify(kinds(retried))}); `
    + `both events everywhere in ${took} ms; 429s ${wc1.throttled - wc0.throttled}; fan-out invocations ${fn(after, 'FanoutFunction').invocations - fn(before, 'FanoutFunction').invocations}`);
});

test('200 pages subscribe at once to a channel of 50 KB events: all get subscribed, nothing lost', async (t) => {
  // No StateConfig on this stack: since=0 replays every event.
  const stack = await sharedStack();
  const ch = 'zaps/big/fifty';
  const EVENTS = 3;
  const PAGES = 200;
  for (let i = 1; i <= EVENTS; i++) await zapOk(stack, ch, 'big', { i, pad: 'x'.repeat(50_000) });
  const { clients, throttled } = await connectAll(stack, PAGES, 50);
  t.after(() => clients.forEach((c) => c.close()));
  const before = await bill(stack);
  const t0 = Date.now();
  // All at once: each sent in the same tick.
  const subs = await Promise.all(clients.map((c) => subscribe(c, ch, { since: 0, batch: true })))
    .catch((e) => { throw new Error(`${e.message}${stack.tail(12000)}`); });
  const took = Date.now() - t0;
  const after = await bill(stack);
  let repeats = 0;
  clients.forEach((c, k) => {
    assert.equal(subs[k].reply.seq, EVENTS, `page ${k} subscribed at the head`);
    const got = applied(c.frames, ch, 0);
    repeats += got.repeats;
    assert.deepEqual(got.held, [], `page ${k}: no gap left`);
    assert.deepEqual(got.events.map((e) => [e.seq, e.data.i, e.data.pad.length]),
      Array.from({ length: EVENTS }, (_, i) => [i + 1, i + 1, 50_000]), `page ${k}: every event, once, in order`);
  });
  const failures = subs.flatMap((s) => s.failures);
  t.diagnostic(`${PAGES} subscribed in ${took} ms (${throttled} handshakes throttled); ${subs.filter((s) => s.failures.length).length} pages asked again: `
    + `${JSON.stringify(kinds(failures))}; repeated frames dropped ${repeats}; DynamoDB throttled ${after.counts.dynamodb_throttled - before.counts.dynamodb_throttled}, `
    + `WsMessageFunction throttled ${fn(after, 'WsMessageFunction').throttled - fn(before, 'WsMessageFunction').throttled}`);
});

test('a channel of 100 events of 100 KiB is read whole through its cursor, every answer under 6 MB', async (t) => {
  const stack = await sharedStack();
  const ch = 'zaps/history/big';
  // max_event_bytes (102,400 bytes of data JSON): stay just under it.
  const data = (i) => ({ i, pad: 'x'.repeat(100 * 1024 - 64) });
  assert.ok(JSON.stringify(data(100)).length <= 100 * 1024);
  let resent = 0;
  const t0 = Date.now();
  for (let i = 1; i <= 100; i++) resent += await zapAsSender(stack, ch, 'big', data(i));
  const appended = Date.now() - t0;
  const sizes = [];
  const events = [];
  let since = 0;
  for (;;) {
    const res = await fetch(`${stack.http}/channels/${ch}/events?since=${since}`);
    const text = await res.text();
    assert.equal(res.status, 200, `${text.slice(0, 300)}${stack.tail()}`);
    sizes.push(Buffer.byteLength(text));
    assert.ok(Buffer.byteLength(text) < 6_000_000, `an answer of ${Buffer.byteLength(text)} bytes`);
    const page = JSON.parse(text);
    assert.equal(page.head, 100);
    events.push(...page.events);
    if (page.next == null) break;
    assert.ok(page.next > since && sizes.length < 100, `the cursor moves on (${since} -> ${page.next})`);
    since = page.next;
  }
  assert.ok(sizes.length > 1, 'more than one answer');
  assert.deepEqual(events.map((e) => [e.seq, e.data.i]), Array.from({ length: 100 }, (_, i) => [i + 1, i + 1]));
  assert.ok(events.every((e) => e.data.pad === data(0).pad), 'every event whole');
  t.diagnostic(`100 webhooks in ${appended} ms (${resent} sent again after a 503/429); history in ${sizes.length} answers of ${sizes.join(', ')} bytes`);
});

test('1,000 subscribes arrive while webhooks do; every webhook is acknowledged within 10 s', async (t) => {
  await releaseShared();
  // 130 in the account: 20 reserved for the webhook function, and the
  // subscribe function capped at 10 by its own reservation (the template's
  // MessageReservedConcurrency), so a flood of subscribes is throttled
  // before it takes the account's pool or the table's capacity.
  const stack = await started(['WebhookReservedConcurrency=20', 'MessageReservedConcurrency=10'], ['--account-concurrency', '130']);
  t.after(() => stack.stop());
  const CONNECTIONS = 40;
  const PER = 25;
  const { clients } = await connectAll(stack, CONNECTIONS, 20);
  t.after(() => clients.forEach((c) => c.close()));
  const before = await bill(stack);
  // 30 webhooks, one every 100 ms, and the 1,000 subscribes as fast as the sockets take them.
  const hooks = (async () => {
    const out = [];
    for (let i = 0; i < 30; i++) {
      out.push(zap(stack, 'zaps/surge/hooks', 'tick', { i }));
      await pause(100);
    }
    return Promise.all(out);
  })();
  clients.forEach((c, k) => { for (let j = 0; j < PER; j++) c.send({ action: 'subscribe', channel: `zaps/surge/${k}/${j}` }); });
  const acks = await hooks;
  // Every subscribe is answered: subscribed, an error frame, or API Gateway's frame.
  const answers = () => {
    const n = { subscribed: 0 };
    for (const c of clients) {
      for (const f of c.frames) {
        const k = f.type === 'subscribed' ? 'subscribed' : f.type === 'error' ? `error ${f.code}` : fromGateway(f) ? f.message : null;
        if (k) n[k] = (n[k] || 0) + 1;
      }
    }
    return n;
  };
  await until('an answer to each of the 1,000 subscribes', () => Object.values(answers()).reduce((a, b) => a + b, 0) >= CONNECTIONS * PER, 300000);
  const after = await bill(stack);
  const throttled = fn(after, 'WsMessageFunction').throttled - fn(before, 'WsMessageFunction').throttled;
  const ms = acks.map((a) => a.ms).sort((a, b) => a - b);
  t.diagnostic(`webhook acks: ${acks.map((a) => `${a.status}/${a.ms}ms`).join(' ')} (median ${ms[15]} ms, max ${ms[29]} ms); `
    + `subscribe answers ${JSON.stringify(answers())}; WsMessageFunction throttled ${throttled}, `
    + `invoked ${fn(after, 'WsMessageFunction').invocations - fn(before, 'WsMessageFunction').invocations}; `
    + `API Gateway throttled ${after.counts.apigw_throttled - before.counts.apigw_throttled}; `
    + `WebhookFunction throttled ${fn(after, 'WebhookFunction').throttled - fn(before, 'WebhookFunction').throttled}, `
    + `timeouts ${fn(after, 'WebhookFunction').timeouts - fn(before, 'WebhookFunction').timeouts}`);
  const late = acks.map((a, i) => ({ i, status: a.status, ms: a.ms })).filter((a) => a.status !== 200 || a.ms > 10000);
  assert.deepEqual(late, [], `every webhook acknowledged (200) within 10 s${stack.tail(3000)}`);
  assert.ok(throttled > 0, 'the surge reached the subscribe function\'s concurrency: some subscribes were throttled');
  assert.equal(fn(after, 'WebhookFunction').throttled, 0, 'the reservation kept the webhook function unthrottled');
});

test('an unmodelled template key stops emulate and names the key', async () => {
  await releaseShared();
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-limits-')), 'template.yaml');
  const src = fs.readFileSync(path.join(ROOT, 'template.yaml'), 'utf8');
  const changed = src.replace(/(\n {2}Table:\n {4}Type: AWS::DynamoDB::Table\n(?: {4}.*\n)*? {4}Properties:\n)/, '$1      TableClass: STANDARD\n');
  assert.notEqual(changed, src, 'the template has the Table');
  fs.writeFileSync(file, changed);
  const r = await emulate({ template: file });
  if (!r.failed) await r.stop();
  assert.ok(r.failed, 'emulate must not become ready');
  assert.notEqual(r.failed.code, 0);
  assert.equal(r.readyWritten, false, 'no ready file');
  assert.match(r.log(), /Table: TableClass is not modelled/);
});

/** template.yaml with `from` replaced by `to` in the resource `id`, in a file of its own. */
function withChange(id, from, to) {
  const src = fs.readFileSync(path.join(ROOT, 'template.yaml'), 'utf8');
  const start = src.indexOf(`\n  ${id}:\n`);
  const end = src.indexOf('\n\n', start);
  assert.ok(start > 0 && src.slice(start, end).includes(from), `${id} has ${from}`);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-iam-')), 'template.yaml');
  fs.writeFileSync(file, src.slice(0, start) + src.slice(start, end).replace(from, to) + src.slice(end));
  return file;
}

test('each function runs under its role: a call the role does not allow is refused as AWS refuses it', async (t) => {
  await releaseShared();
  // The webhook's role without the channel's event items (evs#): its commit
  // (a transaction whose every item IAM authorises on its own) is refused.
  const stack = await harness.started({ params: [...PARAMS, ...SHARED], config: SOURCES, template: withChange('WebhookRole', '"evs#*", ', '') });
  t.after(() => stack.stop({ refusals: true }));
  const r = await zap(stack, 'zaps/iam/one', 'n', { n: 1 });
  assert.ok(r.status >= 500, `a commit the role refuses is not acknowledged: ${r.status} ${JSON.stringify(r.body)}`);
  await until('the refusal in emulate\'s log', () => stack.refusals().length > 0);
  assert.match(stack.refusals()[0],
    /assumed-role\/[^/]+WebhookRole[^/]*\/[^ ]+WebhookFunction[^ ]* is not authorized to perform: dynamodb:PutItem on resource: arn:aws:dynamodb:[^ ]+:table\//);
  // The event is in no log: nothing half-committed reads back.
  const head = await fetch(`${stack.http}/channels/zaps/iam/one/head`);
  const got = await body(head);
  assert.ok(!(got && got.seq > 0), `no event was committed: ${JSON.stringify(got)}`);
});

test('a role without what Lambda does with it stops emulate as the deploy would fail', async () => {
  await releaseShared();
  // CreateEventSourceMapping: "The provided execution role does not have permissions to call ReceiveMessage on SQS".
  const r = await emulate({ template: withChange('FanoutRole', 'sqs:ReceiveMessage, ', '') });
  if (!r.failed) await r.stop();
  assert.ok(r.failed, 'emulate must not become ready');
  assert.match(r.log(), /FanoutFunction\.Events\.Jobs: the function's role does not allow what Lambda does with it: .* sqs:ReceiveMessage on resource: arn:aws:sqs:/);
  // Logs: without them every line the function writes would be dropped.
  const logs = await emulate({ template: withChange('FunctionLogsPolicy', '- !GetAtt DispatchLogs.Arn', '') });
  if (!logs.failed) await logs.stop();
  assert.ok(logs.failed, 'emulate must not become ready');
  assert.match(logs.log(), /DispatchFunction \(AWS::Serverless::Function\): the function's role does not allow what Lambda does with it: .* logs:CreateLogStream/);
});

const EDGE = 'edge-origin-secret-0123456789abcdef0123';
const EDGE_ACL = 'EdgeWebAclArn=arn:aws:wafv2:us-east-1:123456789012:global/webacl/hookcast-edge/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9';

/**
 * A WebSocket handshake as CloudFront sends it on (the edge option): from
 * one of CloudFront's addresses, with the origin's custom header and the
 * viewer's address; `edge` false leaves the custom header out, as a client
 * going around the distribution would. Resolves with 'open' or the status
 * API Gateway answered.
 */
function handshake(stack, viewer, { edge = true } = {}) {
  const headers = { Origin: ORIGIN, 'X-Emulate-Source-Ip': '130.176.9.1' };
  if (viewer) headers['CloudFront-Viewer-Address'] = `${viewer}:${40000 + Math.floor(Math.random() * 20000)}`;
  if (edge) headers['X-Hookcast-Edge'] = EDGE;
  const ws = new WebSocket(`${stack.websocket}`, { headers });
  return new Promise((resolve) => {
    ws.once('open', () => resolve({ result: 'open', ws }));
    ws.once('unexpected-response', (_, res) => resolve({ result: res.statusCode, ws }));
    ws.once('error', (e) => resolve({ result: String(e.message), ws }));
  });
}

test('the edge option: a request around the CloudFront distribution is refused; through it each viewer is budgeted, not CloudFront', async (t) => {
  await releaseShared();
  // The template's rule: the ACL without the origin secret is no stack.
  const bare = await emulate({ params: [EDGE_ACL] });
  if (!bare.failed) await bare.stop();
  assert.ok(bare.failed, 'emulate must not become ready');
  assert.match(bare.log(), /EdgeWebAclArn needs EdgeOriginSecret/);

  const stack = await started([...SHARED, EDGE_ACL, `EdgeOriginSecret=${EDGE}`], [], SOURCES);
  t.after(() => stack.stop());
  const send = (headers) => fetch(`${stack.http}/hooks/zapier`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-hookcast-token': ZAPIER, ...headers },
    body: JSON.stringify({ channel: 'zaps/edge', event: 'n', data: { n: 1 } }),
  });
  const around = await send({});
  assert.equal(around.status, 403);
  assert.equal((await around.json()).error, 'forbidden');
  const wrong = await send({ 'x-hookcast-edge': EDGE.replace(/.$/, 'X') });
  assert.equal(wrong.status, 403, 'a wrong origin secret is no secret');
  const through = await send({ 'x-hookcast-edge': EDGE });
  assert.equal(through.status, 200, JSON.stringify(await through.json()));

  // The snippet, through the edge: the socket is /<stage> on the script's own host.
  const js = await (await fetch(`${stack.http}/hookcast.js`, { headers: { 'x-hookcast-edge': EDGE } })).text();
  const wrapper = js.slice(0, js.indexOf('\n'));
  const script = { src: 'https://d111111abcdef8.cloudfront.net/hookcast.js', getAttribute: () => null, setAttribute(k, v) { this[k] = v; } };
  require('node:vm').runInNewContext(wrapper, { document: { currentScript: script }, URL });
  assert.equal(script['data-url'], 'wss://d111111abcdef8.cloudfront.net/live');

  // Around the distribution: refused before anything else.
  const direct = await handshake(stack, '198.51.100.7', { edge: false });
  assert.equal(direct.result, 403);
  // Through it but naming no viewer (an origin request policy without
  // CloudFront-Viewer-Address): refused, not counted against CloudFront's address.
  const anonymous = await handshake(stack, null);
  assert.equal(anonymous.result, 403);
  // Through it, every handshake comes from CloudFront's address; each
  // viewer has its own budget (60 new connections a minute), so 61
  // viewers all connect, and the 61st handshake of one viewer is refused.
  const opened = [];
  t.after(() => opened.forEach((w) => w.terminate()));
  const many = await Promise.all(Array.from({ length: 61 }, (_, i) => handshake(stack, `198.51.${100 + (i >> 8)}.${i & 255}`)));
  many.forEach((h) => opened.push(h.ws));
  assert.deepEqual(many.filter((h) => h.result !== 'open').map((h) => h.result), [], 'every viewer connects');
  // The budget is per clock minute: a run that crosses a minute's turn
  // proves nothing and is run again, from another viewer, in the next.
  let one = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    await until('the start of a minute', () => Date.now() % 60000 < 10000, 70000);
    const minute = Math.floor(Date.now() / 60000);
    one = [];
    for (let i = 0; i < 61; i++) {
      const h = await handshake(stack, `203.0.113.${77 + attempt}`);
      opened.push(h.ws);
      one.push(h.result);
    }
    if (Math.floor(Date.now() / 60000) === minute) break;
    t.diagnostic(`attempt ${attempt} crossed a minute's turn`);
  }
  assert.deepEqual(one.slice(0, 60).filter((r) => r !== 'open'), [], 'one viewer\'s first 60 connect');
  assert.equal(one[60], 429, 'its 61st in the minute is refused: the budget is the viewer\'s');
});

test('the edge option off, a secret left from when it was on locks nobody out', async (t) => {
  await releaseShared();
  // `sam deploy` keeps a parameter's earlier value: EdgeOriginSecret
  // without EdgeWebAclArn is a stack with no distribution in front.
  const stack = await started([...SHARED, `EdgeOriginSecret=${EDGE}`], [], SOURCES);
  t.after(() => stack.stop());
  const r = await zap(stack, 'zaps/edge-off', 'n', { n: 1 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const h = await handshake(stack, null, { edge: false });
  t.after(() => h.ws.terminate());
  assert.equal(h.result, 'open');
  const js = await (await fetch(`${stack.http}/hookcast.js`)).text();
  assert.match(js.slice(0, js.indexOf('\n')), /"ws:\/\/127\.0\.0\.1:\d+\/live"/, 'the snippet names the WebSocket API itself');
});

test('the bill of a test run is printed, and its counts match what the test sent', async (t) => {
  await releaseShared();
  const stack = await started([], []);
  t.after(() => stack.stop());
  const ch = 'zaps/bill/three';
  const clients = [client(stack), client(stack), client(stack)];
  t.after(() => clients.forEach((c) => c.close()));
  await Promise.all(clients.map((c) => c.opened));
  // Without since, on a channel with no state: nothing is replayed, so the
  // reply is one frame, `subscribed`, and one PostToConnection (one message
  // on the bill). With a since or a state the reply has more frames, and
  // how many posts they make depends on batching ("batch": true packs
  // frames into posts of up to 96 KB; without it each frame may be a post
  // of its own): that count would test the packing, not the bill. Without
  // "batch" the reply is also the bare frame, which the assertion below
  // reads as it is. No pings: the bill counts every frame a client sends.
  for (const c of clients) c.send({ action: 'subscribe', channel: ch });
  await until('3 answers', () => clients.every((c) => c.frames.some((f) => f.type === 'subscribed' || f.type === 'error' || fromGateway(f))));
  assert.deepEqual(clients.map((c) => c.frames.map((f) => f.type)), [['subscribed'], ['subscribed'], ['subscribed']]);
  await zapOk(stack, ch, 'n', { n: 1 });
  await zapOk(stack, ch, 'n', { n: 2 });
  await until('6 deliveries', () => clients.every((c) => c.events(ch).length === 2));
  await fanoutDrained(stack);
  const want = { ws_messages_in: 3, ws_messages_out: 3 + 6, http_requests: 2 };
  const b = await bill(stack);
  const counts = (x) => ({
    ws_messages_in: x.counts.ws_messages_in, ws_messages_out: x.counts.ws_messages_out, http_requests: x.counts.http_requests,
  });
  assert.deepEqual(counts(b), want);
  assert.equal(fn(b, 'WebhookFunction').invocations, 2);
  assert.equal(fn(b, 'WsMessageFunction').invocations, 3);
  assert.ok(b.total > 0 && b.lines.length > 0);

  const { code, signal } = await stack.stop();
  assert.ok(code === 0 || signal === 'SIGTERM', `emulate stopped with ${code} ${signal}${stack.tail()}`);
  const err = stack.stderr();
  assert.match(err, /what this run would have cost on AWS/);
  assert.match(err, /WebSocket messages sent\s+9\.000/);
  const line = err.split('\n').find((l) => l.startsWith('{"bill":'));
  assert.ok(line, `a {"bill":…} line${stack.tail()}`);
  const printed = JSON.parse(line).bill;
  assert.deepEqual(counts(printed), want, 'the printed bill counts the same');
  assert.equal(fn(printed, 'WebhookFunction').invocations, 2);
  t.diagnostic(`total $${printed.total.toFixed(8)}`);
});
