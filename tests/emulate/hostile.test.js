// Issue 35's proof on the AWS side: what an attacker can cost a hookcast
// stack, and that real traffic carries on while it tries. One stack, run by
// `hookcast emulate` with AWS's limits on (Lambda concurrency, API Gateway's
// route, account and new-connection buckets, DynamoDB on-demand capacity)
// and its bill at list prices (GET {http}/__emulate/bill). Sources: Netlify
// (JWS), GitHub (its secret in Secrets Manager through SenderSecretsName, in
// a moto this file starts, as on AWS) and the Zapier token source with
// fields.
//
// Beside every attack, for its whole duration, the real traffic: a signed
// Netlify deploy webhook every second (the sender's own body, a new deploy
// each time) and 50 real pages (node `ws`, each from its own address:
// X-Emulate-Source-Ip), subscribed to `deploys` with batch:true before the
// attack, answering nothing else (the snippet's ping every 4 minutes only).
// Each attack runs for a bounded time (HOSTILE_SECONDS, 15 s), then:
//  (a) every real delivery during it was acknowledged (200), and every page
//      has every event, in order, once;
//  (b) its cost per hour, from the bill: the total during the attack less
//      the real traffic's own cost over the same time (measured first, alone),
//      scaled to an hour, is at most $5, and at most $1 for an attack that
//      costs per connection or per frame (rather than per new connection).
//      A flood on a connection reconnects each time it is closed, as an
//      attacker would; its hour is what each connection cost times the most
//      connections one address can flood with in an hour (perConnectionHour);
//  (c) the attacking connection is closed, where the attack is one, and a
//      flooding address is refused at $connect after 3 closes an hour.
// The last test prints the table of what each attack costs per hour and what
// stops it (for docs/deploy-aws.md).
//
// HOSTILE_REPORT_ONLY=1 turns every verdict into a report (for measuring the
// code before issue 35, which had no budgets): the figures are printed and
// the test passes. HOSTILE_ROWS_FILE=path also writes the table's rows as JSON.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn } = require('node:child_process');
const { until } = require('./harness.js');

const ROOT = process.env.HOSTILE_ROOT || path.resolve(__dirname, '..', '..');
const WebSocket = require(require.resolve('ws', { paths: [ROOT] }));
const BIN = process.env.HOOKCAST_BIN || path.join(ROOT, 'target', 'debug', 'hookcast');
const BUILD = process.env.HOOKCAST_BUILD_DIR || path.join(ROOT, '.aws-sam', 'build');
const TEMPLATE = process.env.HOOKCAST_TEMPLATE || path.join(ROOT, 'template.yaml');
const FIXTURES = path.join(ROOT, 'tests', 'fixtures', 'senders');
const REPORT_ONLY = process.env.HOSTILE_REPORT_ONLY === '1';
// Every wait is a ceiling for a stuck run, never a guess at how long the work takes.
const CEILING = 120000;
// How long an attack's backlog (frames queued for the socket functions) may take to drain.
const DRAIN_CEILING = Number(process.env.HOSTILE_DRAIN_SECONDS || 240) * 1000;
// How long each attack runs.
const ATTACK_MS = Number(process.env.HOSTILE_SECONDS || 15) * 1000;

const NETLIFY = 'hostile-netlify-secret-0123456789';
const ZAPIER = 'hostile-zapier-token-0123456789';
const GITHUB = 'hostile-github-secret-0123456789';
const ORIGIN = 'http://127.0.0.1';
const SOURCES = `[sources.netlify]
kind = "netlify"
[sources.github]
kind = "github"
[sources.zapier]
kind = "token"
header = "x-hookcast-token"
channels = ["zaps/*"]
fields = ["i", "pad"]
`;
// The stack's [state] (StateConfig before the config layer). Built from 4bd6dd0 (issue 35), the message
// function had no sources (functions/aws/src/env.rs cleared them for every
// role but the webhook's), so policy::reachable refused every public channel
// without a state, deploys included (test 0a); 7d45129 gave it the sources.
// A build from before that fix runs these tests with
// HOSTILE_STATE=deploys=last,zaps/busy=last,github=last (a channel with a
// state is reachable whatever the sources).
const STATE = process.env.HOSTILE_STATE || '';
const PAGES = 50;
// The bounds of (b), dollars an hour.
const PER_NEW_CONNECTION_BOUND = 5;
const PER_CONNECTION_BOUND = 1;
// functions/aws/src/guard.rs
const FRAMES_PER_MINUTE = 60;
const CONNECTS_PER_MINUTE = 60;
const OPEN_PER_ADDRESS = 100;
const STRIKES_PER_HOUR = 3;
// template.yaml's WebSocket stage RouteSettings (rate a second, burst).
const ROUTE = { $connect: [250, 500], ping: [250, 500], $default: [50, 100] };
// template.yaml's HttpApi RouteSettings.
const HTTP_ROUTE = { hooks: 500, snippet: 200 };
// API Gateway's new connections a second per account (infra/emulate/src/limits.rs).
const ACCOUNT_NEW_CONNECTIONS = 500;

const pause = (ms) => new Promise((r) => setTimeout(r, ms));
const usd = (x) => `$${x < 0.01 && x > -0.01 ? x.toFixed(4) : x.toFixed(2)}`;

// ---- Verdicts ----------------------------------------------------------------

/** Runs a verdict's assertions; with HOSTILE_REPORT_ONLY a failure is reported instead. */
function verdict(t, what, fn) {
  try {
    fn();
  } catch (e) {
    if (!REPORT_ONLY) throw e;
    t.diagnostic(`WOULD FAIL (${what}): ${String(e.message).split('\n')[0].slice(0, 400)}`);
  }
}

// ---- moto and the stack ------------------------------------------------------

const children = [];

/** moto's server, as tests/run and `hookcast emulate` start it: its URL. */
async function startMoto() {
  const python = path.join(ROOT, '.tools', 'venv', 'bin', 'python');
  const child = spawn(python, [path.join(ROOT, 'tests', 'aws', 'moto_server.py')], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const url = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl).trim());
    });
    child.on('exit', (code) => reject(new Error(`moto exited ${code}: ${err.slice(-2000)}`)));
  });
  return url;
}

/** One call in AWS's JSON protocol, to moto itself (not billed). */
async function aws(endpoint, service, target, version, req) {
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'content-type': `application/x-amz-json-${version}`, 'x-amz-target': target,
      authorization: `AWS4-HMAC-SHA256 Credential=emulated/20260101/us-east-1/${service}/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: JSON.stringify(req),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `${target}: ${text.slice(0, 500)}`);
  return JSON.parse(text);
}

/** `hookcast emulate` on moto at `endpoint`: the ready file's URLs. */
async function emulate(endpoint, secretsName) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-hostile-'));
  const ready = path.join(dir, 'ready.json');
  const template = fs.readFileSync(TEMPLATE, 'utf8');
  const params = [
    `NetlifySecret=${NETLIFY}`, `ZapierToken=${ZAPIER}`, `AllowedOrigins=${ORIGIN}:*,${ORIGIN}`,
    `SenderSecretsName=${secretsName}`,
    // The WebSocket stage's access log: a line per frame once it is answered (see drained()).
    'ApiGatewayLoggingRole=existing',
  ];
  // The site's configuration: its hookcast.toml in place of the config
  // layer's; a template from before the layer took it as parameters.
  const extra = [];
  if (/^ {2}ConfigLayer:/m.test(template)) {
    const state = STATE ? `[state]\n${STATE.split(',').map((kv) => kv.split('=')).map(([k, v]) => `${JSON.stringify(k)} = ${JSON.stringify(v)}`).join('\n')}\n` : '';
    fs.writeFileSync(path.join(dir, 'hookcast.toml'), SOURCES + state);
    extra.push('--config', path.join(dir, 'hookcast.toml'));
  } else {
    params.push(`SourcesConfig=${SOURCES}`, ...(STATE ? [`StateConfig=${STATE}`] : []));
  }
  // The code before issue 35 had no AlertEmail parameter.
  if (/^ {2}AlertEmail:/m.test(template)) params.push('AlertEmail=none');
  const child = spawn(BIN, ['emulate', '--template', TEMPLATE, '--build-dir', BUILD, '--aws-endpoint', endpoint,
    '--ready-file', ready, ...extra, '--parameter-overrides', ...params],
  { cwd: path.dirname(TEMPLATE), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  children.push(child);
  let err = '';
  child.stdout.on('data', () => {});
  child.stderr.on('data', (d) => { err += d; });
  let gone = null;
  child.on('exit', (code, signal) => { gone = { code, signal }; });
  await until('the ready file', () => gone || fs.existsSync(ready), 300000);
  assert.ok(!gone, `emulate exited before it was ready (${JSON.stringify(gone)}):\n${err.slice(-6000)}`);
  const urls = JSON.parse(fs.readFileSync(ready, 'utf8'));
  // The routes API Gateway answers itself (MOCK): ping before issue 35, and
  // $default during it; since, every route reaches the message function.
  const mockRoutes = [['ping', 'PingIntegration'], ['$default', 'DefaultIntegration']]
    .filter(([, integration]) => template.includes(`integrations/\${${integration}}`)).map(([route]) => route);
  return { ...urls, mockRoutes, child, stderr: () => err, tail: (n = 3000) => `\n--- emulate said (last ${n} characters) ---\n${err.slice(-n)}` };
}

/**
 * The WebSocket stage's access log, read as it grows: how many frames that
 * went to the message function have been answered (a line is written once
 * the integration returns or is refused), and how many $disconnects ran.
 */
const accessLog = {
  file: null,
  offset: 0,
  rest: '',
  message: 0,
  disconnect: 0,
  /** Connections accepted, by client address. */
  connections: {},
  read() {
    if (!this.file) {
      const dir = stack.logs;
      const name = fs.existsSync(dir) && fs.readdirSync(dir).find((f) => /WebSocketAccessLogs/.test(f));
      if (!name) return this;
      this.file = path.join(dir, name);
    }
    const size = fs.statSync(this.file).size;
    if (size <= this.offset) return this;
    const fd = fs.openSync(this.file, 'r');
    const buf = Buffer.alloc(size - this.offset);
    fs.readSync(fd, buf, 0, buf.length, this.offset);
    fs.closeSync(fd);
    this.offset = size;
    const text = this.rest + buf.toString('utf8');
    const lines = text.split('\n');
    this.rest = lines.pop();
    for (const l of lines) {
      const e = JSON.parse(l);
      if (e.eventType === 'CONNECT' && e.status === '200') (this.connections[e.ip] ||= []).push(e.connectionId);
      if (e.eventType === 'DISCONNECT') this.disconnect += 1;
      else if (e.eventType === 'MESSAGE' && e.status !== '429' && !stack.mockRoutes.includes(e.routeKey)) this.message += 1;
    }
    return this;
  },
};

/**
 * Every frame an attack sent to a function has been answered and billed,
 * and every $disconnect has run: the attack's backlog is on the bill.
 */
async function drained(ceiling = DRAIN_CEILING) {
  let last;
  return until('the socket functions\' backlog to drain', async () => {
    const b = await bill();
    const log = accessLog.read();
    const calls = (id) => fnCount(b, id) + fnCount(b, id, 'throttled');
    last = { message: [log.message, calls('WsMessageFunction')], disconnect: [log.disconnect, calls('WsDisconnectFunction')] };
    return log.message >= calls('WsMessageFunction') && log.disconnect >= calls('WsDisconnectFunction');
  }, ceiling).then(() => null, (e) => {
    const why = `${e.message}: answered/invoked ${JSON.stringify(last)}`;
    // Measuring the code before issue 35: what was billed so far is reported (a lower bound).
    if (REPORT_ONLY) return why;
    throw new Error(why);
  });
}

let stack;
let moto;
const rows = [];
let baseline;

// ---- The bill ----------------------------------------------------------------

const bill = async () => (await fetch(stack.bill)).json();
const lineKey = (l) => `${l.service} ${l.item}`;
function lineMap(b) {
  const m = {};
  for (const l of b.lines) m[lineKey(l)] = { quantity: l.quantity, cost: l.cost };
  return m;
}
/** What grew between two bills, per line and in all. */
function grown(b0, b1) {
  const m0 = lineMap(b0);
  const lines = {};
  for (const [k, v] of Object.entries(lineMap(b1))) {
    const was = m0[k] || { quantity: 0, cost: 0 };
    lines[k] = { quantity: v.quantity - was.quantity, cost: v.cost - was.cost };
  }
  return { total: b1.total - b0.total, lines };
}
const fnCount = (b, id, k = 'invocations') => (b.counts.functions[id] || {})[k] || 0;

/**
 * An attack's cost: what the bill grew by from `w.b0` to now, less the real
 * traffic's own cost over the same seconds (the baseline), per line; and the
 * cost per hour over the attack's `activeMs`.
 */
async function attackCost(w, activeMs) {
  const undrained = await drained();
  const b1 = await bill();
  const seconds = (Date.now() - w.t0) / 1000;
  const g = grown(w.b0, b1);
  const lines = Object.entries(g.lines).map(([k, v]) => {
    const base = baseline.lines[k] || { quantity: 0, cost: 0 };
    return { k, quantity: v.quantity - base.quantity * seconds, cost: v.cost - base.cost * seconds };
  });
  const excess = g.total - baseline.total * seconds;
  const perHour = (excess / activeMs) * 3600 * 1000;
  // Lambda's billed duration is this machine's (a loaded 2-core box runs each invocation far slower than AWS).
  const durations = lines.filter((l) => /GB-seconds/.test(l.k)).reduce((a, l) => a + l.cost, 0);
  const withoutDurations = ((excess - durations) / activeMs) * 3600 * 1000;
  const madeOf = lines.filter((l) => l.cost > Math.max(Math.abs(excess) * 0.03, 1e-9)).sort((a, b) => b.cost - a.cost)
    .map((l) => `${l.k} +${l.quantity.toFixed(l.quantity < 10 ? 2 : 0)} (${usd((l.cost / activeMs) * 3600 * 1000)}/h)`);
  if (undrained) madeOf.unshift(`AT LEAST (${undrained})`);
  return { b1, excess, perHour, withoutDurations, madeOf, seconds, raw: g };
}

/** What was throttled or timed out between two bills: Lambda (per function), DynamoDB, API Gateway. */
function refusals(b0, b1) {
  const out = {};
  for (const [id, f] of Object.entries(b1.counts.functions)) {
    for (const k of ['throttled', 'timeouts']) {
      const d = f[k] - ((b0.counts.functions[id] || {})[k] || 0);
      if (d) out[`${id} ${k}`] = d;
    }
  }
  for (const k of ['dynamodb_throttled', 'apigw_throttled']) {
    const d = b1.counts[k] - b0.counts[k];
    if (d) out[k] = d;
  }
  return out;
}

/** A table row and the attack's diagnostic line. */
function report(t, name, cost, stops, detail, w) {
  rows.push({ name, perHour: cost.perHour, withoutDurations: cost.withoutDurations, stops });
  t.diagnostic(`${name}: ${usd(cost.perHour)}/h (${usd(cost.withoutDurations)}/h without Lambda GB-seconds; ${usd(cost.excess)} over the real traffic's own in ${cost.seconds.toFixed(1)} s) `
    + `made of: ${cost.madeOf.join('; ') || 'nothing measurable'}${detail ? ` | ${detail}` : ''}`
    + `${w ? ` | throttled: ${JSON.stringify(refusals(w.b0, cost.b1))}` : ''}`);
}

// ---- Senders -----------------------------------------------------------------

function fixture(p) {
  return fs.readFileSync(path.join(FIXTURES, p));
}
const DEPLOY = JSON.parse(fixture('netlify/deploy-succeeded.json'));

/** A Netlify deploy notification as Netlify signs it (HS256 JWS over the body's SHA-256). */
async function netlify(payload) {
  const body = JSON.stringify(payload);
  const b64 = (x) => Buffer.from(x).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ iss: 'netlify', sha256: crypto.createHash('sha256').update(body).digest('hex') }));
  const sig = crypto.createHmac('sha256', NETLIFY).update(`${head}.${claims}`).digest('base64url');
  const t0 = Date.now();
  const res = await fetch(`${stack.http}/hooks/netlify`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-webhook-signature': `${head}.${claims}.${sig}` }, body,
  });
  const json = await bodyOf(res);
  return { status: res.status, body: json, ms: Date.now() - t0, retryAfter: Number(res.headers.get('retry-after')) || 0 };
}

/** A response's body: its JSON, or `{ text }` when it is not JSON. */
async function bodyOf(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    return { text };
  }
}

/** The snippet's and a sender's backoff: full jitter, 500 ms doubling, capped at 30 s. */
const backoff = (attempt) => Math.floor(Math.random() * Math.min(30000, 500 * 2 ** attempt));

/**
 * A deploy notification as a sender delivers it: a 503 (the event is not in
 * the log: the store did not take it in time), a 429 or 5xx from API Gateway,
 * or a lost connection is sent again after a backoff, up to 12 tries. The
 * last answer, with every try's status.
 */
async function deliver(payload) {
  const t0 = Date.now();
  const tries = [];
  for (let attempt = 0; ; attempt++) {
    const r = await netlify(payload).catch((e) => ({ status: 0, body: { error: String(e) }, retryAfter: 0 }));
    tries.push(r.status);
    if (r.status === 200 || attempt >= 11 || ![0, 429, 500, 502, 503, 504].includes(r.status)) return { ...r, ms: Date.now() - t0, tries };
    await pause(Math.max(r.retryAfter * 1000, backoff(attempt)));
  }
}

/** A GitHub delivery as GitHub signs it: X-Hub-Signature-256 = sha256=HMAC-SHA256(secret, body) hex. */
async function github(body, event, delivery, secret = GITHUB) {
  const res = await fetch(`${stack.http}/hooks/github`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json', 'user-agent': 'GitHub-Hookshot/hostile', 'x-github-event': event,
      'x-github-delivery': delivery, 'x-github-hook-id': '1',
      'x-hub-signature-256': `sha256=${crypto.createHmac('sha256', secret).update(body).digest('hex')}`,
    },
    body,
  });
  const json = await bodyOf(res);
  return { status: res.status, body: json };
}

async function zap(channel, event, data) {
  const res = await fetch(`${stack.http}/hooks/zapier`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'x-hookcast-token': ZAPIER },
    body: JSON.stringify({ channel, event, data }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `zap to ${channel}: ${text}`);
  return JSON.parse(text);
}

/** The real sender: a new signed deploy every second, whatever the last one is doing. */
const sender = {
  posts: [],
  timer: null,
  start() {
    const t0 = Date.now();
    const tick = () => {
      const n = this.posts.length;
      const at = Date.now();
      const payload = { ...DEPLOY, id: `hostile-${n}-${crypto.randomBytes(4).toString('hex')}`, updated_at: new Date(at).toISOString() };
      const post = { at, result: null };
      post.done = deliver(payload);
      post.done.then((r) => { post.result = r; });
      this.posts.push(post);
      this.timer = setTimeout(tick, Math.max(0, t0 + (n + 1) * 1000 - Date.now()));
    };
    tick();
  },
  stop() {
    clearTimeout(this.timer);
  },
};

// ---- Sockets -----------------------------------------------------------------

/**
 * A socket from `address` that records what it gets (batches unwrapped) and
 * when it closed; `opened` rejects with the handshake's status and body.
 */
function socket(address, { keep = true } = {}) {
  const ws = new WebSocket(stack.websocket, { headers: { Origin: ORIGIN, 'X-Emulate-Source-Ip': address } });
  const c = { ws, address, frames: [], bytes: 0, received: 0, closed: null };
  ws.on('message', (m) => {
    c.received += 1;
    c.bytes += m.length;
    if (!keep) return;
    let msg;
    try {
      msg = JSON.parse(String(m));
    } catch {
      msg = { unparsed: String(m) };
    }
    for (const f of msg.type === 'batch' ? msg.frames : [msg]) c.frames.push(f);
  });
  ws.on('error', () => {});
  c.opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        reject(Object.assign(new Error(`handshake ${res.statusCode} ${body}`), { status: res.statusCode, body }));
        ws.terminate();
      });
    });
    ws.once('close', () => reject(Object.assign(new Error('closed before open'), { status: 0, body: '' })));
  });
  c.opened.catch(() => {});
  c.gone = new Promise((resolve) => ws.once('close', (code) => {
    c.closed = { code, at: Date.now() };
    resolve(c.closed);
  }));
  c.send = (o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o));
  c.open = () => ws.readyState === WebSocket.OPEN;
  c.close = () => {
    try {
      ws.close();
    } catch { /* gone */ }
  };
  return c;
}

/** What a refused handshake was: the function's budget, API Gateway's throttle, or something else. */
function refusal(e) {
  // API Gateway's own 429 has its JSON body; the $connect function's 429 reaches the client bare.
  if (e.status === 429 && /Too Many Requests/.test(e.body)) return 'gateway';
  if (e.status === 429) return 'budget';
  return `${e.status} ${String(e.body).slice(0, 80)}`;
}

/** An attacker's socket, open: a handshake throttled or failed is tried again. */
async function attacker(address, options) {
  for (let attempt = 0; ; attempt++) {
    const c = socket(address, options);
    try {
      await c.opened;
      return c;
    } catch (e) {
      // API Gateway's throttle, or a $connect that failed: an attacker tries again.
      assert.ok(refusal(e) !== 'budget' && attempt < 20, `the attacker's handshake from ${address}: ${e.message}`);
      await pause(200 * (attempt + 1));
    }
  }
}

/**
 * Calls `fire(n)` `rate` times a second for at most `ms`, while `alive()`;
 * how many it fired, and for how long.
 */
function paced(rate, ms, fire, alive = () => true) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let n = 0;
    const timer = setInterval(() => {
      const el = Date.now() - t0;
      const due = Math.floor((Math.min(el, ms) * rate) / 1000);
      while (n < due && alive()) fire(n++);
      if (el >= ms || !alive()) {
        clearInterval(timer);
        resolve({ sent: n, ms: Math.min(el, ms) });
      }
    }, 5);
  });
}

/** Sends `rate` frames a second (`frame(n)`) while the socket is open, for at most `ms`. */
const flood = (c, rate, ms, frame) => paced(rate, ms, (n) => c.send(frame(n)), c.open);

/**
 * A flood as an attacker runs it: `rate` frames a second on a socket from
 * `address`; when the stack closes it, a new socket at once, flooded again,
 * until the address is refused at $connect (or, for a stuck run, `ceiling`
 * ms have passed). Every socket, the frames sent on each, and after how
 * many the address was refused.
 */
async function floodReconnecting(address, rate, frame, options, ceiling = 4 * ATTACK_MS) {
  const t0 = Date.now();
  const conns = [];
  let refusedAfter = null;
  while (Date.now() - t0 < ceiling) {
    const c = socket(address, options);
    const got = await c.opened.then(() => 'open', refusal);
    if (got === 'budget') {
      refusedAfter = conns.length;
      break;
    }
    if (got !== 'open') {
      await pause(200);
      continue;
    }
    const sent = await flood(c, rate, ceiling - (Date.now() - t0), frame);
    if (!c.open()) await until('the close to complete', () => c.closed, 10000).catch(() => {});
    conns.push({ c, sent });
  }
  const sent = conns.reduce((a, x) => a + x.sent.sent, 0);
  const ms = Date.now() - t0;
  return { conns, first: conns[0].c, sent, ms, refusedAfter, hourTurned: Math.floor(t0 / 3600000) !== Math.floor(Date.now() / 3600000) };
}

/** (c) for a reconnecting flood: each socket closed by its budget, then the address refused. */
function assertStruckOut(t, f) {
  verdict(t, `(c) every attacking connection closed by its budget, and the address refused after ${STRIKES_PER_HOUR}`, () => {
    assert.ok(f.conns.every(({ c }) => c.closed), `a connection still open after ${f.conns.map((x) => x.sent.sent).join(', ')} frames`);
    const why = closedBy(f.first.address);
    assert.ok(Object.keys(why).length > 0, `the message function said it closed ${f.first.address}'s connections over a budget: ${JSON.stringify(why)}`);
    if (!f.hourTurned) assert.equal(f.refusedAfter, STRIKES_PER_HOUR, `refused at $connect after ${f.refusedAfter} connections (${f.conns.length} opened)`);
  });
}

/**
 * A reconnecting flood's cost per hour: what each of its connections cost
 * (the window's excess over the connections it opened, refused handshakes
 * included), times the most connections one address can have flooding in
 * an hour: before its first close counts a strike, at most OPEN_PER_ADDRESS
 * (opened over two minutes, then flooded at once); after STRIKES_PER_HOUR
 * closes the address is refused until the hour turns. Trying on after that
 * is attack 4 ($connect refused).
 */
function perConnectionHour(cost, f) {
  const perConnection = cost.excess / f.conns.length;
  const hours = f.ms / 3600000;
  return {
    ...cost,
    perConnection,
    perHour: perConnection * OPEN_PER_ADDRESS,
    withoutDurations: (cost.withoutDurations * hours / f.conns.length) * OPEN_PER_ADDRESS,
  };
}

/** Calls `fire(n)` `rate` times a second for `ms`; every result, once all are settled. */
async function pace(rate, ms, fire) {
  const out = [];
  await paced(rate, ms, (n) => out.push(fire(n)));
  return Promise.all(out);
}

const tally = (xs) => xs.reduce((m, x) => ({ ...m, [x]: (m[x] || 0) + 1 }), {});

// ---- The real pages ----------------------------------------------------------

const pages = [];

/** The deploys a page got, in arrival order. */
const deploySeqs = (p) => p.frames.filter((f) => f.type === 'event' && f.channel === 'deploys').map((f) => f.seq);

/**
 * (a): every deploy posted from `from` to `to` acknowledged (200, new), and
 * every page, once caught up with everything acknowledged so far, holding
 * each event from its subscription on exactly once, in order, still open.
 */
async function realTraffic(from, to) {
  const during = sender.posts.filter((p) => p.at >= from && p.at <= to);
  const acks = await Promise.all(during.map((p) => p.done));
  // Acknowledged: 200, a new event; or, after a try whose answer was lost, 200 naming it a duplicate.
  const refused = acks.filter((a) => a.status !== 200 || !(a.body.duplicate === false || (a.body.duplicate === true && a.tries.length > 1)));
  const retried = acks.filter((a) => a.tries.length > 1);
  const settled = await Promise.all(sender.posts.filter((p) => p.at <= to).map((p) => p.done));
  const head = Math.max(0, ...settled.filter((a) => a.status === 200).map((a) => a.body.seq));
  let caughtUp = true;
  const t0 = Date.now();
  await until(`${PAGES} pages to have every deploy up to seq ${head}`,
    () => pages.every((p) => deploySeqs(p).length >= head - p.from), CEILING).catch(() => { caughtUp = false; });
  const lag = Date.now() - t0;
  const wrong = pages.map((p) => ({ address: p.address, seqs: deploySeqs(p) }))
    .filter(({ seqs }, i) => seqs.some((s, k) => s !== pages[i].from + k + 1))
    .map(({ address, seqs }) => `${address}: ${JSON.stringify(seqs.slice(0, 40))}${seqs.length > 40 ? '…' : ''}`);
  const behind = pages.filter((p) => deploySeqs(p).length < head - p.from).map((p) => `${p.address} at ${deploySeqs(p).length}`);
  const closed = pages.filter((p) => !p.open()).map((p) => `${p.address} (${JSON.stringify(p.closed)})`);
  const ms = acks.map((a) => a.ms).sort((a, b) => a - b);
  const firstTries = tally(retried.map((a) => a.tries.slice(0, -1)).flat());
  return {
    posted: during.length, refused, head, caughtUp, behind, wrong, closed, lag,
    summary: `${during.length} deploys acknowledged (max ${ms[ms.length - 1] || 0} ms${retried.length ? `; ${retried.length} only after a retry, refused first with ${JSON.stringify(firstTries)}` : ''}), `
      + `pages at seq ${head} ${lag} ms after`,
  };
}

function assertRealTraffic(t, r) {
  verdict(t, '(a) real deliveries acknowledged', () => {
    assert.ok(r.posted > 0, 'the sender posted during the attack');
    const refused = r.refused.map((a) => `${a.tries.join(',')} ${JSON.stringify(a.body)}`);
    assert.deepEqual(refused, [], `every real delivery acknowledged (200, new), with a sender's retries: ${refused.slice(0, 5).join(' / ')}${stack.tail()}`);
  });
  verdict(t, '(a) real pages got every event once, in order', () => {
    assert.deepEqual(r.closed, [], 'every real page is still connected');
    assert.deepEqual(r.wrong, [], 'every page: each event once, in order');
    assert.ok(r.caughtUp, `every page reached seq ${r.head}; behind: ${r.behind.slice(0, 5).join(', ')}${stack.tail()}`);
  });
}

function assertCost(t, cost, bound) {
  verdict(t, `(b) at most ${usd(bound)}/h`, () => {
    assert.ok(cost.perHour <= bound, `the attack costs ${usd(cost.perHour)}/h, over ${usd(bound)}/h: ${cost.madeOf.join('; ')}`);
  });
}

/** The start of an attack's window: its bill and time. */
async function windowStart() {
  await drained();
  return { b0: await bill(), t0: Date.now() };
}

/**
 * Why the message function closed the connections from `address`, by its
 * own log ("connection over its budget: closed conn=… over=…"): the budgets
 * named, how many times.
 */
function closedBy(address) {
  const ids = accessLog.read().connections[address] || [];
  const over = stack.stderr().split('\n').filter((l) => l.includes('over its budget: closed') && ids.some((id) => l.includes(`conn=${id} `)))
    .map((l) => (/over="([^"]*)"/.exec(l) || [])[1]);
  return tally(over);
}

/** (c): the attacker's connection was closed, by its budget. */
// ---- Setup -------------------------------------------------------------------

test.before(async () => {
  assert.ok(fs.existsSync(path.join(BUILD, 'WebhookFunction', 'bootstrap')), `no sam build output in ${BUILD}`);
  moto = await startMoto();
  // GitHub's secret where the stack reads the other senders' secrets: a
  // Secrets Manager secret named by SenderSecretsName.
  const secretsName = `hookcast-hostile-${process.pid}`;
  await aws(moto, 'secretsmanager', 'secretsmanager.CreateSecret', '1.1', { Name: secretsName, SecretString: JSON.stringify({ github: GITHUB }) });
  stack = await emulate(moto, secretsName);
  // The busy channel attack 5 replays: 100 events of about 1 KB, before any window.
  for (let i = 1; i <= 100; i += 10) {
    await Promise.all(Array.from({ length: 10 }, (_, k) => zap('zaps/busy', 'tick', { i: i + k, pad: 'p'.repeat(1000) })));
  }
  // 50 real pages, each from its own address, subscribed to deploys with batch:true.
  for (let i = 0; i < PAGES; i++) pages.push(socket(`10.50.0.${i + 1}`));
  await Promise.all(pages.map((p) => p.opened));
  for (const p of pages) p.send({ action: 'subscribe', channel: 'deploys', batch: true });
  await until('50 pages subscribed', () => pages.every((p) => p.frames.some((f) => f.type === 'subscribed' || f.type === 'error' || f.message)));
  for (const p of pages) {
    const reply = p.frames.find((f) => f.type === 'subscribed');
    assert.ok(reply, `${p.address}: ${JSON.stringify(p.frames)}`);
    p.from = reply.seq;
    // The snippet's keepalive: a ping every 4 minutes (the stage closes a socket idle for 10).
    p.keepalive = setInterval(() => p.open() && p.send({ action: 'ping' }), 240000);
  }
  sender.start();
});

test.after(async () => {
  sender.stop();
  if (process.env.HOSTILE_EMULATE_LOG && stack) fs.writeFileSync(process.env.HOSTILE_EMULATE_LOG, stack.stderr());
  await Promise.allSettled(sender.posts.map((p) => p.done));
  for (const p of pages) {
    clearInterval(p.keepalive);
    p.close();
  }
  for (const c of children.reverse()) {
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    }
  }
});

// ---- The tests ---------------------------------------------------------------

test('0. the real traffic alone: its cost per second (the baseline every attack is measured against)', async (t) => {
  // Steady state first: the first deploys on every page.
  await until('the first 3 deploys on every page', () => pages.every((p) => deploySeqs(p).length >= 3));
  await drained();
  const b0 = await bill();
  const t0 = Date.now();
  const first = sender.posts.length;
  await until('15 more deploys posted', () => sender.posts.length >= first + 15, 60000);
  const r = await realTraffic(t0, Date.now());
  const b1 = await bill();
  const seconds = (Date.now() - t0) / 1000;
  const g = grown(b0, b1);
  baseline = { total: g.total / seconds, lines: {} };
  for (const [k, v] of Object.entries(g.lines)) baseline.lines[k] = { quantity: v.quantity / seconds, cost: v.cost / seconds };
  const made = Object.entries(baseline.lines).filter(([, v]) => v.cost > 0).sort((a, b) => b[1].cost - a[1].cost)
    .map(([k, v]) => `${k} ${(v.quantity * 3600).toFixed(0)}/h (${usd(v.cost * 3600)}/h)`);
  t.diagnostic(`real traffic (a deploy a second to ${PAGES} pages): ${usd(baseline.total * 3600)}/h over ${seconds.toFixed(1)} s: ${made.join('; ')} | ${r.summary}`);
  assertRealTraffic(t, r);
});

test('0a. a page subscribes to a source\'s public channel that keeps no state (zaps/plain)', async (t) => {
  const c = await attacker('10.66.0.1');
  t.after(() => c.close());
  c.send({ action: 'subscribe', channel: 'zaps/plain' });
  const reply = await until('an answer', () => c.frames.find((f) => f.type === 'subscribed' || f.type === 'error' || f.message));
  t.diagnostic(`zaps/plain (the zapier source's channels = ["zaps/*"]): ${JSON.stringify(reply)}`);
  verdict(t, 'a public channel of a configured source is subscribable', () => {
    assert.equal(reply.type, 'subscribed', `${JSON.stringify(reply)}: the message function has no sources (functions/aws/src/env.rs `
      + 'clears them for every role but the webhook\'s), so policy::reachable refuses every public channel without a state');
  });
});

test('1. 100 POST/s with bad signatures to /hooks/github from one machine', async (t) => {
  const body = fixture('github/release-published.json');
  const w = await windowStart();
  const results = await pace(100, ATTACK_MS, () => github(body, 'release', crypto.randomUUID(), 'not-the-secret-0123456789')
    .then((r) => `${r.status} ${r.body.error || ''}`).catch((e) => `failed ${e.message}`));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = await attackCost(w, ATTACK_MS);
  const answers = tally(results);
  const perRequest = cost.excess / results.length;
  const atCap = perRequest * HTTP_ROUTE.hooks * 3600;
  report(t, '1. 100 POST/s with bad signatures to /hooks/github', cost,
    `the signature check, before any read or write (an HTTP request and one short webhook run each); `
    + `the route's throttle (${HTTP_ROUTE.hooks}/s, shared with real senders) caps it at ${usd(atCap)}/h`,
    `${results.length} sent: ${JSON.stringify(answers)}; WebhookFunction runs ${fnCount(cost.b1, 'WebhookFunction') - fnCount(w.b0, 'WebhookFunction')}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  verdict(t, 'every forgery refused', () => {
    assert.deepEqual(Object.keys(answers), ['401 invalid_signature'], 'each answered 401 invalid_signature');
  });
  assertCost(t, cost, PER_NEW_CONNECTION_BOUND);
});

test('2. 1,000 frames/s of subscribe on one connection, reconnecting when closed (closed by its budget)', async (t) => {
  const address = '10.66.2.1';
  const w = await windowStart();
  const f = await floodReconnecting(address, 1000, () => ({ action: 'subscribe', channel: 'deploys' }));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = perConnectionHour(await attackCost(w, f.ms), f);
  const runs = fnCount(cost.b1, 'WsMessageFunction') - fnCount(w.b0, 'WsMessageFunction');
  const replies = tally(f.conns.flatMap(({ c }) => c.frames.map((x) => x.type || x.message)));
  report(t, '2. 1,000 frames/s of subscribe on one connection, reconnecting', cost,
    `its budget of ${FRAMES_PER_MINUTE} frames a minute closes it (DeleteConnection), ${usd(cost.perConnection)} each connection; `
    + `${STRIKES_PER_HOUR} closed in an hour refuse its address: at most ${OPEN_PER_ADDRESS} connections an hour`,
    `${f.sent} frames sent on ${f.conns.length} connections (${f.conns.map((x) => `${x.sent.sent} in ${x.sent.ms} ms`).join(', ')}), refused at $connect after ${f.refusedAfter}; `
    + `WsMessageFunction runs ${runs}; replies ${JSON.stringify(replies)}; closed over ${JSON.stringify(closedBy(address))}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  assertCost(t, cost, PER_CONNECTION_BOUND);
  assertStruckOut(t, f);
  f.conns.forEach(({ c }) => c.close());
});

test('3. 100 GET/s on /hookcast.js', async (t) => {
  const w = await windowStart();
  const results = await pace(100, ATTACK_MS, () => fetch(`${stack.http}/hookcast.js`)
    .then(async (r) => { await r.arrayBuffer(); return r.status; }).catch((e) => `failed ${e.message}`));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = await attackCost(w, ATTACK_MS);
  const answers = tally(results);
  const atCap = (cost.excess / results.length) * HTTP_ROUTE.snippet * 3600;
  report(t, '3. 100 GET/s on /hookcast.js', cost,
    `the route's throttle (${HTTP_ROUTE.snippet}/s) caps it at ${usd(atCap)}/h; a CDN in front absorbs it`,
    `${results.length} sent: ${JSON.stringify(answers)}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  assertCost(t, cost, PER_NEW_CONNECTION_BOUND);
});

/**
 * New connections as fast as `workers` clients can open them for `ms`, each
 * closed once open; `address(n)` for the n-th. The outcomes, by kind.
 */
async function connectFlood(address, ms, workers) {
  const out = { attempts: 0, accepted: 0, acceptedAt: [], refused: {} };
  const t0 = Date.now();
  const worker = async () => {
    while (Date.now() - t0 < ms) {
      const c = socket(address(out.attempts++), { keep: false });
      try {
        await c.opened;
        out.accepted += 1;
        out.acceptedAt.push(Date.now());
        c.close();
      } catch (e) {
        const k = refusal(e);
        out.refused[k] = (out.refused[k] || 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  out.ms = Date.now() - t0;
  return out;
}

/** Real visitors arriving during a flood: one new page a second, each from its own address. */
function newcomers(ms, prefix) {
  const got = { tried: 0, opened: 0, refused: {} };
  const all = [];
  const t0 = Date.now();
  const timer = setInterval(() => {
    if (Date.now() - t0 >= ms) return;
    got.tried += 1;
    const c = socket(`${prefix}.${got.tried}`, { keep: false });
    all.push(c.opened.then(() => { got.opened += 1; c.close(); }, (e) => { const k = refusal(e); got.refused[k] = (got.refused[k] || 0) + 1; }));
  }, 1000);
  return { got, done: async () => { clearInterval(timer); await Promise.all(all); return got; } };
}

test('4. $connect as fast as possible from one address (refused past its budget)', async (t) => {
  const w = await windowStart();
  const visitors = newcomers(ATTACK_MS, '10.44.1');
  const minutes = new Set();
  const probe = setInterval(() => minutes.add(Math.floor(Date.now() / 60000)), 100);
  minutes.add(Math.floor(Date.now() / 60000));
  const f = await connectFlood(() => '10.66.4.1', ATTACK_MS, 50);
  clearInterval(probe);
  minutes.add(Math.floor(Date.now() / 60000));
  const came = await visitors.done();
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = await attackCost(w, f.ms);
  const connects = fnCount(cost.b1, 'WsConnectFunction') - fnCount(w.b0, 'WsConnectFunction');
  report(t, '4. $connect as fast as possible from one address', cost,
    `its address's budget (${CONNECTS_PER_MINUTE} new connections a minute, ${OPEN_PER_ADDRESS} open) refuses the rest at $connect (429), `
    + `each refusal a short WsConnect run; the $connect route's throttle (${ROUTE.$connect[0]}/s, for all callers) bounds the rate: at it, ${usd((cost.excess / f.attempts) * ROUTE.$connect[0] * 3600)}/h `
    + `(${usd((cost.withoutDurations / (f.attempts / (f.ms / 1000))) * ROUTE.$connect[0])}/h without Lambda GB-seconds), and other visitors' handshakes are refused while it lasts`,
    `${f.attempts} handshakes in ${f.ms} ms: ${f.accepted} accepted, refused ${JSON.stringify(f.refused)}; WsConnectFunction runs ${connects}; `
    + `new visitors meanwhile: ${came.opened} of ${came.tried} opened, refused ${JSON.stringify(came.refused)}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  verdict(t, 'refused past its budget', () => {
    assert.ok(f.accepted <= CONNECTS_PER_MINUTE * minutes.size, `${f.accepted} accepted in ${minutes.size} minute(s) from one address`);
    assert.ok((f.refused.budget || 0) > 0, `the address's budget refused some: ${JSON.stringify(f.refused)}`);
  });
  assertCost(t, cost, PER_NEW_CONNECTION_BOUND);
});

test('4b. new connections from many addresses (only AWS WAF stops it): API Gateway\'s $connect throttle and account-wide 500/s', async (t) => {
  // A short run: each handshake from an address of its own, closed once open.
  const ms = Math.min(ATTACK_MS, 5000);
  await pause(2000); // the $connect bucket refills after test 4 (500 at 250/s): a known time, not a guess.
  const w = await windowStart();
  const visitors = newcomers(ms, '10.44.2');
  const f = await connectFlood((n) => `10.${100 + ((n >> 16) & 127)}.${(n >> 8) & 255}.${n & 255}`, ms, 100);
  const came = await visitors.done();
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = await attackCost(w, f.ms);
  const seconds = f.ms / 1000;
  const cap = ROUTE.$connect[1] + ROUTE.$connect[0] * seconds;
  const perConnect = cost.excess / Math.max(1, f.accepted);
  report(t, '4b. new connections from many addresses', cost,
    `only AWS WAF (a rate-based rule) stops it: no per-address budget applies; API Gateway's $connect throttle (${ROUTE.$connect[0]}/s, under the account's ${ACCOUNT_NEW_CONNECTIONS}/s) `
    + `caps it at ${usd(perConnect * ROUTE.$connect[0] * 3600)}/h (${usd((cost.withoutDurations / 3600 / (f.accepted / seconds)) * ROUTE.$connect[0] * 3600)}/h without Lambda GB-seconds) `
    + 'and refuses real visitors too while it lasts',
    `${f.attempts} handshakes in ${f.ms} ms: ${f.accepted} accepted (${(f.accepted / seconds).toFixed(0)}/s; the throttle allows ${cap.toFixed(0)}), `
    + `refused ${JSON.stringify(f.refused)}; new visitors meanwhile: ${came.opened} of ${came.tried} opened, refused ${JSON.stringify(came.refused)}; ${real.summary}`, w);
  // (a) only for the pages connected before it.
  assertRealTraffic(t, real);
  verdict(t, 'bounded by the $connect throttle', () => {
    assert.ok(f.accepted <= cap * 1.05 + 5, `${f.accepted} accepted in ${seconds} s; the $connect throttle allows ${cap.toFixed(0)}`);
  });
});

test('5. replay amplification: one connection repeating subscribe since 0 on a busy channel, reconnecting when closed', async (t) => {
  const address = '10.66.5.1';
  const w = await windowStart();
  const f = await floodReconnecting(address, 1000, () => ({ action: 'subscribe', channel: 'zaps/busy', since: 0 }), { keep: false });
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = perConnectionHour(await attackCost(w, f.ms), f);
  const runs = fnCount(cost.b1, 'WsMessageFunction') - fnCount(w.b0, 'WsMessageFunction');
  const bytes = f.conns.map(({ c }) => c.bytes);
  report(t, '5. replay amplification (subscribe since 0, 100 events of 1 KB, repeated), reconnecting', cost,
    `its budgets (${FRAMES_PER_MINUTE} frames, 2 MiB of replies a minute) close it, ${usd(cost.perConnection)} each connection; `
    + `${STRIKES_PER_HOUR} closed in an hour refuse its address: at most ${OPEN_PER_ADDRESS} connections an hour`,
    `${f.sent} frames sent on ${f.conns.length} connections, replies of ${bytes.map((b) => (b / 1048576).toFixed(2)).join(', ')} MiB back, refused at $connect after ${f.refusedAfter}; `
    + `WsMessageFunction runs ${runs}; closed over ${JSON.stringify(closedBy(address))}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  assertCost(t, cost, PER_CONNECTION_BOUND);
  assertStruckOut(t, f);
  verdict(t, 'at most about the reply budget came back on each connection', () => {
    assert.ok(bytes.every((b) => b <= 4 * 1024 * 1024), `${bytes.join(', ')} bytes of replies`);
  });
  f.conns.forEach(({ c }) => c.close());
});

test('6. churn on made-up names: subscribe/unsubscribe to 32 made-up channels per connection, repeatedly, reconnecting when closed', async (t) => {
  const address = '10.66.6.1';
  const names = Array.from({ length: 32 }, (_, i) => `made-up/${crypto.randomBytes(3).toString('hex')}/${i}`);
  const w = await windowStart();
  const f = await floodReconnecting(address, 1000, (n) => ({ action: n % 2 ? 'unsubscribe' : 'subscribe', channel: names[(n >> 1) % 32] }));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = perConnectionHour(await attackCost(w, f.ms), f);
  const replies = tally(f.conns.flatMap(({ c }) => c.frames.map((x) => (x.type === 'error' ? `error ${x.code}` : x.type || x.message))));
  // What the function answered (API Gateway's own frames, a throttled or failed integration, aside).
  const answered = Object.keys(replies).filter((k) => !['Internal server error', 'Too Many Requests'].includes(k));
  // Nothing of theirs was written: no subscription, no count, no shard item.
  const { TableNames } = await aws(moto, 'dynamodb', 'DynamoDB_20120810.ListTables', '1.0', {});
  const table = TableNames.find((n) => n.startsWith('hookcast-'));
  const scan = await aws(moto, 'dynamodb', 'DynamoDB_20120810.Scan', '1.0', {
    TableName: table, FilterExpression: 'contains(pk, :m) OR contains(sk, :m)', ExpressionAttributeValues: { ':m': { S: 'made-up/' } },
  });
  report(t, '6. churn on made-up names (32 channels, subscribe/unsubscribe), reconnecting', cost,
    `a channel no source publishes to is refused (invalid_channel) before any write; ${FRAMES_PER_MINUTE} frames a minute close it, ${usd(cost.perConnection)} each connection; `
    + `${STRIKES_PER_HOUR} closed in an hour refuse its address: at most ${OPEN_PER_ADDRESS} connections an hour`,
    `${f.sent} frames sent on ${f.conns.length} connections, refused at $connect after ${f.refusedAfter}; replies ${JSON.stringify(replies)}; `
    + `items written for made-up names: ${scan.Items.length}; closed over ${JSON.stringify(closedBy(address))}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  verdict(t, 'made-up names refused, nothing written', () => {
    // (Replies posted after the close are lost: the function may have answered none that arrived.)
    assert.deepEqual(answered.filter((k) => k !== 'error invalid_channel'), [], `the function answered invalid_channel only: ${JSON.stringify(replies)}`);
    assert.deepEqual(scan.Items.map((i) => `${i.pk.S} ${i.sk.S}`), [], 'no item for a made-up channel');
  });
  assertCost(t, cost, PER_CONNECTION_BOUND);
  assertStruckOut(t, f);
  f.conns.forEach(({ c }) => c.close());
});

test('7. idle sockets held open, pinging: 150 from one address, at most 100 accepted', async (t) => {
  const address = '10.66.7.1';
  const minute = () => Math.floor(Date.now() / 60000);
  const pings = [];
  const ping = (c) => pings.push(setInterval(() => c.open() && c.send({ action: 'ping' }), 5000));
  /**
   * `n` sockets from the address at once; one refused otherwise than by the
   * address's budget (a $connect that failed: 500, or API Gateway's 429) is
   * tried again at once, as an attacker would, while the minute lasts. The
   * sockets accepted, every refusal by kind, and the budget's refusals.
   */
  const burst = async (n) => {
    const m = minute();
    const accepted = [];
    const seen = [];
    let left = n;
    let budget = 0;
    for (let round = 0; left > 0 && round < 5 && minute() === m; round++) {
      const cs = Array.from({ length: left }, () => socket(address, { keep: false }));
      const got = await Promise.all(cs.map((c) => c.opened.then(() => 'accepted', refusal)));
      seen.push(...got);
      accepted.push(...cs.filter((_, i) => got[i] === 'accepted'));
      budget += got.filter((g) => g === 'budget').length;
      left = got.filter((g) => g !== 'accepted' && g !== 'budget').length;
    }
    accepted.forEach(ping);
    return { accepted, outcomes: tally(seen), budget, left };
  };
  // The address's budgets: 60 new connections a minute, 100 open. The 150
  // go at once within one minute (well before its end); the refused try
  // again once the next minute has begun, when only the 100-open cap stands
  // in their way.
  if (60000 - (Date.now() % 60000) < 20000) {
    const next = minute() + 1;
    await until('the next minute', () => minute() >= next, 21000);
  }
  const w = await windowStart();
  const first = minute();
  const one = await burst(150);
  await until('the next minute', () => minute() > first, 62000);
  const two = await burst(150 - one.accepted.length);
  const held = [...one.accepted, ...two.accepted];
  const connected = Date.now();
  const connectCost = await attackCost(w, connected - w.t0);
  // Holding: what the accepted sockets cost while they ping every 5 s.
  const h = await windowStart();
  await pause(ATTACK_MS); // the holding window is the measurement itself
  const stillOpen = held.filter((c) => c.open()).length;
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const hold = await attackCost(h, end - h.t0);
  pings.forEach(clearInterval);
  // Two hours of holding (API Gateway's longest connection), per hour.
  const twoHours = connectCost.excess + (hold.perHour * 2);
  const connectNoDurations = (connectCost.withoutDurations * (connected - w.t0)) / 3600000;
  const cost = {
    ...hold, perHour: twoHours / 2, withoutDurations: (connectNoDurations + hold.withoutDurations * 2) / 2,
    excess: connectCost.excess + hold.excess, seconds: connectCost.seconds + hold.seconds,
  };
  report(t, '7. idle sockets held open, pinging every 5 s (150 from one address)', cost,
    `its address's cap of ${OPEN_PER_ADDRESS} open (and ${CONNECTS_PER_MINUTE} new a minute) refuses the rest at $connect; each ping is one message-function run, counted per instance (no write); `
    + `holding ${held.length} for 2 hours: ${usd(twoHours)} (${usd(hold.perHour)}/h held + ${usd(connectCost.excess)} to connect)`,
    `first minute: ${JSON.stringify(one.outcomes)}; next minute: ${JSON.stringify(two.outcomes)}; ${held.length} accepted, ${stillOpen} open after ${hold.seconds.toFixed(1)} s of holding; `
    + `connecting cost ${usd(connectCost.excess)} (${connectCost.madeOf.join('; ')}); ${real.summary}`, w);
  held.forEach((c) => c.close());
  await until('the held sockets closed', () => held.every((c) => c.closed));
  assertRealTraffic(t, real);
  verdict(t, 'at most 100 accepted from one address', () => {
    assert.ok(held.length <= OPEN_PER_ADDRESS, `${held.length} sockets accepted from one address (${one.accepted.length} in the first minute, ${two.accepted.length} in the next)`);
    assert.equal(one.accepted.length, CONNECTS_PER_MINUTE, `the first minute let ${CONNECTS_PER_MINUTE} in`);
    assert.equal(held.length, OPEN_PER_ADDRESS, `the next minute filled the address's ${OPEN_PER_ADDRESS} open`);
    assert.deepEqual([one.left, two.left], [0, 0], 'every socket was accepted or refused by the address\'s budget (429)');
    assert.equal(stillOpen, held.length, 'the accepted sockets stay open while they ping');
  });
  assertCost(t, cost, PER_CONNECTION_BOUND);
});

test('8. captured deliveries replayed: a real GitHub delivery replayed 100 times with new delivery ids and event types', async (t) => {
  const page = await attacker('10.66.8.2');
  t.after(() => page.close());
  page.send({ action: 'subscribe', channel: 'github', batch: true });
  const sub = await until('the page subscribed to github', () => page.frames.find((f) => f.type === 'subscribed' || f.type === 'error'));
  assert.equal(sub.type, 'subscribed', JSON.stringify(sub));
  const body = fixture('github/release-published.json');
  const first = await github(body, 'release', crypto.randomUUID());
  assert.equal(first.status, 200, JSON.stringify(first.body));
  assert.equal(first.body.duplicate, false, JSON.stringify(first.body));
  const gh = () => page.frames.filter((f) => f.type === 'event' && f.channel === 'github');
  await until('the delivery on the page', () => gh().length >= 1);
  const events = ['release', 'push', 'deployment_status', 'workflow_run', 'create', 'issues'];
  const REPLAYS = 100;
  const ms = Math.min(ATTACK_MS, 10000);
  const w = await windowStart();
  const replays = await pace(REPLAYS / (ms / 1000), ms, (n) => github(body, events[n % events.length], crypto.randomUUID()).catch((e) => ({ status: 0, body: { error: e.message } })));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = await attackCost(w, ms);
  // Nothing new reached the page: the next real delivery is the very next event it gets.
  const sentinel = await github(fixture('github/push.json'), 'push', crypto.randomUUID());
  assert.equal(sentinel.status, 200, JSON.stringify(sentinel.body));
  await until('the next real delivery on the page', () => gh().some((f) => f.seq === sentinel.body.seq));
  const answers = tally(replays.map((r) => `${r.status} duplicate=${r.body.duplicate} seq=${r.body.seq}`));
  const atCap = (cost.excess / replays.length) * HTTP_ROUTE.hooks * 3600;
  report(t, '8. captured GitHub delivery replayed 100 times (new X-GitHub-Delivery, other X-GitHub-Event)', cost,
    `the hash of the signed body is a dedupe key the replayer cannot change: each replay is a duplicate, no event; the route's throttle (${HTTP_ROUTE.hooks}/s) caps it at ${usd(atCap)}/h`,
    `${replays.length} replays: ${JSON.stringify(answers)}; page got seqs ${JSON.stringify(gh().map((f) => f.seq))}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  verdict(t, 'every replay a duplicate, nothing new on the page', () => {
    assert.deepEqual(Object.keys(answers), [`200 duplicate=true seq=${first.body.seq}`], 'every replay answered 200 duplicate, naming the first seq');
    assert.equal(sentinel.body.seq, first.body.seq + 1, 'no replay was appended');
    assert.deepEqual(gh().map((f) => f.seq), [first.body.seq, sentinel.body.seq], 'the page got the delivery and the next one, nothing else');
  });
  assertCost(t, cost, PER_NEW_CONNECTION_BOUND);
});

test('9. junk and ping floods ($default and ping) from one connection at 1,000 frames/s, reconnecting when closed', async (t) => {
  const address = '10.66.9.1';
  const w = await windowStart();
  const junk = ['{"action":"nope"}', 'junk', '{"action":"subscribe!"}', '[]'];
  const f = await floodReconnecting(address, 1000, (n) => (n % 2 ? '{"action":"ping"}' : junk[(n >> 1) % junk.length]));
  const end = Date.now();
  const real = await realTraffic(w.t0, end);
  const cost = perConnectionHour(await attackCost(w, f.ms), f);
  const answers = tally(f.conns.flatMap(({ c }) => c.frames.map((x) => (x.type === 'error' ? `error ${x.code}` : x.type || x.message))));
  const runs = fnCount(cost.b1, 'WsMessageFunction') - fnCount(w.b0, 'WsMessageFunction');
  report(t, '9. junk and ping floods ($default and ping), 1,000 frames/s on one connection, reconnecting', cost,
    `both routes reach the message function, which counts a connection's pings and junk per instance (no write) and closes it past ${FRAMES_PER_MINUTE} a minute, `
    + `${usd(cost.perConnection)} each connection; ${STRIKES_PER_HOUR} closed in an hour refuse its address: at most ${OPEN_PER_ADDRESS} connections an hour`,
    `${f.sent} frames sent on ${f.conns.length} connections, refused at $connect after ${f.refusedAfter}; answers ${JSON.stringify(answers)}; `
    + `WsMessageFunction runs ${runs}; closed over ${JSON.stringify(closedBy(address))}; ${real.summary}`, w);
  assertRealTraffic(t, real);
  verdict(t, 'pings answered pong, junk unknown_action, bad_json or bad_message', () => {
    const theirs = Object.keys(answers).filter((k) => !['Internal server error', 'Too Many Requests'].includes(k));
    assert.ok((answers.pong || 0) > 0, `pongs: ${JSON.stringify(answers)}`);
    assert.deepEqual(theirs.filter((k) => !['pong', 'error unknown_action', 'error bad_json', 'error bad_message'].includes(k)), [], JSON.stringify(answers));
  });
  assertCost(t, cost, PER_CONNECTION_BOUND);
  assertStruckOut(t, f);
  f.conns.forEach(({ c }) => c.close());
});

test('the table: cost per hour of each attack, and what stops it', (t) => {
  const title = REPORT_ONLY ? 'before' : 'after';
  t.diagnostic(`| attack | cost per hour (${title}; without Lambda GB-seconds) | what stops it |`);
  t.diagnostic('|---|---|---|');
  for (const r of rows) t.diagnostic(`| ${r.name.replace(/^\S+ /, '')} | ${usd(r.perHour)} (${usd(r.withoutDurations)}) | ${r.stops} |`);
  if (process.env.HOSTILE_ROWS_FILE) fs.writeFileSync(process.env.HOSTILE_ROWS_FILE, JSON.stringify({ baseline: baseline && baseline.total * 3600, rows }, null, 2));
  assert.ok(rows.length > 0);
});

test('through every attack, each function called only what its role allows (IAM, as AWS would enforce it)', () => {
  const refused = stack.stderr().split('\n').filter((l) => l.includes('IAM: a call refused'));
  assert.deepEqual(refused, [], 'a call the first real deploy would refuse');
});
