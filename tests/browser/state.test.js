// Every visitor current, not only the ones already on the page: a static
// site built to a folder, stamped by stamp.mjs (the CLI, as a build runs it),
// served from its own origin; hookcast on another, with channel state
// ([state]) and a short history (history_max_events = 10). Netlify
// deliveries are signed here with node's crypto (an independent signer).
//
// - a visitor arriving after 3 form submissions and a stock patch sees
//   exactly those 3, newest first, and the patched value over the built one;
// - a page from deploy d2 shows no banner when d2 goes live, and does when
//   d3 goes live;
// - after history has moved past the build, the merged state and the newest
//   list entries are shown;
// - a page with no stamp shows the current last, merge and list state;
// - the Netlify plugin's onPostBuild, called as Netlify calls it, stamps a
//   publish directory, and fails the build (no page stamped) when the server
//   cannot be reached.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { execFile } = require('node:child_process');
const { launch, startConfigured, startStaticHost, signNetlify } = require('./harness.js');

const ROOT = path.resolve(__dirname, '..', '..');
const STAMP = path.join(ROOT, 'site-snippet', 'stamp', 'stamp.mjs');
const PLUGIN = path.join(ROOT, 'site-snippet', 'netlify-plugin', 'index.js');
const HMAC = 'state-hmac-secret-0123456789';
const NETLIFY = 'state-netlify-secret-0123456789';
let browser, hookcast, site, dir, build;

/** The site's HTML as its generator wrote it, before any stamp. */
const pageHtml = (deploy) => `<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head><body>
<p id="status" data-hookcast-status>…</p>
<div id="banner" data-hookcast-banner="deploys" data-hookcast-event="deploy.succeeded" hidden>New version <button data-hookcast-reload>reload</button></div>
<p data-hookcast-channel="deploys">deploy <span id="deploy" data-hookcast-text="id">${deploy}</span></p>
<section data-hookcast-channel="stock" data-hookcast-state>
  apples <b id="apples" data-hookcast-text="apples">10</b> pears <b id="pears" data-hookcast-text="pears">5</b></section>
<ul id="entries"><template data-hookcast-append="forms/contact" data-hookcast-max="50"><li data-hookcast-text="fields.name"></li></template></ul>
<script src="${hookcast.base}/hookcast.js" data-url="${hookcast.base.replace('http://', 'ws://')}/ws" data-spread="0"></script>
</body></html>
`;

async function post(source, payload) {
  const body = JSON.stringify(payload);
  const headers = { 'content-type': 'application/json' };
  if (source === 'netlify') headers['x-webhook-signature'] = signNetlify(body, NETLIFY);
  else headers['x-hub-signature-256'] = 'sha256=' + crypto.createHmac('sha256', HMAC).update(body).digest('hex');
  const res = await fetch(`${hookcast.base}/hooks/${source}`, { method: 'POST', headers, body });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

const deployLive = (id) => post('netlify', { id, state: 'ready', context: 'production', branch: 'main', site_id: 's1' });
const submit = (name) => post('netlify', { id: crypto.randomBytes(8).toString('hex'), form_name: 'contact', data: { name, message: 'hi', email: 'x@y.z' } });
const patchStock = (patch) => post('hmac', { channel: 'stock', event: 'stock.changed', data: patch });

function runStamp(args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [STAMP, ...args], { env: { ...process.env, DEPLOY_ID: '', ...env } }, (e, stdout, stderr) => resolve({ code: e ? e.code : 0, stdout, stderr }));
  });
}

const entries = (page) => page.$$eval('#entries > li', (lis) => lis.map((li) => li.textContent));
const text = (page, sel) => page.textContent(sel);

async function visit(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.addInitScript(() => {
    document.addEventListener('hookcast:reset', (e) => { window.__resets = (window.__resets || []).concat(e.detail.channel); });
    document.addEventListener('hookcast:state', (e) => { window.__states = (window.__states || []).concat(e.detail.channel); });
  });
  await page.goto(url);
  return { page, context, problems };
}

/** Live, and each channel has its place (a state, a replay or the head). */
async function current(page, channels) {
  await page.waitForSelector('[data-hookcast-status][data-state="live"]');
  await page.waitForFunction((chs) => chs.every((c) => window.Hookcast.client.lastSeq(c) !== null), channels);
}

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-state-'));
  const config = path.join(dir, 'hookcast.toml');
  fs.writeFileSync(config, [
    'allowed_origins = ["http://127.0.0.1:*"]',
    '[server]', `data_dir = "${path.join(dir, 'data')}"`,
    '[limits]', 'history_max_events = 10',
    '[sources.hmac]', 'kind = "hmac"', `secret = "${HMAC}"`, 'channels = ["stock"]', 'fields = ["apples", "pears", "plums"]',
    '[sources.netlify]', 'kind = "netlify"', `secret = "${NETLIFY}"`,
    '[sources.netlify.forms.contact]', 'fields = ["name", "message"]',
    '[state]', '"deploys" = "last"', '"stock" = "merge"', '"forms/*" = "list:20"', '',
  ].join('\n'));
  hookcast = await startConfigured(config);
  build = path.join(dir, 'build');
  fs.mkdirSync(path.join(build, 'shop'), { recursive: true });
  [browser, site] = await Promise.all([launch(), startStaticHost(build)]);
});

test.after(async () => {
  if (site) site.close();
  if (hookcast) hookcast.child.kill('SIGKILL');
  if (browser) await browser.close();
});

test('a built, stamped site: late visitors are current, their own deploy is no news, history gone still leaves state', async () => {
  // Before the build: deploy d1 went live, the stock was set.
  await deployLive('d1');
  await patchStock({ apples: 10, pears: 5 });
  // The build of d2 writes its pages, then stamps them (as onPostBuild would).
  fs.writeFileSync(path.join(build, 'index.html'), pageHtml('d2'));
  fs.writeFileSync(path.join(build, 'shop', 'plain.html'), pageHtml('d2'));
  const stamped = await runStamp(['--url', hookcast.base, '--dir', build, '--deploy-id', 'd2']);
  assert.equal(stamped.code, 0, stamped.stderr);
  assert.match(stamped.stdout, /stamped 2 of 2 HTML files with 3 channels/);
  const html = fs.readFileSync(path.join(build, 'index.html'), 'utf8');
  assert.match(html, /<meta name="hookcast-since" content="deploys=1 stock=1 forms\/contact=0">/);
  assert.match(html, /<meta name="hookcast-deploy" content="d2">/);
  // Idempotent: a second run changes nothing.
  await runStamp(['--url', hookcast.base, '--dir', build, '--deploy-id', 'd2']);
  assert.equal(fs.readFileSync(path.join(build, 'index.html'), 'utf8'), html);
  // The unstamped copy (a page a generator wrote after the stamp ran).
  fs.writeFileSync(path.join(build, 'shop', 'plain.html'), pageHtml('d2'));

  // After the build: d2 goes live, 3 form submissions, a stock patch.
  await deployLive('d2');
  for (const name of ['Ada', 'Brendan', 'Chidi']) await submit(name);
  await patchStock({ apples: 7 });

  const siteUrl = `http://127.0.0.1:${site.address().port}`;
  const v = await visit(`${siteUrl}/index.html`);
  await current(v.page, ['deploys', 'stock', 'forms/contact']);
  await v.page.waitForFunction(() => document.querySelectorAll('#entries > li').length === 3 && document.querySelector('#apples').textContent === '7');
  assert.deepEqual(await entries(v.page), ['Chidi', 'Brendan', 'Ada'], 'exactly those 3, newest first');
  assert.equal(await text(v.page, '#apples'), '7', 'the patched value over the built one');
  assert.equal(await text(v.page, '#pears'), '5', 'the built value where no patch came');
  assert.equal(await text(v.page, '#deploy'), 'd2');
  assert.equal(await v.page.isHidden('#banner'), true, "the page's own deploy going live is no news");
  assert.equal(await v.page.evaluate(() => window.__states || null), null, 'replayed from its stamps: no state needed');

  // d3 goes live: the page is no longer the newest deploy.
  await deployLive('d3');
  await v.page.waitForSelector('#banner', { state: 'visible' });
  assert.equal(await text(v.page, '#deploy'), 'd3');
  assert.deepEqual(v.problems, []);
  await v.context.close();

  // History moves past the build: 12 stock patches and 25 submissions, with
  // history_max_events = 10. The d2 page's stamps are now older than history.
  for (let i = 1; i <= 12; i++) await patchStock(i === 12 ? { apples: 1, plums: 12 } : { pears: i });
  const names = [];
  for (let i = 1; i <= 25; i++) { names.push(`n${i}`); await submit(`n${i}`); }
  const late = await visit(`${siteUrl}/index.html`);
  await current(late.page, ['deploys', 'stock', 'forms/contact']);
  await late.page.waitForFunction(() => document.querySelectorAll('#entries > li').length === 20);
  assert.deepEqual(await entries(late.page), names.slice(-20).reverse(), 'the list state: the 20 newest, newest first');
  assert.equal(await text(late.page, '#apples'), '1', 'the merged state');
  assert.equal(await text(late.page, '#pears'), '11', 'the merged state keeps what later patches left alone');
  assert.deepEqual((await late.page.evaluate(() => window.__states)).sort(), ['forms/contact', 'stock'], 'state for what history no longer reaches');
  assert.equal(await late.page.evaluate(() => window.__resets || null), null, 'a state is no reset');
  // deploys is still within history: d2 (its own) and d3 replay, and d3 is news to a d2 page.
  await late.page.waitForSelector('#banner', { state: 'visible' });
  await late.context.close();

  // A page with no stamp at all shows the current last, merge and list state.
  const plain = await visit(`${siteUrl}/shop/plain.html`);
  assert.equal(await plain.page.$('meta[name="hookcast-since"]'), null, 'this copy is unstamped');
  await current(plain.page, ['deploys', 'stock', 'forms/contact']);
  await plain.page.waitForFunction(() => document.querySelectorAll('#entries > li').length === 20 && document.querySelector('#deploy').textContent === 'd3');
  assert.equal(await text(plain.page, '#apples'), '1');
  assert.equal(await text(plain.page, '#pears'), '11');
  assert.equal((await entries(plain.page))[0], 'n25');
  assert.equal(await plain.page.isHidden('#banner'), true, 'the state of deploys (d3) raises no banner');
  assert.deepEqual((await plain.page.evaluate(() => window.__states)).sort(), ['deploys', 'forms/contact', 'stock']);
  assert.deepEqual(plain.problems, []);
  await plain.context.close();
});

test('the Netlify plugin stamps the publish directory as Netlify calls it, and fails the build when hookcast is unreachable', async () => {
  const publish = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-publish-'));
  fs.mkdirSync(path.join(publish, 'blog'));
  fs.writeFileSync(path.join(publish, 'index.html'), pageHtml('d9'));
  fs.writeFileSync(path.join(publish, 'blog', 'post.html'), '<html><head></head><body><ul><template data-hookcast-append="forms/contact"><li></li></template></ul></body></html>');
  fs.writeFileSync(path.join(publish, 'about.html'), '<html><head></head><body>no channels</body></html>');
  const heads = {};
  for (const c of ['deploys', 'stock', 'forms/contact']) heads[c] = (await (await fetch(`${hookcast.base}/channels/${c}/head`)).json()).seq;
  const plugin = require(PLUGIN);
  const failures = [];
  const utils = { build: { failBuild: (message, opts) => { failures.push({ message, opts }); throw new Error(message); } } };
  const saved = process.env.DEPLOY_ID;
  process.env.DEPLOY_ID = '64f0c0ffee';
  try {
    await plugin.onPostBuild({ constants: { PUBLISH_DIR: publish }, inputs: { url: hookcast.base }, utils, netlifyConfig: {}, packageJson: {} });
    assert.deepEqual(failures, []);
    const index = fs.readFileSync(path.join(publish, 'index.html'), 'utf8');
    assert.ok(index.includes(`<meta name="hookcast-since" content="deploys=${heads.deploys} stock=${heads.stock} forms/contact=${heads['forms/contact']}">`), index);
    assert.ok(index.includes('<meta name="hookcast-deploy" content="64f0c0ffee">'));
    assert.ok(fs.readFileSync(path.join(publish, 'blog', 'post.html'), 'utf8').includes(`content="forms/contact=${heads['forms/contact']}"`));
    assert.ok(!fs.readFileSync(path.join(publish, 'about.html'), 'utf8').includes('hookcast-since'), 'a page that binds nothing gets no stamp');

    // Unreachable: a port nothing listens on. The build fails, naming the URL; nothing is written.
    const dead = await new Promise((resolve) => { const s = http.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); }); });
    fs.writeFileSync(path.join(publish, 'index.html'), pageHtml('d10'));
    const before = fs.readFileSync(path.join(publish, 'index.html'), 'utf8');
    await assert.rejects(plugin.onPostBuild({ constants: { PUBLISH_DIR: publish }, inputs: { url: `http://127.0.0.1:${dead}` }, utils }));
    assert.equal(failures.length, 1);
    assert.match(failures[0].message, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${dead}`));
    assert.match(failures[0].message, /no page was stamped/);
    assert.equal(fs.readFileSync(path.join(publish, 'index.html'), 'utf8'), before, 'no wrong stamp');
  } finally {
    if (saved === undefined) delete process.env.DEPLOY_ID; else process.env.DEPLOY_ID = saved;
  }
  // The CLI says the same and exits 1.
  const cli = await runStamp(['--url', 'http://127.0.0.1:9', '--dir', publish]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);
});
