// The demo site served by `hookcast dev`, in real headless Chromium: the
// printed send commands update the open page without a reload.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, runPrinted, launch, openPage, subscribed, ARTIFACTS } = require('./harness.js');

let browser;
const servers = [];
test.before(async () => { browser = await launch(); });
test.after(async () => {
  await Promise.all(servers.map((s) => s.stop('SIGKILL')));
  if (browser) await browser.close();
});

test('the printed send commands update the demo page live', async () => {
  const server = await startServer();
  servers.push(server);
  assert.ok(server.deployCommand && server.formCommand, server.banner);
  const { page, problems } = await openPage(browser, server.base + '/');
  await subscribed(page, ['deploys', 'forms/guestbook']);
  assert.equal(await page.textContent('#deploy-state'), 'unknown');
  // Marks the page so a reload would be detected.
  await page.evaluate(() => { window.__noReload = true; });

  const out = await runPrinted(server.deployCommand);
  assert.match(out, /^200 /);
  await page.waitForFunction(() => document.querySelector('#deploy-state').textContent === 'ready');
  assert.equal(await page.textContent('#deploy-title'), 'Sent by hookcast send');
  assert.equal(await page.textContent('#deploy-branch'), 'main');
  assert.equal(await page.textContent('#deploy-event'), 'deploy.succeeded');

  await runPrinted(server.formCommand);
  await page.waitForSelector('#entries li');
  assert.equal((await page.textContent('#entries li strong')).trim(), 'Ada');
  assert.equal((await page.textContent('#entries li span')).trim(), 'Hello');

  // Markup in event data stays text.
  await runPrinted(server.formCommand, [['name=Ada', 'name=<img src=x onerror=alert(1)>']]);
  await page.waitForFunction(() => document.querySelectorAll('#entries li').length === 2);
  assert.equal(await page.textContent('#entries li strong'), '<img src=x onerror=alert(1)>');
  assert.equal(await page.$$eval('#entries img', (imgs) => imgs.length), 0);

  assert.equal(await page.evaluate(() => window.__noReload), true, 'the page never reloaded');
  const log = await page.$$eval('#events li', (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(log, ['forms/guestbook #2 form.submitted', 'forms/guestbook #1 form.submitted', 'deploys #1 deploy.succeeded']);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo.png'), fullPage: true });
  assert.deepEqual(problems, [], 'no console errors or CSP violations under the strict policy');
  await page.close();
});

test('after the server is killed and restarted, the page resumes without losing events', async () => {
  const server = await startServer();
  servers.push(server);
  const port = new URL(server.base).port;
  const { page } = await openPage(browser, server.base + '/');
  await subscribed(page, ['deploys']);
  await runPrinted(server.deployCommand.replace('--deploy succeeded', '--deploy started'));
  await page.waitForFunction(() => document.querySelector('#deploy-state').textContent === 'building');

  await server.stop('SIGKILL');
  await page.waitForSelector('[data-hookcast-status][data-state="reconnecting"]');
  const again = await startServer({ dataDir: server.dataDir, port });
  servers.push(again);
  // Sent while the page may still be backing off: it must arrive either way.
  await runPrinted(again.deployCommand);
  await runPrinted(again.formCommand);
  await page.waitForSelector('[data-hookcast-status][data-state="live"]');
  await page.waitForFunction(() => document.querySelector('#deploy-state').textContent === 'ready');
  await page.waitForSelector('#entries li');
  const log = await page.$$eval('#events li', (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(log, ['forms/guestbook #1 form.submitted', 'deploys #2 deploy.succeeded', 'deploys #1 deploy.started'],
    'every event once, in order');
  await page.close();
});

test('the viewer count follows pages opening and closing', async () => {
  const server = await startServer();
  servers.push(server);
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const { page, problems } = await openPage(browser, server.base + '/');
    pages.push({ page, problems });
    // Each page asks right after subscribing, so it counts itself and those before it.
    await page.waitForFunction((n) => document.querySelector('#viewers').textContent === String(n), i + 1);
  }
  // The first page asks again on its 10 s interval (data-occupancy-interval="10").
  await pages[0].page.waitForFunction(() => document.querySelector('#viewers').textContent === '3');
  await pages[2].page.close();
  await pages[0].page.waitForFunction(() => document.querySelector('#viewers').textContent === '2');
  for (const p of pages) assert.deepEqual(p.problems, []);
  await Promise.all(pages.slice(0, 2).map((p) => p.page.close()));
});
