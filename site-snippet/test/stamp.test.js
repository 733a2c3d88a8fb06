// The stamper's own rules, without a hookcast server: where the stamp goes,
// that running it twice changes nothing, and that a refusal or a bad name
// fails the build and writes nothing. (Against the real server, through the
// CLI and the Netlify plugin: tests/browser/state.test.js.)
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const load = () => import('../stamp/stamp.mjs');
const heads = new Map([['deploys', 4], ['forms/c', 2]]);

test('the stamp goes at the top of <head>, replaces an earlier one, and only pages that bind channels get one', async () => {
  const { stampHtml, channelsOf } = await load();
  const page = '<!DOCTYPE html>\n<html lang="en"><HEAD data-x="1">\n<title>t</title></HEAD><body>' +
    '<div data-hookcast-channel="deploys"></div><template data-hookcast-append=\'forms/c\'></template><i data-hookcast-banner=deploys></i></body></html>';
  assert.deepEqual(channelsOf(page), ['deploys', 'forms/c']);
  const once = stampHtml(page, { heads, epoch: 'E1', deployId: 'd"2' });
  assert.match(once, /<HEAD data-x="1">\n<meta name="hookcast-since" content="deploys=4 forms\/c=2">\n<meta name="hookcast-epoch" content="E1">\n<meta name="hookcast-deploy" content="d&quot;2">\n<title>/);
  assert.equal(stampHtml(once, { heads, epoch: 'E1', deployId: 'd"2' }), once, 'idempotent');
  const moved = stampHtml(once, { heads: new Map([['deploys', 9], ['forms/c', 3]]), epoch: 'E1' });
  assert.equal((moved.match(/hookcast-since/g) || []).length, 1, 'a later build replaces the stamp');
  assert.match(moved, /deploys=9 forms\/c=3/);
  assert.doesNotMatch(moved, /hookcast-deploy/);
  // No <head>: after the doctype. No bindings: no stamp (an old one is removed).
  assert.match(stampHtml('<!doctype html><p data-hookcast-channel="deploys">', { heads, epoch: 'E' }), /^<!doctype html><meta name="hookcast-since"/);
  assert.equal(stampHtml('<head><meta name="hookcast-since" content="x=1">\n</head>', { heads, epoch: 'E' }), '<head></head>');
});

test('a refused head or a name that is no channel fails with a message and writes nothing', async () => {
  const { stamp, StampError } = await load();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stamp-'));
  const file = path.join(dir, 'index.html');
  fs.writeFileSync(file, '<head></head><div data-hookcast-channel="orders/1"></div><div data-hookcast-channel="deploys"></div>');
  const asked = [];
  const refusing = async (url, init) => {
    asked.push([String(url), init.headers.authorization]);
    if (String(url).includes('orders')) return new Response(JSON.stringify({ error: 'forbidden', message: 'orders/1 is private: a subscribe token is required' }), { status: 403 });
    return new Response(JSON.stringify({ channel: 'deploys', seq: 3, epoch: 'E' }));
  };
  await assert.rejects(stamp({ url: 'https://hooks.example.com/', dir, fetch: refusing }), (e) => {
    assert.ok(e instanceof StampError);
    assert.match(e.message, /https:\/\/hooks\.example\.com\/channels\/orders\/1\/head answered 403: orders\/1 is private/);
    return true;
  });
  assert.equal(asked.filter(([u]) => u.includes('orders')).length, 1, 'a 403 is not retried');
  assert.doesNotMatch(fs.readFileSync(file, 'utf8'), /hookcast-since/, 'nothing written');
  // With a token it is sent as a bearer token, and the stamp lands.
  const ok = async (url, init) => new Response(JSON.stringify({ channel: 'x', seq: init.headers.authorization === 'Bearer tok' ? 7 : 0, epoch: 'E' }));
  const r = await stamp({ url: 'wss://hooks.example.com/ws', dir, token: 'tok', fetch: ok });
  assert.deepEqual(r.channels, { 'orders/1': 7, deploys: 7 });
  fs.writeFileSync(file, '<div data-hookcast-channel="bad name"></div>');
  await assert.rejects(stamp({ url: 'https://h.example', dir, fetch: ok }), /index\.html binds "bad name", which is not a channel name/);
});
