// What the tests on `hookcast emulate` share: starting the stack from
// `sam build`'s output, waiting on conditions, and pages that record frames.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const WebSocket = require('ws');
const { BIN, CEILING } = require('../browser/harness.js');

const ROOT = path.resolve(__dirname, '..', '..');
const BUILD = process.env.HOOKCAST_BUILD_DIR || path.join(ROOT, '.aws-sam', 'build');
const ORIGIN = 'http://127.0.0.1';

/** Waits for `cond()` to be truthy: a ceiling for a stuck run, not a guess. */
async function until(what, cond, ceiling = CEILING) {
  const t0 = Date.now();
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() - t0 > ceiling) throw new Error(`gave up after ${ceiling} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const running = new Set();

/**
 * Starts `hookcast emulate` with `params` (SAM parameter overrides),
 * `config` (the site's hookcast.toml as text, in place of the one the
 * stack's config layer ships) and `extra` flags; resolves with the ready file's URLs, `stop()` and what it
 * said (`stdout()`, `stderr()`, `log()`, `tail()`), or, when it stopped
 * before being ready, with `failed` (its exit) and `readyWritten`.
 */
async function emulate({ params = [], extra = [], config, template = path.join(ROOT, 'template.yaml') } = {}) {
  assert.ok(fs.existsSync(path.join(BUILD, 'WebhookFunction', 'bootstrap')), `no sam build output in ${BUILD}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-emulate-'));
  const ready = path.join(dir, 'ready.json');
  // A changed copy of the template elsewhere: its config layer (ContentUri
  // config/, beside the template) is copied beside it.
  const layer = path.join(path.dirname(template), 'config');
  if (!fs.existsSync(layer)) fs.cpSync(path.join(ROOT, 'config'), layer, { recursive: true });
  if (config !== undefined) {
    fs.writeFileSync(path.join(dir, 'hookcast.toml'), config);
    extra = ['--config', path.join(dir, 'hookcast.toml'), ...extra];
  }
  const child = spawn(BIN, ['emulate', '--template', template, '--build-dir', BUILD, '--ready-file', ready, ...extra,
    '--parameter-overrides', ...params],
  { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; if (out.length > 4e6) out = out.slice(-2e6); });
  child.stderr.on('data', (d) => { err += d; if (err.length > 4e6) err = err.slice(-2e6); });
  let gone = null;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  exited.then((e) => { gone = e; });
  const s = {
    child,
    stdout: () => out,
    stderr: () => err,
    log: () => out + err,
    tail: (n = 6000) => `\n--- emulate said (last ${n} characters) ---\n${err.slice(-n)}`,
    /** Calls the functions' roles refused (infra/emulate/src/iam.rs), as emulate logged them. */
    refusals: () => (out + err).split('\n').filter((l) => l.includes('IAM: a call refused')),
    async stop({ refusals = false } = {}) {
      if (!gone) child.kill('SIGTERM');
      const e = await exited;
      running.delete(s);
      // Every stack's roles are checked on every call: a refusal here is a
      // call the first real deploy would refuse too.
      if (!refusals) assert.deepEqual(s.refusals(), [], 'a function called what its role does not allow');
      return e;
    },
  };
  running.add(s);
  await until('the ready file', () => gone || fs.existsSync(ready), 300000);
  if (gone) {
    running.delete(s);
    return Object.assign(s, { failed: gone, readyWritten: fs.existsSync(ready) });
  }
  return Object.assign(s, JSON.parse(fs.readFileSync(ready, 'utf8')));
}

/** As `emulate`, failing the test with what emulate said when it stopped before being ready. */
async function started(options) {
  const s = await emulate(options);
  assert.ok(!s.failed, `emulate did not become ready (${JSON.stringify(s.failed)}):${s.tail(8000)}`);
  return s;
}

/** Stops every stack still running (a test that failed half way). */
async function stopAll() {
  await Promise.all([...running].map((s) => s.stop()));
}

let pages = 0;
/** A page: a socket that records every frame (batches unwrapped), from an address of its own. */
function page(url) {
  const frames = [];
  const n = pages++;
  const ws = new WebSocket(url, { headers: { Origin: ORIGIN, 'X-Emulate-Source-Ip': `10.78.${n >> 8}.${n & 255}` } });
  ws.on('message', (m) => {
    const msg = JSON.parse(String(m));
    for (const f of msg.type === 'batch' ? msg.frames : [msg]) frames.push(f);
  });
  const opened = new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  return {
    ws,
    frames,
    opened,
    send: (o) => ws.send(JSON.stringify(o)),
    events: (ch) => frames.filter((f) => f.type === 'event' && f.channel === ch),
    async subscribe(channel) {
      await opened;
      ws.send(JSON.stringify({ action: 'subscribe', channel }));
      const got = await until(`${channel} subscribed`, () => frames.find((f) => (f.type === 'subscribed' || f.type === 'error') && f.channel === channel));
      assert.equal(got.type, 'subscribed', JSON.stringify(got));
    },
    close: () => ws.close(),
  };
}

/** The p-th percentile (0..1) of `values`. */
function pct(values, p) {
  const v = [...values].sort((a, b) => a - b);
  return v.length ? v[Math.round((v.length - 1) * p)] : NaN;
}

module.exports = { ROOT, BUILD, ORIGIN, until, emulate, started, running, stopAll, page, pct };
