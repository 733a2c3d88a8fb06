// Issue 36's proof: a busy channel and a live page on the AWS stack, through
// `hookcast emulate` with AWS's limits on (Lambda concurrency, API Gateway's
// buckets, DynamoDB's partition and item capacity, the conflict-faithful
// front) and every `@connections` call 20 ms at the median (emulate's
// default). Senders are independent (node's fetch, 50 at once); the pages
// are node `ws` sockets that keep their socket, so anything they receive
// twice was pushed twice.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { ROOT, started, stopAll, page, until, pct } = require('./harness.js');

const ZAPIER = 'busy-zapier-token-0123456789';
const NETLIFY_SECRET = 'busy-netlify-secret-0123456789';
const CHANNEL = 'zaps/busy';
const SOURCES = `[sources.netlify]
kind = "netlify"
[sources.zapier]
kind = "token"
header = "x-hookcast-token"
channels = ["zaps/*"]
fields = ["i", "s"]
`;
const CONFIG = `${SOURCES}[state]\n${JSON.stringify(CHANNEL)} = "merge"\n`;
const PARAMS = [
  `NetlifySecret=${NETLIFY_SECRET}`, `ZapierToken=${ZAPIER}`, 'AllowedOrigins=http://127.0.0.1:*,http://127.0.0.1',
  'AlertEmail=none',
  // 200 webhooks a second, each in flight for tens of milliseconds, need
  // more than the default 10 set aside (docs/deploy-aws.md says so beside the
  // parameter); the account's pool is AWS's 1,000.
  'WebhookReservedConcurrency=50',
];
const WEBHOOKS = Number(process.env.BUSY_WEBHOOKS || 500);
const RATE = Number(process.env.BUSY_RATE || 200);
const SENDERS = 50;

/** One zap; the answer's status, JSON and time. */
async function zap(base, data) {
  const t0 = performance.now();
  const res = await fetch(`${base}/hooks/zapier`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hookcast-token': ZAPIER },
    body: JSON.stringify({ channel: CHANNEL, event: 'busy', data }),
  });
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { text }; }
  return { status: res.status, body, ms: performance.now() - t0, retryAfter: Number(res.headers.get('retry-after')) || 0 };
}

/** RFC 7386 merge patch, as the stack folds a merge state. */
function merge(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = merge(out[k], v);
  }
  return out;
}

let stack;
test.before(async () => { stack = await started({ params: PARAMS, config: CONFIG }); });
test.after(async () => { await stopAll(); });

test(`${WEBHOOKS} webhooks to one channel at ${RATE}/s from ${SENDERS} senders: all acknowledged, every page gets them once in seq order with no gap, the state is their fold`, async () => {
  const pages = [page(stack.websocket), page(stack.websocket), page(stack.websocket)];
  for (const p of pages) await p.subscribe(CHANNEL);
  const front = stack.dynamodb;
  const before = await (await fetch(`${front}/__emulate/counters`)).json();

  // Open loop: webhook i is due at i / RATE seconds; 50 senders take them
  // in turn (a sender busy with one does not delay the next one due).
  const due = (i) => t0 + (i * 1000) / RATE;
  const answers = new Array(WEBHOOKS);
  let next = 0;
  const t0 = performance.now() + 50;
  await Promise.all(Array.from({ length: SENDERS }, async () => {
    while (next < WEBHOOKS) {
      const i = next++;
      const wait = due(i) - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      answers[i] = await zap(stack.http, { i, s: { [`k${i % 20}`]: i } });
    }
  }));
  const refused = answers.map((a, i) => ({ i, ...a })).filter((a) => a.status !== 200);
  const ms = answers.map((a) => a.ms);
  const after = await (await fetch(`${front}/__emulate/counters`)).json();
  const conflicts = (after.conflicts || 0) - (before.conflicts || 0);
  console.log(`# ${WEBHOOKS} webhooks at ${RATE}/s: p50 ${pct(ms, 0.5).toFixed(1)} ms, p99 ${pct(ms, 0.99).toFixed(1)} ms, max ${pct(ms, 1).toFixed(1)} ms; ` +
    `refused ${refused.length}; TransactionConflict answered by the front ${conflicts}`);
  assert.deepEqual(refused.slice(0, 5).map((a) => [a.i, a.status, a.body]), [], `${refused.length} webhooks were not acknowledged`);
  const seqs = answers.map((a) => a.body.seq);
  assert.ok(answers.every((a) => a.body.duplicate === false), 'a distinct webhook was answered as a duplicate');
  assert.deepEqual([...seqs].sort((a, b) => a - b), Array.from({ length: WEBHOOKS }, (_, k) => k + 1), 'seqs are not 1..N, each once');

  // Every page: each seq once, in order, no gap; each event the webhook its seq answered.
  for (const p of pages) {
    await until(`page ${pages.indexOf(p)} has ${WEBHOOKS} events`, () => p.events(CHANNEL).length >= WEBHOOKS, 300000);
  }
  // The last push is in; anything pushed twice would be queued behind it by
  // now (one FIFO group per shard): a marker event flushes the pipeline.
  const marker = await zap(stack.http, { i: -1 });
  assert.equal(marker.status, 200, JSON.stringify(marker.body));
  for (const p of pages) await until('the marker', () => p.events(CHANNEL).some((e) => e.seq === marker.body.seq));
  const bySeq = new Map(answers.map((a, i) => [a.body.seq, i]));
  for (const p of pages) {
    const got = p.events(CHANNEL).filter((e) => e.seq !== marker.body.seq);
    assert.deepEqual(got.map((e) => e.seq), Array.from({ length: WEBHOOKS }, (_, k) => k + 1), 'a page saw a gap, a repeat or a reorder');
    for (const e of got) assert.equal(e.data.i, bySeq.get(e.seq), `seq ${e.seq} carries another webhook's data`);
  }
  // The state is the fold of every event in seq order (the marker's too).
  const fold = pages[0].events(CHANNEL).reduce((st, e) => merge(st, e.data), {});
  const hist = await (await fetch(`${stack.http}/channels/${CHANNEL}/events?since=${marker.body.seq}`)).json();
  assert.equal(hist.head, marker.body.seq);
  assert.deepEqual(hist.state, fold);
  for (const p of pages) p.close();
});

const DEPLOY = JSON.parse(fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'senders', 'netlify', 'deploy-succeeded.json'), 'utf8'));

/** Netlify's deploy notification, signed as Netlify signs it (a JWS over the body's SHA-256). */
async function deploy(id) {
  const body = JSON.stringify({ ...DEPLOY, id });
  const b64 = (x) => Buffer.from(x).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ iss: 'netlify', sha256: crypto.createHash('sha256').update(body).digest('hex') }));
  const sig = crypto.createHmac('sha256', NETLIFY_SECRET).update(`${head}.${claims}`).digest('base64url');
  const res = await fetch(`${stack.http}/hooks/netlify`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-webhook-signature': `${head}.${claims}.${sig}` }, body,
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { text }; }
  return { status: res.status, body: json };
}

test('a webhook function killed between its commit and its enqueue loses nothing: the stream delivers the event once', async () => {
  const p = page(stack.websocket);
  await p.subscribe('deploys');
  // The next SendMessageBatch the webhook function makes kills its process
  // as it calls (emulate's front knows each process by its credentials).
  const arm = await fetch(`${stack.dynamodb}/__emulate/faults`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ target: 'SendMessageBatch', function: 'WebhookFunction', error: 'kill', count: 1 }),
  });
  assert.equal(arm.status, 200, await arm.text());
  const id = crypto.randomBytes(12).toString('hex');
  const first = await deploy(id);
  // The function died mid-invocation: API Gateway answers 500, and the fault was taken.
  assert.equal(first.status, 500, JSON.stringify(first.body));
  const left = await (await fetch(`${stack.dynamodb}/__emulate/faults`)).json();
  assert.deepEqual([left.pending, left.fired], [[], 1], 'the kill was not taken: the test proves nothing');
  // It was committed before it died: the event reaches the page from the stream.
  const live = await until('the event, from the stream', () => p.events('deploys').find((e) => e.data.id === id));
  // Netlify tries again after a 500: the same delivery, answered as the event it made.
  const again = await deploy(id);
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.deepEqual([again.body.seq, again.body.duplicate], [live.seq, true]);
  // A later event is delivered behind it, and nothing twice.
  const later = await deploy(crypto.randomBytes(12).toString('hex'));
  assert.equal(later.status, 200, JSON.stringify(later.body));
  await until('the next event', () => p.events('deploys').some((e) => e.seq === later.body.seq));
  assert.deepEqual(p.events('deploys').map((e) => e.seq), [live.seq, later.body.seq], 'delivered twice, or out of order');
  p.close();
});
