// Issue 39 on the AWS stack: "when nothing arrives", the operator's console
// at /_console, run by `hookcast emulate` on `sam build`'s output (the real
// webhook, socket and fan-out bootstraps, each function held to its own
// role). The operator token is the stack's OperatorSecret, generated with
// the stack and read as docs/deploy-aws.md says (the OperatorSecretArn
// output, then Secrets Manager's GetSecretValue). A page (node `ws`) opens
// its socket as the snippet does, with `?build=`, and subscribes; GitHub
// deliveries are signed with node's crypto, one with the wrong secret.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const harness = require('./harness.js');

const { ROOT, ORIGIN, until } = harness;
const GITHUB = 'emulate-console-github-secret-0123456789';
// github's secret is put in SenderSecrets; stripe's is not (a stack just deployed).
const CONFIG = `[sources.github]
kind = "github"
[sources.stripe]
kind = "stripe"
`;
const BUILD = 'b1';

let stack, token, page;

/** A Secrets Manager call to moto itself (what `aws secretsmanager` does on AWS). */
async function secretsmanager(op, body) {
  const res = await fetch(stack.aws, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.1', 'x-amz-target': `secretsmanager.${op}`,
      authorization: 'AWS4-HMAC-SHA256 Credential=emulated/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

const fixture = (name) => fs.readFileSync(path.join(ROOT, 'tests', 'fixtures', 'senders', name));

async function github(body, secret = GITHUB) {
  const res = await fetch(`${stack.http}/hooks/github`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json', 'user-agent': 'GitHub-Hookshot/console', 'x-github-event': 'release',
      'x-github-delivery': crypto.randomUUID(), 'x-github-hook-id': '39',
      'x-hub-signature-256': `sha256=${crypto.createHmac('sha256', secret).update(body).digest('hex')}`,
    },
    body,
  });
  return { status: res.status, body: await res.json() };
}

/** A console call as the operator makes it (`auth`: the Authorization header, or none). */
async function api(method, route, { body, auth = `Bearer ${token}` } = {}) {
  const headers = {};
  if (auth) headers.authorization = auth;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${stack.outputs.ConsoleUrl}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* the page is HTML */ }
  return { status: res.status, json, text, headers: res.headers };
}

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-console-'));
  const secrets = path.join(dir, 'secrets.json');
  fs.writeFileSync(secrets, JSON.stringify({ github: GITHUB }));
  stack = await harness.started({
    config: CONFIG,
    extra: ['--put-secret', `SenderSecrets=${secrets}`],
    params: [`AllowedOrigins=${ORIGIN}:*,${ORIGIN}`, 'AlertEmail=none'],
  });
});

test.after(async () => {
  if (page) page.close();
  await harness.stopAll();
});

test('the stack says where its console is and makes its operator token', async () => {
  assert.equal(stack.outputs.ConsoleUrl, `${stack.http}/_console`, JSON.stringify(stack.outputs));
  assert.match(stack.outputs.OperatorSecretArn, /^arn:aws:secretsmanager:/);
  const got = await secretsmanager('GetSecretValue', { SecretId: stack.outputs.OperatorSecretArn });
  token = got.SecretString;
  // The template's GenerateSecretString: 40 letters and digits.
  assert.match(token, /^[A-Za-z0-9]{40}$/);
  const shell = await api('GET', '');
  assert.equal(shell.status, 200);
  assert.match(shell.headers.get('content-type'), /text\/html/);
});

test('every console route answers 401 without the operator token, and with a wrong one', async () => {
  const routes = [
    ['GET', ''], ['GET', '/api/deliveries'], ['GET', '/api/deliveries/1800000000000-00000000deadbeef'],
    ['GET', '/api/channels/github'], ['GET', '/api/pages'],
    ['POST', '/api/events', { channel: 'github', event: 'probe', data: {} }], ['POST', '/api/replay', { id: '1800000000000-00000000deadbeef' }],
  ];
  for (const auth of [null, 'Bearer not-the-operator-token-0123456789', `Basic ${token}`]) {
    for (const [method, route, body] of routes) {
      const res = await api(method, route, { body, auth });
      assert.equal(res.status, 401, `${method} /_console${route} with ${auth && auth.split(' ')[0]}: ${res.text.slice(0, 200)}`);
      assert.ok(!res.text.includes('"deliveries":'), 'no data in a refusal');
    }
  }
  // The page's static files carry no data: served to anyone.
  for (const file of ['/console.js', '/console.css']) {
    assert.equal((await api('GET', file, { auth: null })).status, 200, file);
  }
  // Nothing published: no test event reached the log.
  const listed = await api('GET', '/api/deliveries');
  assert.equal(listed.status, 200, listed.text);
  assert.ok(!listed.json.deliveries.some((d) => d.event === 'probe'));
});

test('a refused delivery says why, an accepted one reaches the page and its audience; a test event and a replay reach it too', async () => {
  page = harness.page(`${stack.websocket}?build=${BUILD}`);
  await page.subscribe('github');
  const body = fixture('github/release-published.json');

  // Signed with another secret: refused, and logged with why.
  const refused = await github(body, 'not-the-github-secret-0123456789');
  assert.equal(refused.status, 401, JSON.stringify(refused.body));
  const bad = await until('the refused delivery in the log', async () => {
    const r = await api('GET', '/api/deliveries?limit=50');
    return r.json.deliveries.find((d) => d.source === 'github' && d.outcome === 'refused');
  });
  assert.equal(bad.status, 401);
  assert.equal(bad.code, 'invalid_signature');
  assert.match(bad.reason, /cannot tell a different secret from a changed body/);
  assert.equal(bad.headers['x-github-event'], 'release');
  assert.ok(!JSON.stringify(bad).includes('sha256='), 'no signature kept');

  // Signed right: accepted, on the page, and in the log with its channel and seq.
  const ok = await github(body);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  const { channel, seq } = ok.body;
  assert.equal(channel, 'github');
  await until('the delivery on the page', () => page.events('github').some((f) => f.seq === seq));
  const good = await until('the accepted delivery in the log', async () => {
    const r = await api('GET', `/api/deliveries?after=${bad.id}`);
    return r.json.deliveries.find((d) => d.outcome === 'accepted' && d.source === 'github');
  });
  assert.deepEqual([good.channel, good.seq, good.status, good.kind], ['github', seq, 200, 'github']);
  // The fan-out's count reaches the log within seconds: the page is its audience.
  const reached = await until('the audience of the delivery', async () => {
    const r = await api('GET', `/api/deliveries/${good.id}`);
    return r.json.delivery.audience && r.json.delivery.audience.delivered >= 1 && r.json;
  }, 30000);
  assert.equal(reached.delivery.audience.failed, 0);
  assert.equal(reached.event.seq, seq, 'the event itself, from the channel log');

  // A test event from the console reaches the page.
  const sent = await api('POST', '/api/events', { body: { channel: 'github', event: 'console.test', data: { hello: 'page' } } });
  assert.equal(sent.status, 200, sent.text);
  assert.equal(sent.json.delivery.seq, seq + 1);
  const tested = await until('the test event on the page', () => page.events('github').find((f) => f.seq === seq + 1));
  assert.deepEqual([tested.event, tested.data], ['console.test', { hello: 'page' }]);

  // A replay of the accepted delivery: the same event again, with a new seq.
  const replayed = await api('POST', '/api/replay', { body: { id: good.id } });
  assert.equal(replayed.status, 200, replayed.text);
  assert.equal(replayed.json.delivery.replay_of, good.id);
  const again = await until('the replay on the page', () => page.events('github').find((f) => f.seq === seq + 2));
  const first = page.events('github').find((f) => f.seq === seq);
  assert.deepEqual([again.event, again.data], [first.event, first.data]);
  const log = await api('GET', `/api/deliveries?after=${good.id}`);
  assert.deepEqual(log.json.deliveries.map((d) => [d.kind, d.seq]), [['test', seq + 1], ['replay', seq + 2]]);
});

test('in Chromium, the console on the stack shows the same: the refusal and why, the delivery with its audience, the test event and the replay, the page by build', async () => {
  const { launch, ARTIFACTS } = require('../browser/harness.js');
  const browser = await launch();
  try {
    const tab = await browser.newPage();
    const problems = [];
    tab.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) problems.push(m.text()); });
    tab.on('pageerror', (e) => problems.push(String(e)));
    const opened = await tab.goto(`${stack.outputs.ConsoleUrl}#token=${token}`);
    assert.equal(opened.status(), 401, 'a navigation carries no token: the page is 401 and its script takes the token from the fragment');
    await tab.waitForSelector('#status[data-status="live"]');
    assert.ok(!tab.url().includes('token='), 'the token leaves the address bar');
    const refused = await tab.textContent('tr[data-outcome="refused"]:has-text("invalid_signature"), tr[data-outcome="refused"]:has-text("does not match")');
    assert.match(refused, /github/);
    assert.match(refused, /cannot tell a different secret from a changed body/);
    await tab.waitForFunction(() => [...document.querySelectorAll('tr[data-outcome="accepted"]')]
      .some((tr) => tr.querySelector('td.channel').textContent === 'github' && /[1-9]\d* delivered/.test(tr.querySelector('td.audience').textContent)));
    await tab.waitForSelector('td.reason >> text=/^replay of /');
    await tab.waitForSelector('tr[data-outcome="accepted"] >> text=test');
    await tab.waitForSelector(`#pages tr[data-build="${BUILD}"]`);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await tab.screenshot({ path: path.join(ARTIFACTS, 'console-emulate.png'), fullPage: true });
    assert.deepEqual(problems, [], 'no script error and no CSP violation on the console');
  } finally {
    await browser.close();
  }
});

test('a delivery to a source whose secret the stack lacks is logged saying where it goes', async () => {
  const res = await fetch(`${stack.http}/hooks/stripe`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': 't=1,v1=00' }, body: '{"type":"ping"}',
  });
  assert.equal(res.status, 503, await res.text());
  const entry = await until('the not-ready delivery in the log', async () => {
    const r = await api('GET', '/api/deliveries?limit=50');
    return r.json.deliveries.find((d) => d.source === 'stripe');
  });
  assert.deepEqual([entry.status, entry.outcome, entry.code, entry.kind], [503, 'refused', 'source_not_ready', 'stripe']);
  assert.match(entry.reason, /put it under "stripe" in the SenderSecrets secret/);
  assert.ok(!JSON.stringify(entry).includes('v1=00'), 'no signature kept');
});

test('open pages: by build, and on the channel', async () => {
  const pages = await until('build b1 among the open pages', async () => {
    const r = await api('GET', '/api/pages');
    return r.json.builds.find((b) => b.build === BUILD) && r.json;
  });
  assert.ok(pages.builds.find((b) => b.build === BUILD).pages >= 1, JSON.stringify(pages));
  const ch = await api('GET', '/api/channels/github');
  assert.equal(ch.status, 200, ch.text);
  assert.ok(ch.json.occupancy >= 1, ch.text);
  assert.equal(ch.json.head, ch.json.events[ch.json.events.length - 1].seq);
  // The page closes: its build's count goes with its $disconnect.
  page.close();
  page = null;
  await until('build b1 gone from the open pages', async () => {
    const r = await api('GET', '/api/pages');
    return !r.json.builds.some((b) => b.build === BUILD);
  });
});
