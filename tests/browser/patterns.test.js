// Every update pattern of the snippet, on the demo page in real Chromium.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { startServer, launch, openPage, subscribed, postSigned, deploy } = require('./harness.js');

let browser, server;
test.before(async () => {
  [browser, server] = await Promise.all([launch(), startServer()]);
});
test.after(async () => {
  if (server) await server.stop('SIGKILL');
  if (browser) await browser.close();
});

test('poke/pull swaps only the region, banner and attributes follow, no reload', async () => {
  const { page, problems } = await openPage(browser, server.base + '/');
  await subscribed(page, ['deploys', 'forms/guestbook']);
  assert.equal(await page.textContent('#build-seq'), 'none yet');
  assert.equal(await page.isHidden('#banner'), true);
  await page.evaluate(() => { window.__noReload = true; });
  const form = JSON.parse(require('node:fs').readFileSync(require('node:path').join(__dirname, '..', 'fixtures', 'netlify', 'form.json'), 'utf8'));
  await postSigned(server, 'netlify', form);
  await page.waitForSelector('#entries li');

  const ack = await postSigned(server, 'netlify', deploy('ready', { title: 'Ship <b>it</b>', deploy_ssl_url: 'https://abc--site.netlify.app' }));
  await page.waitForFunction(() => document.querySelector('#build-seq').textContent === '#' + 1);
  assert.equal(ack.seq, 1);
  assert.equal(await page.textContent('#build-title'), 'Ship <b>it</b>', 'server-rendered region, escaped');
  assert.equal(await page.isVisible('#banner'), true);
  assert.equal(await page.getAttribute('#deploy-link', 'href'), 'https://abc--site.netlify.app');
  assert.equal(await page.getAttribute('#deploy-link', 'title'), 'Ship <b>it</b>');
  assert.equal(await page.evaluate(() => window.__noReload), true);
  assert.equal((await page.textContent('#entries li strong')).trim(), 'Ada', 'outside the region, nothing was replaced');

  // A javascript: URL never reaches an href.
  await postSigned(server, 'netlify', deploy('ready', { deploy_ssl_url: 'javascript:alert(1)', title: 'evil' }));
  await page.waitForFunction(() => document.querySelector('#deploy-link').title === 'evil');
  assert.equal(await page.getAttribute('#deploy-link', 'href'), 'https://abc--site.netlify.app');
  assert.deepEqual(problems, []);
  await page.close();
});

test('merge patches rewrite only the bindings whose values changed; Hookcast.on sees business events', async () => {
  const { page, problems } = await openPage(browser, server.base + '/');
  await subscribed(page, ['scoreboard']);
  await page.evaluate(() => {
    window.__seen = [];
    window.Hookcast.on('scoreboard', 'score', (d) => window.__seen.push(d.data));
  });
  await postSigned(server, 'hmac', { channel: 'scoreboard', event: 'score',
    data: { teams: { home: 'Ada FC', away: 'Bee United' }, home: 0, away: 0, period: '1st half' } });
  await page.waitForFunction(() => document.querySelector('#home-name').textContent === 'Ada FC');
  assert.equal(await page.textContent('#period'), '1st half');

  // Watch what the next patch touches.
  await page.evaluate(() => {
    window.__touched = [];
    new MutationObserver((recs) => recs.forEach((r) => {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      window.__touched.push(el.id);
    })).observe(document.querySelector('#score'), { subtree: true, childList: true, characterData: true, attributes: true });
  });
  await postSigned(server, 'hmac', { channel: 'scoreboard', event: 'score', data: { home: 1 } });
  await page.waitForFunction(() => document.querySelector('#home').textContent === '1');
  assert.deepEqual(await page.evaluate(() => [...new Set(window.__touched)]), ['home']);
  assert.equal(await page.textContent('#home-name'), 'Ada FC', 'earlier state is kept');

  await postSigned(server, 'hmac', { channel: 'scoreboard', event: 'score', data: { period: null, away: 2 } });
  await page.waitForFunction(() => document.querySelector('#away').textContent === '2');
  assert.equal(await page.textContent('#period'), '', 'a key the patch deletes (RFC 7386 null) clears its binding');
  const seen = await page.evaluate(() => window.__seen);
  assert.deepEqual(seen, [
    { teams: { home: 'Ada FC', away: 'Bee United' }, home: 0, away: 0, period: '1st half' },
    { home: 1 },
    { period: null, away: 2 },
  ]);
  assert.deepEqual(problems, []);
  await page.close();
});

test('the ES module entry (import + on + start) works under a strict CSP', async () => {
  const { page, problems } = await openPage(browser, server.base + '/module.html');
  await subscribed(page, ['news']);
  await postSigned(server, 'hmac', { channel: 'news', event: 'post.published', data: { title: 'From a module' } });
  await page.waitForFunction(() => document.querySelector('#headline').textContent === 'From a module');
  assert.deepEqual(await page.$$eval('#received li', (l) => l.map((x) => x.textContent)), ['post.published: From a module']);
  assert.deepEqual(problems, []);
  await page.close();
});

test('50 pages spread their refetches over the window instead of stampeding', async (t) => {
  // The timing is the point here, so the page's setting is stretched rather than the test's
  // bounds tightened: a 15 s window (data-spread; 5 s by default) dwarfs the stalls of a busy
  // 2-core machine, which fire a starved browser's timers together.
  const WINDOW = 15000;
  const context = await browser.newContext();
  // The attribute is set as the parser inserts the script tag, before the deferred snippet reads it.
  await context.addInitScript((ms) => {
    new MutationObserver((records, observer) => {
      const tag = document.querySelector('script[src="/hookcast.js"]');
      if (tag) { tag.setAttribute('data-spread', String(ms)); observer.disconnect(); }
    }).observe(document, { childList: true, subtree: true });
  }, WINDOW);
  const fetches = [];
  context.on('request', (r) => { if (r.url().includes('hookcast=')) fetches.push(Date.now()); });
  const pages = [];
  for (let i = 0; i < 50; i++) {
    const p = await context.newPage();
    await p.goto(server.base + '/');
    pages.push(p);
  }
  await Promise.all(pages.map((p) => subscribed(p, ['deploys'])));
  const spreads = await Promise.all(pages.map((p) => p.evaluate(() => document.querySelector('script[src="/hookcast.js"]').dataset.spread)));
  assert.deepEqual(new Set(spreads), new Set([String(WINDOW)]), 'every page runs with the stretched window');
  const sentAt = Date.now();
  const ack = await postSigned(server, 'netlify', deploy('ready', { title: 'Herd test' }));
  await Promise.all(pages.map((p) => p.waitForFunction(
    (seq) => document.querySelector('#build-seq').textContent === '#' + seq, ack.seq)));
  assert.equal(fetches.length, 50, 'each page refetched exactly once');
  const offsets = fetches.map((t) => t - sentAt).sort((a, b) => a - b);
  const spread = offsets.at(-1) - offsets[0];
  // Uniform delays over 50 pages span well over 40 % of the window (the chance
  // they all land within it is about 0.4^49).
  assert.ok(spread > 0.4 * WINDOW, `refetches spread over ${spread} ms: ${offsets.join(',')}`);
  // Within the window, plus the delivery of the event on a busy machine.
  assert.ok(offsets.at(-1) < WINDOW + 10000, `all refetched within the window: ${offsets.at(-1)} ms`);
  const perSecond = new Map();
  offsets.forEach((o) => perSecond.set(Math.floor(o / 1000), (perSecond.get(Math.floor(o / 1000)) || 0) + 1));
  // About 3 a second on average; a stampede puts half the pages in one second.
  assert.ok(Math.max(...perSecond.values()) <= 25, `no stampede: ${JSON.stringify([...perSecond])}`);
  t.diagnostic(`50 refetches over ${spread} ms (first ${offsets[0]} ms, last ${offsets.at(-1)} ms); per second: ${JSON.stringify([...perSecond].sort((a, b) => a[0] - b[0]))}`);
  await context.close();
});

test('a deploy preview never touches the production page; the production deploy does', async () => {
  const { page, problems } = await openPage(browser, server.base + '/');
  await subscribed(page, ['deploys']);
  await page.evaluate(() => {
    window.__deploys = [];
    document.addEventListener('hookcast:event', (e) => window.__deploys.push([e.detail.channel, e.detail.data.title]));
  });
  const before = await page.textContent('#build-title');
  const preview = await postSigned(server, 'netlify', deploy('ready', { context: 'deploy-preview', title: 'Preview only' }));
  assert.equal(preview.channel, 'deploys/deploy-preview');
  const prod = await postSigned(server, 'netlify', deploy('ready', { context: 'production', title: 'Production' }));
  assert.equal(prod.channel, 'deploys');
  await page.waitForFunction(() => document.querySelector('#build-title').textContent === 'Production');
  assert.notEqual(before, 'Preview only');
  assert.deepEqual(await page.evaluate(() => window.__deploys), [['deploys', 'Production']]);
  assert.deepEqual(problems, []);
  await page.close();
});
