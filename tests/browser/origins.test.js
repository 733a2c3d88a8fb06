// A page on its own origin (a static host), hookcast on another, as on a real
// site: an allowed origin pattern goes live, a refused origin shows
// "refused" and stops retrying, and a private channel opens with a token
// from `hookcast token`.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const { launch, BIN } = require('./harness.js');

const HMAC = 'origins-hmac-secret-0123456789';
let browser, hookcast, site, dir, token;

function startHookcast(config) {
  const child = spawn(BIN, ['serve', '--config', config, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'hookcast=info' } });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner:\n${out}\n${err}`)), 20000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /hookcast listening on (http:\/\/\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ child, base: m[1], log: () => err });
    });
  });
}

/** The site: one static page, served as a static host would. */
function startSite(page) {
  const server = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(page); });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-origins-'));
  const config = path.join(dir, 'hookcast.toml');
  fs.writeFileSync(config, [
    'allowed_origins = ["http://127.0.0.1:*"]',
    '[server]', `data_dir = "${path.join(dir, 'data')}"`,
    '[sources.hmac]', 'kind = "hmac"', `secret = "${HMAC}"`, 'channels = ["*"]',
    '[private]', 'secret = "origins-private-secret-0123456789"', 'channels = ["orders/*"]', '',
  ].join('\n'));
  token = execFileSync(BIN, ['token', '--channel', 'orders/*', '--ttl', '10m', '--config', config], { env: { ...process.env, HOOKCAST_SUBSCRIBE_SECRET: '' } }).toString().trim();
  hookcast = await startHookcast(config);
  const ws = hookcast.base.replace('http://', 'ws://') + '/ws';
  const page = `<!doctype html><meta charset="utf-8"><title>site</title>
    <p id="status" data-hookcast-status>…</p>
    <p data-hookcast-channel="orders/42"><span id="order" data-hookcast-text="state">pending</span></p>
    <script src="${hookcast.base}/hookcast.js" data-url="${ws}" data-token="${token}"></script>`;
  [browser, site] = await Promise.all([launch(), startSite(page)]);
});

test.after(async () => {
  if (site) site.close();
  if (hookcast) hookcast.child.kill('SIGKILL');
  if (browser) await browser.close();
});

test('an allowed origin pattern goes live and reads a private channel with its token', async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  await page.goto(`http://127.0.0.1:${site.address().port}/`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 20000 });
  await page.waitForFunction(() => window.Hookcast.client.lastSeq('orders/42') !== null, null, { timeout: 20000 });
  const body = JSON.stringify({ channel: 'orders/42', event: 'order.updated', data: { state: 'shipped' } });
  const res = await fetch(`${hookcast.base}/hooks/hmac`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hub-signature-256': 'sha256=' + crypto.createHmac('sha256', HMAC).update(body).digest('hex') },
    body,
  });
  assert.equal(res.status, 200);
  await page.waitForFunction(() => document.querySelector('#order').textContent === 'shipped', null, { timeout: 20000 });
  assert.deepEqual(problems, []);
  await page.close();
});

test('a refused origin shows "refused", says why, stops retrying, and the server logs it', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  let sockets = 0;
  page.on('websocket', () => { sockets += 1; });
  // The same page, reached as localhost: a different origin, not in the list.
  await page.goto(`http://localhost:${site.address().port}/`);
  await page.waitForSelector('#status[data-state="refused"]', { timeout: 20000 });
  assert.equal(await page.textContent('#status'), 'refused');
  assert.ok(errors.some((e) => e.includes('hookcast: refused') && e.includes('http://localhost:') && e.includes('allowed_origins')), errors.join('\n'));
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(sockets, 1, 'no retry after a refusal');
  assert.match(hookcast.log(), /socket refused: origin not allowed.*origin=http:\/\/localhost:\d+/);
  await page.close();
});
