// The three npm packages a site installs, as a user gets them: `npm pack`
// of each workspace (@hookcast/snippet, @hookcast/stamp,
// netlify-plugin-hookcast), installed from the tarballs alone (--offline:
// nothing comes from this repository or a registry) into a sample site.
// The site is type-checked as a bundler project, built, stamped through
// the plugin named in its netlify.toml (called as Netlify calls
// onPostBuild) and through `npx hookcast-stamp`, served from its own
// origin, and made live by a signed Netlify delivery to `hookcast serve`.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { launch, startConfigured, startStaticHost, signNetlify } = require('./harness.js');

const ROOT = path.resolve(__dirname, '..', '..');
const NETLIFY = 'packages-netlify-secret-0123456789';
const WORKSPACES = ['site-snippet', 'site-snippet/stamp', 'site-snippet/netlify-plugin'];
let dir, hookcast, site, browser;

const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } });

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-packages-'));
  const config = path.join(dir, 'hookcast.toml');
  fs.writeFileSync(config, [
    'allowed_origins = ["http://127.0.0.1:*"]',
    '[server]', `data_dir = "${path.join(dir, 'data')}"`,
    '[sources.netlify]', 'kind = "netlify"', `secret = "${NETLIFY}"`, '',
  ].join('\n'));
  [hookcast, browser] = await Promise.all([startConfigured(config), launch()]);
});

test.after(async () => {
  if (site) site.close();
  if (hookcast) hookcast.child.kill('SIGKILL');
  if (browser) await browser.close();
});

test('a sample site installs the three packed packages, builds, stamps through the Netlify plugin and goes live', async () => {
  // Pack: each package holds its own files and nothing else of the repository.
  const packs = path.join(dir, 'packs');
  fs.mkdirSync(packs);
  const packed = JSON.parse(npm(['pack', '--json', '--pack-destination', packs, ...WORKSPACES.flatMap((w) => ['-w', w])], ROOT));
  const files = Object.fromEntries(packed.map((p) => [p.name, p.files.map((f) => f.path).sort()]));
  assert.deepEqual(files, {
    '@hookcast/snippet': ['dist/hookcast.min.js', 'hookcast.d.ts', 'hookcast.js', 'hookcast.mjs', 'package.json'],
    '@hookcast/stamp': ['package.json', 'stamp.mjs'],
    'netlify-plugin-hookcast': ['index.js', 'manifest.yml', 'package.json'],
  });

  // The site: installed from the tarballs only.
  const siteDir = path.join(dir, 'site');
  fs.mkdirSync(path.join(siteDir, 'src'), { recursive: true });
  fs.writeFileSync(path.join(siteDir, 'package.json'), JSON.stringify({ name: 'sample-site', private: true, type: 'module' }));
  fs.writeFileSync(path.join(siteDir, 'netlify.toml'), [
    '[build]', '  publish = "public"', '',
    '[[plugins]]', '  package = "netlify-plugin-hookcast"', '  [plugins.inputs]', `  url = "${hookcast.base}"`, '',
  ].join('\n'));
  npm(['install', '--offline', '--save-dev', ...packed.map((p) => path.join(packs, p.filename))], siteDir);

  // A bundler project type-checks against the snippet's own types.
  fs.writeFileSync(path.join(siteDir, 'src', 'live.ts'), [
    "import Hookcast, { start, on, type HookcastEvent, type Page } from '@hookcast/snippet';",
    "on('deploys', (e: HookcastEvent<{ id: string }>) => console.log(e.seq, e.data.id));",
    "const page: Page = start({ url: 'wss://hooks.example.com/ws' });",
    'void page; void Hookcast.mergePatch({ a: 1 }, { b: 2 });', '',
  ].join('\n'));
  const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
  execFileSync(tsc, ['--noEmit', '--strict', '--module', 'esnext', '--moduleResolution', 'bundler', '--target', 'es2020', '--lib', 'es2022,dom', 'src/live.ts'], { cwd: siteDir });
  // A wrong option is a type error: the types are really read.
  fs.writeFileSync(path.join(siteDir, 'src', 'wrong.ts'), "import { start } from '@hookcast/snippet';\nstart({ url: 42 });\n");
  assert.throws(() => execFileSync(tsc, ['--noEmit', '--strict', '--module', 'esnext', '--moduleResolution', 'bundler', 'src/wrong.ts'], { cwd: siteDir, stdio: 'pipe' }));

  // The build: pages, the script build copied from the package, the ES module build beside them.
  const publish = path.join(siteDir, 'public');
  const pkg = path.join(siteDir, 'node_modules', '@hookcast', 'snippet');
  fs.mkdirSync(path.join(publish, 'vendor'), { recursive: true });
  fs.copyFileSync(path.join(pkg, 'dist', 'hookcast.min.js'), path.join(publish, 'hookcast.min.js'));
  for (const f of ['hookcast.mjs', 'hookcast.js']) fs.copyFileSync(path.join(pkg, f), path.join(publish, 'vendor', f));
  const ws = hookcast.base.replace('http://', 'ws://') + '/ws';
  const body = '<p data-hookcast-channel="deploys">deploy <b id="deploy" data-hookcast-text="id">d0</b> <i id="status" data-hookcast-status></i></p>';
  fs.writeFileSync(path.join(publish, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><title>site</title></head><body>${body}
<script src="/hookcast.min.js" data-url="${ws}" data-spread="0"></script></body></html>\n`);
  fs.writeFileSync(path.join(publish, 'module.html'), `<!doctype html><html><head><meta charset="utf-8"><title>site</title>
<script type="module">import { start, on } from '/vendor/hookcast.mjs'; on('deploys', (e) => { window.__got = (window.__got || []).concat(e.seq); }); start({ url: ${JSON.stringify(ws)} });</script>
</head><body>${body}</body></html>\n`);

  // The deploy before the build went live: the stamp records it.
  const deploy = async (id) => {
    const payload = JSON.stringify({ id, state: 'ready', context: 'production', branch: 'main', site_id: 's1' });
    const res = await fetch(`${hookcast.base}/hooks/netlify`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-webhook-signature': signNetlify(payload, NETLIFY) }, body: payload });
    assert.equal(res.status, 200, await res.clone().text());
    return (await res.json()).seq;
  };
  assert.equal(await deploy('d1'), 1);

  // Netlify runs the plugin its netlify.toml names, from the site's node_modules.
  const toml = fs.readFileSync(path.join(siteDir, 'netlify.toml'), 'utf8');
  const name = /package = "([^"]+)"/.exec(toml)[1];
  const pluginDir = path.dirname(require.resolve(`${name}/package.json`, { paths: [siteDir] }));
  assert.match(fs.readFileSync(path.join(pluginDir, 'manifest.yml'), 'utf8'), /^name: netlify-plugin-hookcast$/m, 'Netlify reads the manifest');
  const plugin = require(pluginDir);
  const failures = [];
  const utils = { build: { failBuild: (message) => { failures.push(message); throw new Error(message); } } };
  const saved = process.env.DEPLOY_ID;
  process.env.DEPLOY_ID = 'd2';
  try {
    await plugin.onPostBuild({ constants: { PUBLISH_DIR: publish }, inputs: { url: /url = "([^"]+)"/.exec(toml)[1] }, utils, netlifyConfig: {}, packageJson: {} });
  } finally {
    if (saved === undefined) delete process.env.DEPLOY_ID; else process.env.DEPLOY_ID = saved;
  }
  assert.deepEqual(failures, []);
  const stamped = fs.readFileSync(path.join(publish, 'index.html'), 'utf8');
  assert.match(stamped, /<meta name="hookcast-since" content="deploys=1">/);
  assert.match(stamped, /<meta name="hookcast-deploy" content="d2">/);
  // The CLI through npx, as a build script runs it: the same stamp, so nothing changes.
  const out = execFileSync('npx', ['--no-install', 'hookcast-stamp', '--url', hookcast.base, '--dir', 'public', '--deploy-id', 'd2'], { cwd: siteDir, encoding: 'utf8' });
  assert.match(out, /stamped 2 of 2 HTML files with 1 channels \(deploys=1\)/);
  assert.equal(fs.readFileSync(path.join(publish, 'index.html'), 'utf8'), stamped);

  // Live: both pages, served from the site's own origin, get the next deploy.
  site = await startStaticHost(publish);
  const origin = `http://127.0.0.1:${site.address().port}`;
  const context = await browser.newContext();
  const problems = [];
  const pages = [];
  for (const url of [`${origin}/index.html`, `${origin}/module.html`]) {
    const page = await context.newPage();
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(url);
    await page.waitForSelector('#status[data-state="live"]');
    pages.push(page);
  }
  await deploy('d3');
  for (const page of pages) await page.waitForFunction(() => document.querySelector('#deploy').textContent === 'd3');
  assert.deepEqual(await pages[1].evaluate(() => window.__got), [2], 'the module page replays nothing before its stamp-less start and gets seq 2 once');
  assert.deepEqual(problems, []);
  await context.close();
});
