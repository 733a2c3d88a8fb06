// The operator's console in Chromium, against `hookcast dev` as a user runs
// it: the console link `hookcast dev` prints opens it (the token rides in
// the URL's fragment). With a live page on a static host (stamped with its
// build), each step shows on the console within a second:
//   - a GitHub delivery signed with the wrong secret, refused, with why;
//   - a correct one, accepted, with its channel, seq and the page it reached;
//   - a test event sent from the console, reaching the page;
//   - a replay of the accepted delivery, reaching the page again;
//   - the open page, under the build it was stamped with.
// The console runs under its strict CSP with no console error; without the
// token every data route answers 401; a screenshot goes to tests/artifacts.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServer, startStaticHost, launch, ARTIFACTS } = require('./harness.js');

// A real GitHub delivery (tests/fixtures/senders/github/SOURCE.txt says where from).
const RELEASE = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'senders', 'github', 'release-published.json'));
// "Within a second" is the console's promise (it asks again 250 ms after each answer): each
// step's time, from the sender's answer (or the click) to the console or
// page showing it, is held to it; the ceiling below only ends a stuck run.
const SECOND = 1000;
const CEILING = 30000;

let server, site, browser, dir, consoleUrl, token;

/** GitHub's signature by node's crypto (not the Rust signer under test). */
function github(secret, body) {
  return 'sha256=' + crypto.createHmac('sha256', secret).update(body).digest('hex');
}

async function deliver(secret) {
  const res = await fetch(`${server.base}/hooks/github`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'release',
      'x-github-delivery': crypto.randomUUID(),
      'x-hub-signature-256': github(secret, RELEASE),
      'user-agent': 'GitHub-Hookshot/console-test',
    },
    body: RELEASE,
  });
  return { status: res.status, body: await res.json() };
}

/** Waits for `selector` and says how long it took after `since`. */
async function shows(page, selector, since) {
  await page.waitForSelector(selector, { timeout: CEILING });
  return Date.now() - since;
}

test.before(async () => {
  server = await startServer();
  const m = /console\s*:?\s+(http:\/\/\S+\/_console#token=(\S+))/.exec(server.banner);
  assert.ok(m, `hookcast dev prints the console's link with its token:\n${server.banner}`);
  [consoleUrl, token] = [m[1], m[2]];
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-console-'));
  fs.writeFileSync(path.join(dir, 'index.html'), `<!doctype html><meta charset="utf-8"><title>site</title>
    <meta name="hookcast-deploy" content="build-7f3a">
    <p data-hookcast-status>…</p>
    <ul id="log"><template data-hookcast-append="github"><li data-hookcast-text="tag"></li></template></ul>
    <script src="${server.base}/hookcast.js" data-spread="0"></script>`);
  site = await startStaticHost(dir);
  browser = await launch();
});

test.after(async () => {
  if (browser) await browser.close();
  if (site) site.close();
  if (server) await server.stop();
});

test('the console shows refused and accepted deliveries, a test event, a replay and pages by build, each within a second', async () => {
  const livePage = await browser.newPage();
  const pageEvents = [];
  await livePage.exposeFunction('record', (e) => pageEvents.push(e));
  await livePage.addInitScript(() => document.addEventListener('hookcast:event', (e) => window.record(e.detail)));
  await livePage.goto(`http://127.0.0.1:${site.address().port}/index.html`);
  await livePage.waitForFunction(() => window.Hookcast && window.Hookcast.client && window.Hookcast.client.lastSeq('github') !== null);

  const ops = await browser.newPage();
  const problems = [];
  ops.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) problems.push(m.text()); });
  ops.on('pageerror', (e) => problems.push(String(e)));
  const opened = await ops.goto(consoleUrl);
  assert.equal(opened.status(), 401, 'the page itself is 401 to a navigation (no token in a request); its script takes it from the fragment');
  await ops.waitForSelector('#status[data-status="live"]', { timeout: CEILING });
  assert.ok(!ops.url().includes('token='), `the token leaves the address bar: ${ops.url()} ${problems.join(' / ')}`);

  // 1. Wrong secret: refused, with its reason.
  const bad = await deliver('not-the-secret-0123456789');
  let t = Date.now();
  assert.equal(bad.status, 401);
  const refusedIn = await shows(ops, 'tr[data-outcome="refused"]', t);
  const refusedRow = await ops.textContent('tr[data-outcome="refused"]');
  assert.match(refusedRow, /github/);
  assert.match(refusedRow, /401/);
  assert.match(refusedRow, /does not match the body.*cannot tell a different secret from a changed body/);

  // 2. The right secret: accepted, with channel, seq and the page it reached.
  const good = await deliver(server.secrets.hmac);
  t = Date.now();
  assert.equal(good.status, 200, JSON.stringify(good.body));
  const { channel, seq } = good.body;
  assert.equal(channel, 'github');
  const acceptedIn = await shows(ops, 'tr[data-outcome="accepted"] td.seq', t);
  const acceptedRow = await ops.$('tr[data-outcome="accepted"]');
  assert.equal(await acceptedRow.$eval('td.channel', (e) => e.textContent), 'github');
  assert.equal(await acceptedRow.$eval('td.seq', (e) => e.textContent), String(seq));
  await ops.waitForFunction(() => /1 delivered/.test(document.querySelector('tr[data-outcome="accepted"] td.audience').textContent), null, { timeout: CEILING });
  const audienceIn = Date.now() - t;
  await livePage.waitForFunction((s) => window.Hookcast.client.lastSeq('github') >= s, seq);

  // The channel view follows the newest accepted delivery.
  await ops.waitForFunction((s) => document.getElementById('ch-head').textContent === String(s), seq, { timeout: CEILING });
  assert.equal(await ops.textContent('#ch-occupancy'), '1');

  // 3. A test event from the console's form reaches the page.
  t = Date.now();
  await ops.fill('#test-channel', 'github');
  await ops.fill('#test-event', 'test.ping');
  await ops.fill('#test-data', JSON.stringify({ tag: 'from-the-console' }));
  await ops.click('#test-form button[type="submit"]');
  await livePage.waitForFunction(() => [...document.querySelectorAll('#log li')].some((li) => li.textContent === 'from-the-console'), null, { timeout: CEILING });
  const testReachedIn = Date.now() - t;
  await ops.waitForSelector('tr[data-outcome="accepted"] >> text=test', { timeout: CEILING });

  // 4. A replay of the GitHub delivery reaches the page again, as a new seq.
  const before = pageEvents.filter((e) => e.event === 'release.published').length;
  t = Date.now();
  await ops.click(`tr[data-outcome="accepted"]:has(td.seq:text-is("${seq}")) button.replay`);
  await livePage.waitForFunction((n) => window.Hookcast.client.lastSeq('github') > n, seq + 1, { timeout: CEILING });
  await ops.waitForSelector('td.reason >> text=/^replay of /', { timeout: CEILING });
  const replayIn = Date.now() - t;
  const releases = pageEvents.filter((e) => e.event === 'release.published');
  assert.equal(releases.length, before + 1, 'the replay reached the page once more');
  assert.ok(releases[releases.length - 1].seq > seq + 1, 'as a new event, after the test event');
  assert.deepEqual(releases[releases.length - 1].data, releases[0].data, 'with the same data');

  // 5. The open page under the build it was stamped with.
  t = Date.now();
  await ops.waitForSelector('#pages tr[data-build="build-7f3a"] td.pages:text-is("1")', { timeout: CEILING });
  const pagesIn = Date.now() - t;

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await ops.screenshot({ path: path.join(ARTIFACTS, 'console.png'), fullPage: true });
  assert.deepEqual(problems, [], 'no script error and no CSP violation on the console');

  const timings = { refusedIn, acceptedIn, audienceIn, testReachedIn, replayIn, pagesIn };
  console.log('console: shown after (ms)', JSON.stringify(timings));
  for (const [step, ms] of Object.entries(timings)) assert.ok(ms <= SECOND, `${step}: ${ms} ms (the console asks again 250 ms after each answer)`);
  await ops.close();
  await livePage.close();
});

test('without the operator token every console route is 401 and no page or asset carries data', async () => {
  const routes = [
    ['GET', '/_console'], ['GET', '/_console/'], ['GET', '/_console/api/deliveries'], ['GET', '/_console/api/deliveries?limit=5'],
    ['GET', '/_console/api/deliveries/1700000000000-0000000000000000'], ['GET', '/_console/api/channels/github'],
    ['GET', '/_console/api/pages'], ['POST', '/_console/api/events'], ['POST', '/_console/api/replay'],
  ];
  const forged = ['', 'Bearer ', 'Bearer wrong-token-0123456789', `Bearer ${token}x`, `Basic ${Buffer.from(`x:${token}`).toString('base64')}`];
  for (const [method, route] of routes) {
    for (const auth of forged) {
      const headers = { 'content-type': 'application/json' };
      if (auth) headers.authorization = auth;
      const res = await fetch(server.base + route, { method, headers, body: method === 'POST' ? JSON.stringify({ channel: 'github', id: 'x' }) : undefined });
      const text = await res.text();
      assert.equal(res.status, 401, `${method} ${route} with ${JSON.stringify(auth)}: ${text.slice(0, 200)}`);
      assert.ok(!text.includes('release.published') && !text.includes('"seq"'), `${route} carries no data`);
    }
  }
  // The page's script and style are files with no data in them: the same bytes before and after deliveries.
  for (const asset of ['/_console/console.js', '/_console/console.css']) {
    const res = await fetch(server.base + asset);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(!text.includes(token) && !text.includes('release.published') && !text.includes('build-7f3a'), asset);
  }
  const ok = await fetch(`${server.base}/_console/api/deliveries`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(ok.status, 200, 'and with it, 200');
});
