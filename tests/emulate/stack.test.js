// The AWS stack as AWS runs it: `hookcast emulate` on `sam build`'s output
// (the real bootstraps, the template's environment, private channels on),
// with each WebSocket frame its own concurrent invocation and a DynamoDB
// front that cancels colliding transactions as DynamoDB does. Clients are
// independent: Debian chromium with the snippet the webhook function serves,
// node's `ws`, and webhooks signed with node's crypto. Channel state (the
// stack's StateConfig) and build stamps (stamp.mjs against the HTTP API)
// run on the DynamoDB store.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFileSync } = require('node:child_process');
const WebSocket = require('ws');
const { launch, BIN } = require('../browser/harness.js');
const harness = require('./harness.js');

const { ROOT, BUILD, until } = harness;
const NETLIFY = 'emulate-netlify-secret-0123456789';
const ZAPIER = 'emulate-zapier-token-0123456789';
const SUBSCRIBE = 'emulate-subscribe-secret-0123456789';
const ORIGIN = 'http://127.0.0.1';
// The template's sources, with the fields these tests' zaps carry (a token
// source forwards listed fields only).
const SOURCES = `[sources.netlify]
kind = "netlify"
[sources.netlify.forms.guestbook]
fields = ["name", "message"]
[sources.zapier]
kind = "token"
header = "x-hookcast-token"
channels = ["zaps/*"]
fields = ["title", "url", "state", "home", "away", "period", "n", "i"]
`;
// The site's hookcast.toml: those sources, private channels and state rules.
const CONFIG = `${SOURCES}[private]
channels = ["zaps/private/*"]
[state]
"zaps/score" = "merge"
"zaps/feed/*" = "list:5"
`;
const PARAMS = [
  `NetlifySecret=${NETLIFY}`, `ZapierToken=${ZAPIER}`, `SubscribeSecret=${SUBSCRIBE}`,
  `AllowedOrigins=${ORIGIN}:*,${ORIGIN}`, 'AlertEmail=none',
];

/** Starts `hookcast emulate` with this file's parameters and configuration. */
const emulate = (o = {}) => harness.emulate({ config: CONFIG, ...o, params: PARAMS });

let stack, browser, site;

test.before(async () => {
  assert.ok(fs.existsSync(path.join(BUILD, 'WebhookFunction', 'bootstrap')), `no sam build output in ${BUILD}`);
  stack = await emulate();
  assert.ok(!stack.failed, `emulate did not become ready:\n${stack.log && stack.log()}`);
});

test.after(async () => {
  if (site) site.close();
  if (browser) await browser.close();
  if (stack && stack.stop) {
    const { code, signal } = await stack.stop();
    assert.ok(code === 0 || signal === 'SIGTERM', `emulate stopped with ${code} ${signal}:\n${stack.log()}`);
  }
});

const counters = async (base) => (await fetch(`${base}/__emulate/counters`)).json();
const wsCounters = () => counters(stack.websocket.replace('ws://', 'http://').replace(/\/[^/]*$/, ''));

let clients = 0;
/**
 * A socket that records every frame (batches unwrapped) and can wait for one.
 * Each from an address of its own, as pages are: one address may open 60
 * connections a minute (issue 35's budget), and this file opens more.
 */
function client() {
  const frames = [];
  const n = clients++;
  const ws = new WebSocket(stack.websocket, { headers: { Origin: ORIGIN, 'X-Emulate-Source-Ip': `10.77.${n >> 8}.${n & 255}` } });
  ws.on('message', (m) => {
    const msg = JSON.parse(String(m));
    for (const f of msg.type === 'batch' ? msg.frames : [msg]) frames.push(f);
  });
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const c = {
    ws, frames, opened,
    send: (o) => ws.send(JSON.stringify(o)),
    events: (ch) => frames.filter((f) => f.type === 'event' && f.channel === ch),
    subscribed: (ch) => frames.find((f) => f.type === 'subscribed' && f.channel === ch),
    errors: () => frames.filter((f) => f.type === 'error' || f.message === 'Internal server error'),
    waitFor: (what, pred) => until(what, () => frames.find(pred)),
  };
  return c;
}

async function zap(channel, event, data) {
  const res = await fetch(`${stack.http}/hooks/zapier`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-hookcast-token': ZAPIER },
    body: JSON.stringify({ channel, event, data }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

async function netlify(payload) {
  const body = JSON.stringify(payload);
  const b64 = (x) => Buffer.from(x).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ iss: 'netlify', sha256: crypto.createHash('sha256').update(body).digest('hex') }));
  const sig = crypto.createHmac('sha256', NETLIFY).update(`${head}.${claims}`).digest('base64url');
  const res = await fetch(`${stack.http}/hooks/netlify`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-webhook-signature': `${head}.${claims}.${sig}` }, body,
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

/** A raw DynamoDB call to moto itself (behind the front: what the table holds). */
async function dynamodb(op, body) {
  const res = await fetch(stack.aws, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0', 'x-amz-target': `DynamoDB_20120810.${op}`,
      authorization: 'AWS4-HMAC-SHA256 Credential=emulated/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

let table;
async function query(pk) {
  if (!table) table = (await dynamodb('ListTables', {})).TableNames.find((t) => t.startsWith('hookcast-'));
  const r = await dynamodb('Query', { TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pk } }, ConsistentRead: true });
  return r.Items;
}

/** The channel's occupancy counters and its subscriber items, as stored. */
async function stored(channel) {
  const counted = (await query(`count#${channel}`)).reduce((n, i) => n + Number(i.n.N), 0);
  let subscribers = 0;
  for (let shard = 0; shard < 8; shard++) subscribers += (await query(`subs#${channel}#${shard}`)).length;
  return { counted, subscribers };
}

/** Occupancy as a subscribed page asks for it (once per connection: the ask is rate-limited). */
async function occupancy(page, channel) {
  page.send({ action: 'occupancy', channel });
  const f = await page.waitFor(`occupancy of ${channel}`, (m) => m.type === 'occupancy' && m.channel === channel);
  return f.count;
}

test('a page with three channels, one private, goes live through the emulated stack and a signed Netlify webhook updates it', async () => {
  const token = execFileSync(BIN, ['token', '--channel', 'zaps/private/*', '--ttl', '10m'],
    { env: { ...process.env, HOOKCAST_SUBSCRIBE_SECRET: SUBSCRIBE } }).toString().trim();
  const page = () => `<!doctype html><meta charset="utf-8"><title>site</title>
    <p id="status" data-hookcast-status>…</p>
    <section data-hookcast-channel="deploys"><span id="state" data-hookcast-text="state">unknown</span></section>
    <ul id="entries"><template data-hookcast-append="forms/guestbook"><li data-hookcast-text="fields.name"></li></template></ul>
    <p data-hookcast-channel="zaps/private/7"><span id="order" data-hookcast-text="state">pending</span></p>
    <script src="${stack.http}/hookcast.js" data-token="${token}" data-spread="0"></script>`;
  site = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(page()); });
  await new Promise((r) => site.listen(0, '127.0.0.1', r));
  browser = await launch();
  const tab = await browser.newPage();
  const problems = [];
  tab.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  tab.on('pageerror', (e) => problems.push(String(e)));
  await tab.goto(`http://127.0.0.1:${site.address().port}/`);
  await tab.waitForSelector('#status[data-state="live"]');
  await tab.waitForFunction(() => ['deploys', 'forms/guestbook', 'zaps/private/7']
    .every((c) => window.Hookcast.client.lastSeq(c) !== null));

  await netlify({ id: crypto.randomBytes(8).toString('hex'), state: 'ready', context: 'production', branch: 'main' });
  await tab.waitForFunction(() => document.querySelector('#state').textContent === 'ready');
  await netlify({ form_name: 'guestbook', id: 'f1', data: { name: 'Ada', message: 'hi' } });
  await tab.waitForFunction(() => document.querySelector('#entries li') !== null);
  assert.equal(await tab.textContent('#entries li'), 'Ada');
  await zap('zaps/private/7', 'order.updated', { state: 'shipped' });
  await tab.waitForFunction(() => document.querySelector('#order').textContent === 'shipped');

  // Without the token the private channel is refused, never silently empty.
  const anon = client();
  await anon.opened;
  anon.send({ action: 'subscribe', channel: 'zaps/private/7' });
  const refused = await anon.waitFor('a refusal', (f) => f.type === 'error');
  assert.equal(refused.code, 'forbidden');
  anon.ws.close();
  assert.deepEqual(problems, []);
  await tab.close();
});

test('channel state and build stamps on the DynamoDB store: a late page is current from the state; a stamped page replays only what came after its build', async (t) => {
  const score = 'zaps/score';
  const feed = 'zaps/feed/news';
  await zap(score, 'score', { home: 0, away: 0, period: { n: 1 } });
  await zap(score, 'score', { home: 1, period: { n: 2 } });
  for (let i = 1; i <= 7; i++) await zap(feed, 'post', { title: `t${i}` });

  // A socket with no since: the state first, at the head, then subscribed (no reset).
  const c = client();
  t.after(() => c.ws.close());
  await c.opened;
  c.send({ action: 'subscribe', channel: score, batch: true });
  const sub = await c.waitFor('subscribed', (f) => f.type === 'subscribed' && f.channel === score);
  const st = c.frames.find((f) => f.type === 'state' && f.channel === score);
  assert.deepEqual(st, { type: 'state', channel: score, seq: 2, mode: 'merge', state: { home: 1, away: 0, period: { n: 2 } } });
  assert.ok(c.frames.indexOf(st) < c.frames.indexOf(sub) && sub.seq === 2 && !sub.reset);
  // A since from another log (a wiped table): the list state, newest 5, oldest first.
  c.send({ action: 'subscribe', channel: feed, since: 3, epoch: 'not-this-log', batch: true });
  await c.waitFor('subscribed', (f) => f.type === 'subscribed' && f.channel === feed);
  const list = c.frames.find((f) => f.type === 'state' && f.channel === feed);
  c.ws.close();
  assert.deepEqual(list.state.map((e) => e.data.title), ['t3', 't4', 't5', 't6', 't7']);
  // State and reply are one post (one batch): nothing replayed from another
  // log between them. (A live push of 6 or 7 may still arrive around it: the
  // fan-out is asynchronous, and the client drops what the state holds.)
  const reply = c.frames[c.frames.indexOf(list) + 1];
  assert.deepEqual([reply.type, reply.seq, !!reply.reset], ['subscribed', 7, false]);

  // History over the HTTP API carries the state; /head is what a build stamps.
  const hist = await (await fetch(`${stack.http}/channels/${score}/events?since=0`)).json();
  assert.deepEqual([hist.mode, hist.state.home, hist.head], ['merge', 1, 2]);
  const head = await (await fetch(`${stack.http}/channels/${feed}/head`)).json();
  assert.equal(head.seq, 7);

  // A build stamped by stamp.mjs against the stack, served from its own origin.
  const build = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-emulate-site-'));
  fs.writeFileSync(path.join(build, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><title>s</title></head><body>
    <p id="status" data-hookcast-status>…</p>
    <section data-hookcast-channel="${score}" data-hookcast-state><b id="home" data-hookcast-text="home">1</b> <b id="away" data-hookcast-text="away">0</b></section>
    <ul id="feed"><template data-hookcast-append="${feed}"><li data-hookcast-text="title"></li></template></ul>
    <script src="${stack.http}/hookcast.js" data-spread="0"></script></body></html>`);
  execFileSync(process.execPath, [path.join(ROOT, 'site-snippet', 'stamp', 'stamp.mjs'), '--url', stack.http, '--dir', build, '--deploy-id', 'd1']);
  assert.match(fs.readFileSync(path.join(build, 'index.html'), 'utf8'), new RegExp(`content="${score}=2 ${feed}=7"`));
  await zap(feed, 'post', { title: 't8' });
  await zap(score, 'score', { away: 3 });
  const server = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(fs.readFileSync(path.join(build, 'index.html'))); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const b = browser || (browser = await launch());
  const tab = await b.newPage();
  t.after(() => { tab.close().catch(() => {}); server.close(); });
  const states = [];
  await tab.exposeFunction('__state', (ch) => states.push(ch));
  await tab.addInitScript(() => document.addEventListener('hookcast:state', (e) => window.__state(e.detail.channel)));
  await tab.goto(`http://127.0.0.1:${server.address().port}/`);
  await tab.waitForFunction(() => document.querySelector('#away').textContent === '3' && document.querySelectorAll('#feed li').length === 1);
  assert.equal(await tab.textContent('#feed li'), 't8', 'only what came after the build');
  assert.equal(await tab.textContent('#home'), '1', 'the built value the patch left alone');
  assert.deepEqual(states, [], 'replayed from the stamps: no state needed');
});

test('30 pages subscribing to three channels at once are all subscribed; 10 vanish and exactly those are deleted at the next push', async () => {
  const chans = ['zaps/herd/a', 'zaps/herd/b', 'zaps/herd/c'];
  const pages = Array.from({ length: 30 }, client);
  await Promise.all(pages.map((p) => p.opened));
  // Each page sends its three subscribes back to back, as the snippet does:
  // three concurrent invocations per page, 90 in all.
  for (const p of pages) for (const ch of chans) p.send({ action: 'subscribe', channel: ch, batch: true });
  await until('90 subscriptions', () => pages.every((p) => chans.every((ch) => p.subscribed(ch)) || p.errors().length));
  for (const p of pages) assert.deepEqual(p.errors(), [], `no subscribe failed; the stack said:\n${stack.log().slice(-4000)}`);
  for (const ch of chans) assert.deepEqual(await stored(ch), { counted: 30, subscribers: 30 }, ch);
  assert.equal(await occupancy(pages[29], chans[1]), 30);

  // 10 pages vanish without a close frame: API Gateway may never run $disconnect.
  const vanished = pages.slice(0, 10);
  const live = pages.slice(10);
  for (const p of vanished) p.ws._socket.destroy();
  await until('the emulator to see 10 sockets go', async () => (await wsCounters()).open <= 20 + 0);
  const before = await wsCounters();
  await zap('zaps/herd/a', 'tick', { n: 1 });
  await until('20 live pages to get the push', () => live.every((p) => p.events('zaps/herd/a').length === 1));
  // The counter moves after the subscription's transaction (a plain ADD), so
  // wait for both; any other figure at the ceiling is the failure.
  let now;
  await until('the vanished 10 to be forgotten and uncounted', async () => {
    now = await stored('zaps/herd/a');
    return now.subscribers === 20 && now.counted === 20;
  }).catch(() => {});
  assert.deepEqual(now, { counted: 20, subscribers: 20 }, 'occupancy counts the rest exactly');
  const after = await wsCounters();
  assert.equal(after.gone - before.gone, 10, 'exactly the 10 vanished connections were posted to and gone (410)');
  assert.equal(after.posted - before.posted, 20, 'every live page got the push once');
  // The next push goes to the 20 alone: the gone ones were deleted.
  await zap('zaps/herd/a', 'tick', { n: 2 });
  await until('the second push', () => live.every((p) => p.events('zaps/herd/a').length === 2));
  const last = await wsCounters();
  assert.equal(last.gone - after.gone, 0, 'no post to a deleted connection');
  assert.equal(await occupancy(live[0], 'zaps/herd/a'), 20);
  assert.deepEqual(await stored('zaps/herd/a'), { counted: 20, subscribers: 20 });
  for (const p of live) p.ws.close();
});

test('a reconnect with since replays exactly what it missed, in order, then goes live', async () => {
  const ch = 'zaps/resume';
  const a = client();
  await a.opened;
  a.send({ action: 'subscribe', channel: ch });
  await a.waitFor('subscribed', (f) => f.type === 'subscribed');
  for (let i = 1; i <= 3; i++) await zap(ch, 'n', { i });
  await until('3 events', () => a.events(ch).length === 3);
  const seen = a.events(ch).map((e) => e.seq);
  assert.deepEqual(a.events(ch).map((e) => e.data.i), [1, 2, 3], "live pushes in order");
  a.ws.close();
  for (let i = 4; i <= 8; i++) await zap(ch, 'n', { i });
  const b = client();
  await b.opened;
  b.send({ action: 'subscribe', channel: ch, since: seen[2] });
  const sub = await b.waitFor('subscribed', (f) => f.type === 'subscribed' && f.channel === ch);
  // The fan-out is asynchronous: a push of 4..8 still on its way when the
  // subscription was written arrives as well, before, inside or after the
  // replay, with the same seq. A client applies a channel's events in seq
  // order from where it stood, drops a seq it has applied, and holds one
  // ahead of a gap until the gap fills: the snippet's rule. What it applies
  // must be exact, and nothing may be left waiting on a gap.
  const inOrder = (frames) => {
    let last = seen[2];
    const applied = [];
    const held = new Map();
    for (const e of frames.filter((f) => f.type === 'event' && f.channel === ch)) {
      const before = applied.find((a) => a.seq === e.seq) || held.get(e.seq);
      if (before) {
        assert.deepEqual(e, before, 'a repeat is the same event');
        continue;
      }
      assert.ok(e.seq > seen[2], `seq ${e.seq} was seen before the reconnect`);
      held.set(e.seq, e);
      while (held.has(last + 1)) {
        applied.push(held.get(last + 1));
        held.delete(last + 1);
        last += 1;
      }
    }
    return { applied, held: [...held.keys()] };
  };
  const replayed = inOrder(b.frames.slice(0, b.frames.indexOf(sub)));
  assert.deepEqual(replayed.applied.map((e) => e.data.i), [4, 5, 6, 7, 8], 'by the subscribe reply: exactly the missed ones, in order');
  assert.deepEqual(replayed.held, [], 'no gap left by the subscribe reply');
  await zap(ch, 'n', { i: 9 });
  await until('the live event', () => b.events(ch).some((e) => e.data.i === 9));
  const { applied, held } = inOrder(b.frames);
  assert.deepEqual(held, []);
  assert.deepEqual(applied.map((e) => e.data.i), [4, 5, 6, 7, 8, 9]);
  assert.deepEqual(applied.map((e) => e.seq), [1, 2, 3, 4, 5, 6].map((k) => seen[2] + k));
  b.ws.close();
});

test('50 concurrent subscribes to one channel against the conflict-faithful front: none fails silently', async (t) => {
  const ch = 'zaps/crowd';
  const front0 = await counters(stack.dynamodb);
  const crowd = Array.from({ length: 50 }, client);
  await Promise.all(crowd.map((c) => c.opened));
  for (const c of crowd) c.send({ action: 'subscribe', channel: ch });
  // Every subscribe is answered: subscribed, or an error frame the page can act on.
  await until('50 answers', () => crowd.every((c) => c.subscribed(ch) || c.errors().length));
  const failed = crowd.filter((c) => !c.subscribed(ch));
  assert.deepEqual(failed.map((c) => c.errors()), [], 'every subscribe succeeded');
  assert.deepEqual(await stored(ch), { counted: 50, subscribers: 50 });
  assert.equal(await occupancy(crowd[0], ch), 50);
  await zap(ch, 'hello', {});
  await until('50 deliveries', () => crowd.every((c) => c.events(ch).length === 1));
  const front1 = await counters(stack.dynamodb);
  assert.ok(front1.requests > front0.requests, 'the subscribes went through the front');
  t.diagnostic(`front: ${front1.conflicts - front0.conflicts} TransactionConflict answers during the crowd`);
  for (const c of crowd) c.ws.close();
});

test('a bootstrap whose template variable is removed fails readiness with its own init error', async () => {
  const broken = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-emulate-')), 'template.yaml');
  const src = fs.readFileSync(path.join(ROOT, 'template.yaml'), 'utf8');
  const without = src.replace(/^ {8}HOOKCAST_TABLE: .*\n/m, '');
  assert.notEqual(without, src, 'the template sets HOOKCAST_TABLE');
  fs.writeFileSync(broken, without);
  // Its own copy of the template elsewhere: moto comes from the running stack.
  const r = await emulate({ template: broken, extra: ['--aws-endpoint', stack.aws] });
  if (!r.failed) await r.stop();
  assert.ok(r.failed, 'the stack must not become ready');
  assert.notEqual(r.failed.code, 0);
  assert.equal(r.readyWritten, false, 'no ready file');
  assert.match(r.log(), /failed its init/);
  assert.match(r.log(), /HOOKCAST_TABLE/, 'the function\'s own message names the missing variable');
});
