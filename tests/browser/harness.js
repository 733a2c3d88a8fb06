// Shared by the browser tests: start `hookcast dev` on port 0, launch Debian
// chromium headless, and clean both up.
'use strict';
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.HOOKCAST_BIN || path.join(ROOT, 'target', 'debug', 'hookcast');
const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
// Every wait is a ceiling for a stuck run, never a guess at how long the work
// takes: CI shares a 2-core machine that may be busy with other work.
const CEILING = 120000;

/** Starts `hookcast dev`; resolves once it printed its banner. */
function startServer({ dataDir, port = 0 } = {}) {
  dataDir = dataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'hookcast-browser-'));
  const child = spawn(BIN, ['dev', '--port', String(port), '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hookcast dev printed no banner within ${CEILING} ms:\n${out}\n${err}`)), CEILING);
    child.on('exit', (code) => reject(new Error(`hookcast dev exited ${code}:\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      // The banner ends with the scoreboard command; wait for all of it.
      if (!/--channel scoreboard[^\n]*\n/.test(out)) return;
      clearTimeout(timer);
      const base = /hookcast listening on (http:\/\/\S+)/.exec(out)[1];
      const sendLines = out.split('\n').map((l) => l.trim()).filter((l) => / send --url /.test(l));
      resolve({
        child, base, dataDir, banner: out,
        deployCommand: sendLines.find((l) => l.includes('--deploy')),
        formCommand: sendLines.find((l) => l.includes('--form')),
        secrets: {
          netlify: /netlify\s+JWS secret\s+(\S+)/.exec(out)[1],
          hmac: /hmac\s+X-Hub-Signature-256\s+(\S+)/.exec(out)[1],
        },
        stop(signal = 'SIGTERM') {
          if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
          return new Promise((res) => { child.once('exit', () => res()); child.kill(signal); });
        },
      });
    });
  });
}

/** Runs a command line printed by the server, exactly as a user would paste it. */
function runPrinted(line, replace = []) {
  let args = line.split(/\s+/);
  for (const [from, to] of replace) args = args.map((a) => (a === from ? to : a));
  return new Promise((resolve, reject) => {
    execFile(args[0], args.slice(1), (e, stdout, stderr) => (e ? reject(new Error(`${line}\n${stdout}${stderr}`)) : resolve(stdout)));
  });
}

/** Chromium, with every page's waits (and navigations) ceilings of CEILING ms. */
async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  const withCeilings = (t) => { t.setDefaultTimeout(CEILING); t.setDefaultNavigationTimeout(CEILING); return t; };
  const [newContext, newPage] = [browser.newContext.bind(browser), browser.newPage.bind(browser)];
  browser.newContext = async (options) => withCeilings(await newContext(options));
  browser.newPage = async (options) => withCeilings(await newPage(options));
  return browser;
}

/** A page that records console errors and CSP violations. */
async function openPage(browser, url) {
  const page = await browser.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(url);
  return { page, problems };
}

/**
 * Waits until the page is live and the server has confirmed its subscription
 * to every channel named. "live" alone only means the socket is open: a
 * webhook sent before the subscribe arrives is, by design, before "now" for a
 * page that subscribes without `since`, so tests wait for this instead.
 */
async function subscribed(page, channels, timeout = CEILING) {
  await page.waitForSelector('[data-hookcast-status][data-state="live"]', { timeout });
  await page.waitForFunction((chs) => {
    const c = window.Hookcast && window.Hookcast.client;
    return !!c && chs.every((ch) => c.lastSeq(ch) !== null);
  }, channels, { timeout });
}

// An independent signer (node's crypto, not the Rust code under test).
const crypto = require('node:crypto');
const b64url = (buf) => Buffer.from(buf).toString('base64url');

function netlifyJws(secret, body) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ iss: 'netlify', sha256: crypto.createHash('sha256').update(body).digest('hex') }));
  const sig = crypto.createHmac('sha256', secret).update(`${header}.${claims}`).digest('base64url');
  return `${header}.${claims}.${sig}`;
}

/** Posts a webhook signed the way its sender signs it. */
async function postSigned(server, kind, payload) {
  const body = JSON.stringify(payload);
  const headers = { 'content-type': 'application/json' };
  let source;
  if (kind === 'netlify') {
    source = 'netlify';
    headers['x-webhook-signature'] = netlifyJws(server.secrets.netlify, body);
  } else {
    source = 'hmac';
    headers['x-hub-signature-256'] = 'sha256=' + crypto.createHmac('sha256', server.secrets.hmac).update(body).digest('hex');
  }
  const res = await fetch(`${server.base}/hooks/${source}`, { method: 'POST', headers, body });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`${res.status} ${JSON.stringify(json)}`);
  return json;
}

function deploy(state, extra = {}) {
  const base = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'netlify', 'deploy.json'), 'utf8'));
  return { ...base, id: crypto.randomBytes(12).toString('hex'), state, ...extra };
}

/**
 * Starts `hookcast serve --config <config>` on port 0; resolves with the
 * child, its base URL and its stderr so far (`log()`).
 */
function startConfigured(config, rustLog = 'hookcast=warn') {
  const child = spawn(BIN, ['serve', '--config', config, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: rustLog } });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner within ${CEILING} ms:\n${out}\n${err}`)), CEILING);
    child.on('exit', (code) => reject(new Error(`hookcast exited ${code}:\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = /hookcast listening on (http:\/\/\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolve({ child, base: m[1], log: () => err });
    });
  });
}

/** A static host on 127.0.0.1, port 0: the files under `root`, nothing else. */
function startStaticHost(root) {
  const http = require('node:http');
  const types = { '.js': 'text/javascript', '.mjs': 'text/javascript' };
  const server = http.createServer((req, res) => {
    const file = path.join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': types[path.extname(file)] || 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(fs.readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Netlify's notification signature, by node's crypto: a JWS (HS256) over the body's SHA-256. */
function signNetlify(body, secret) {
  const crypto = require('node:crypto');
  const b64 = (x) => Buffer.from(x).toString('base64url');
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ iss: 'netlify', sha256: crypto.createHash('sha256').update(body).digest('hex') }));
  return `${head}.${claims}.${crypto.createHmac('sha256', secret).update(`${head}.${claims}`).digest('base64url')}`;
}

module.exports = { startServer, startConfigured, startStaticHost, signNetlify, runPrinted, launch, openPage, subscribed, postSigned, deploy, ARTIFACTS, BIN, CEILING };
