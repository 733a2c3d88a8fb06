// A page on its own origin (a static host), hookcast on another, as on a real
// site, with the page's own HTML: an allowed origin pattern goes live and
// every update pattern works across origins (text, attributes, a list from a
// <template>, a banner, a region refreshed from the static host, merge-patch
// state including a delete, a preview deploy that leaves production alone,
// a private channel opened with a token from `hookcast token`); a refused
// origin shows "refused", says why and stops retrying.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const { launch, startConfigured, signNetlify, BIN } = require('./harness.js');

const HMAC = 'origins-hmac-secret-0123456789';
const NETLIFY = 'origins-netlify-secret-0123456789';
let release = 'v1'; // what the static host serves in its pre-rendered region
let browser, hookcast, site, dir, token;

/** The site: one static page, served as a static host would. */
function startSite(page) {
  const server = http.createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }); res.end(page()); });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-origins-'));
  const config = path.join(dir, 'hookcast.toml');
  fs.writeFileSync(config, [
    'allowed_origins = ["http://127.0.0.1:*"]',
    '[server]', `data_dir = "${path.join(dir, 'data')}"`,
    '[sources.hmac]', 'kind = "hmac"', `secret = "${HMAC}"`, 'channels = ["*"]', 'fields = ["home", "period", "state"]',
    '[sources.netlify]', 'kind = "netlify"', `secret = "${NETLIFY}"`,
    '[sources.netlify.forms.guestbook]', 'fields = ["name", "message"]',
    '[private]', 'secret = "origins-private-secret-0123456789"', 'channels = ["orders/*"]', '',
  ].join('\n'));
  token = execFileSync(BIN, ['token', '--channel', 'orders/*', '--ttl', '10m', '--config', config], { env: { ...process.env, HOOKCAST_SUBSCRIBE_SECRET: '' } }).toString().trim();
  hookcast = await startConfigured(config, 'hookcast=info');
  const ws = hookcast.base.replace('http://', 'ws://') + '/ws';
  const page = () => `<!doctype html><meta charset="utf-8"><title>site</title>
    <p id="status" data-hookcast-status>…</p>
    <div id="banner" data-hookcast-banner="deploys" data-hookcast-event="deploy.succeeded" hidden>New version</div>
    <section id="region" data-hookcast-refresh="deploys" data-hookcast-event="deploy.succeeded"><b id="release">${release}</b></section>
    <section data-hookcast-channel="deploys"><span id="state" data-hookcast-text="state">unknown</span>
      <a id="link" href="#" data-hookcast-attr="href:deploy_ssl_url">deploy</a></section>
    <ul id="entries"><template data-hookcast-append="forms/guestbook"><li data-hookcast-text="fields.name"></li></template></ul>
    <section data-hookcast-channel="scoreboard" data-hookcast-state>
      <b id="home" data-hookcast-text="home">0</b> <small id="period" data-hookcast-text="period"></small></section>
    <p data-hookcast-channel="orders/42"><span id="order" data-hookcast-text="state">pending</span></p>
    <script src="${hookcast.base}/hookcast.js" data-url="${ws}" data-token="${token}" data-spread="0"></script>`;
  [browser, site] = await Promise.all([launch(), startSite(page)]);
});

test.after(async () => {
  if (site) site.close();
  if (hookcast) hookcast.child.kill('SIGKILL');
  if (browser) await browser.close();
});

async function post(source, payload) {
  const body = JSON.stringify(payload);
  const headers = { 'content-type': 'application/json' };
  if (source === 'netlify') {
    headers['x-webhook-signature'] = signNetlify(body, NETLIFY);
  } else {
    headers['x-hub-signature-256'] = 'sha256=' + crypto.createHmac('sha256', HMAC).update(body).digest('hex');
  }
  const res = await fetch(`${hookcast.base}/hooks/${source}`, { method: 'POST', headers, body });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

const deploy = (context, state, extra = {}) => ({ id: crypto.randomBytes(8).toString('hex'), state, context, branch: 'main', ...extra });
const text = (page, sel) => page.textContent(sel);
const until = (page, fn, arg) => page.waitForFunction(fn, arg);

test('an allowed origin pattern goes live and every pattern works across origins', async () => {
  const page = await browser.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  await page.goto(`http://127.0.0.1:${site.address().port}/`);
  await page.waitForSelector('#status[data-state="live"]');
  await until(page, () => ['deploys', 'forms/guestbook', 'scoreboard', 'orders/42'].every((c) => window.Hookcast.client.lastSeq(c) !== null));
  await page.evaluate(() => {
    window.__noReload = true;
    window.__events = [];
    document.addEventListener('hookcast:event', (e) => window.__events.push(e.detail.channel + ' ' + e.detail.event));
  });

  // A deploy preview: nothing on this production page moves.
  await post('netlify', deploy('deploy-preview', 'ready', { deploy_ssl_url: 'https://preview--site.netlify.app' }));
  // Production: text, attribute, banner, and the region refetched from the static host.
  release = 'v2';
  await post('netlify', deploy('production', 'ready', { deploy_ssl_url: 'https://main--site.netlify.app' }));
  await until(page, () => document.querySelector('#release').textContent === 'v2');
  assert.equal(await text(page, '#state'), 'ready');
  assert.equal(await page.getAttribute('#link', 'href'), 'https://main--site.netlify.app', 'the production deploy, never the preview');
  assert.equal(await page.isVisible('#banner'), true);
  assert.deepEqual(await page.evaluate(() => window.__events), ['deploys deploy.succeeded'], 'the preview reached no production page');

  // A list from a <template>, text only.
  await post('netlify', { form_name: 'guestbook', id: 'f1', data: { name: 'Ada <b>', message: 'hi', email: 'a@b.example' } });
  await until(page, () => document.querySelector('#entries li') !== null);
  assert.equal(await text(page, '#entries li'), 'Ada <b>');

  // Merge-patch state: a null deletes the key and clears its binding.
  await post('hmac', { channel: 'scoreboard', event: 'score', data: { home: 1, period: '1st half' } });
  await until(page, () => document.querySelector('#period').textContent === '1st half');
  await post('hmac', { channel: 'scoreboard', event: 'score', data: { home: 2, period: null } });
  await until(page, () => document.querySelector('#home').textContent === '2');
  assert.equal(await text(page, '#period'), '', 'RFC 7386: a deleted key clears its binding');

  // A private channel, opened with the token from `hookcast token`.
  await post('hmac', { channel: 'orders/42', event: 'order.updated', data: { state: 'shipped' } });
  await until(page, () => document.querySelector('#order').textContent === 'shipped');

  assert.equal(await page.evaluate(() => window.__noReload), true, 'no reload');
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
  await page.waitForSelector('#status[data-state="refused"]');
  assert.equal(await page.textContent('#status'), 'refused');
  assert.ok(errors.some((e) => e.includes('hookcast: refused') && e.includes('http://localhost:') && e.includes('allowed_origins')), errors.join('\n'));
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(sockets, 1, 'no retry after a refusal');
  assert.match(hookcast.log(), /socket refused: origin not allowed.*origin=http:\/\/localhost:\d+/);
  await page.close();
});
