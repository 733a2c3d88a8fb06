#!/usr/bin/env node
// Stamps a built static site with where each channel stood at build time, so
// a visitor who arrives later gets exactly the events after the build (or the
// channel's state, once history has moved past it). No dependencies.
//
//   npx hookcast-stamp --url https://hooks.example.com --dir public
//   (in this repository: node site-snippet/stamp/stamp.mjs …)
//        [--token <subscribe token, for private channels>] [--deploy-id <id>]
//
// It finds every channel the HTML files under --dir bind (data-hookcast-channel,
// -append, -refresh, -banner, -occupancy), reads each channel's head from the
// server once (GET /channels/{channel}/head), and writes into each HTML file
//   <meta name="hookcast-since" content="deploys=42 forms/contact=3">
//   <meta name="hookcast-epoch" content="…">
//   <meta name="hookcast-deploy" content="…">   (from --deploy-id or Netlify's DEPLOY_ID)
// replacing any earlier stamp (running it twice changes nothing). Every head is
// read before any file is written: a server that cannot be reached fails the
// build with a message naming the URL, and no page gets a wrong stamp.
import fs from 'node:fs/promises';
import path from 'node:path';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const BINDINGS = /\sdata-hookcast-(?:channel|append|refresh|banner|occupancy)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))/gi;
const STAMP = /[ \t]*<meta\s+name=["']?hookcast-(?:since|epoch|deploy)["']?[^>]*>[ \t]*\r?\n?/gi;
// The server's rule for channel names (functions/core/src/channel.rs).
const CHANNEL = /^[A-Za-z0-9_\-.:/]{1,128}$/;
const TRIES = 3;
const TIMEOUT_MS = 10000;

export class StampError extends Error {}

/** Every .html/.htm file under dir, recursively (symlinks are not followed). */
async function htmlFiles(dir) {
  const out = [];
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new StampError(`cannot read the build directory ${dir}: ${e.message}`);
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await htmlFiles(p)));
    else if (e.isFile() && /\.html?$/i.test(e.name)) out.push(p);
  }
  return out.sort();
}

const decode = (s) => s.replace(/&amp;/g, '&').replace(/&#47;|&#x2f;/gi, '/');

/** The channels a page binds, in first-seen order. */
export function channelsOf(html) {
  const found = new Set();
  for (const m of html.matchAll(BINDINGS)) {
    const name = decode((m[1] ?? m[2] ?? m[3] ?? '').trim());
    if (name) found.add(name);
  }
  return [...found];
}

function validChannel(name) {
  return CHANNEL.test(name) && !name.startsWith('/') && !name.endsWith('/') && !name.includes('//') && !name.includes('..');
}

const escapeAttr = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/** The page with its stamp (and no other): idempotent. */
export function stampHtml(html, { heads, epoch, deployId }) {
  const channels = channelsOf(html);
  const clean = html.replace(STAMP, '');
  if (!channels.length) return clean;
  const since = channels.map((c) => `${c}=${heads.get(c)}`).join(' ');
  const metas = [`<meta name="hookcast-since" content="${escapeAttr(since)}">`, `<meta name="hookcast-epoch" content="${escapeAttr(epoch)}">`];
  if (deployId) metas.push(`<meta name="hookcast-deploy" content="${escapeAttr(deployId)}">`);
  const block = metas.join('\n') + '\n';
  // Inside <head> when there is one: right after it opens, so the stamp is
  // read before any script that might start the snippet.
  const head = /<head(?:\s[^>]*)?>[ \t]*\r?\n?/i.exec(clean);
  if (head) return clean.slice(0, head.index + head[0].length) + block + clean.slice(head.index + head[0].length);
  const doctype = /^(?:\uFEFF)?\s*<!doctype[^>]*>[ \t]*\r?\n?/i.exec(clean);
  const at = doctype ? doctype[0].length : 0;
  return clean.slice(0, at) + block + clean.slice(at);
}

function headUrl(base, channel) {
  const u = new URL(base);
  // A wss:// URL (the socket's) points at the same host's HTTP side locally.
  if (u.protocol === 'wss:') u.protocol = 'https:';
  if (u.protocol === 'ws:') u.protocol = 'http:';
  if (u.pathname.endsWith('/ws')) u.pathname = u.pathname.slice(0, -3);
  u.pathname = u.pathname.replace(/\/+$/, '') + '/channels/' + channel.split('/').map(encodeURIComponent).join('/') + '/head';
  u.search = '';
  return u;
}

/** One channel's head, tried a few times: a build should not fail on one blip. */
async function readHead(base, channel, token, fetchImpl) {
  const url = headUrl(base, channel);
  let last;
  for (let attempt = 0; attempt < TRIES; attempt++) {
    if (attempt) await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    let res;
    try {
      res = await fetchImpl(url, {
        headers: token ? { authorization: `Bearer ${token}`, accept: 'application/json' } : { accept: 'application/json' },
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (e) {
      last = `cannot reach ${url.origin} (${e.cause?.code || e.name}: ${e.cause?.message || e.message})`;
      continue;
    }
    let body = null;
    try { body = await res.json(); } catch { /* not JSON: said below */ }
    if (res.ok && body && Number.isSafeInteger(body.seq) && typeof body.epoch === 'string') return body;
    const why = body && body.message ? `: ${body.message}` : '';
    last = `${url.href} answered ${res.status}${why}`;
    // Only a server error or throttling is worth another try.
    if (res.ok || (res.status < 500 && res.status !== 429)) break;
  }
  throw new StampError(`hookcast stamp: ${last}; no page was stamped`);
}

/**
 * Stamps every HTML file under `dir`. Returns {files, stamped, channels, epoch}.
 * Throws StampError (with a message for the build log) and writes nothing
 * when any head cannot be read.
 */
export async function stamp({ url, dir, token, deployId, fetch: fetchImpl = globalThis.fetch, log = () => {} }) {
  if (!url) throw new StampError('hookcast stamp: --url is required (your hookcast base URL, e.g. https://hooks.example.com)');
  if (!dir) throw new StampError('hookcast stamp: --dir is required (the build output folder)');
  try {
    const u = new URL(url);
    if (!/^(https?|wss?):$/.test(u.protocol)) throw new Error(u.protocol);
  } catch {
    throw new StampError(`hookcast stamp: --url ${JSON.stringify(url)} is not an http(s) URL`);
  }
  const files = await htmlFiles(dir);
  const pages = await Promise.all(files.map(async (f) => ({ file: f, html: await fs.readFile(f, 'utf8') })));
  const channels = new Set();
  for (const p of pages) {
    for (const c of channelsOf(p.html)) {
      if (!validChannel(c)) throw new StampError(`hookcast stamp: ${path.relative(dir, p.file)} binds ${JSON.stringify(c)}, which is not a channel name (letters, digits, _ - . : /)`);
      channels.add(c);
    }
  }
  const heads = new Map();
  let epoch = null;
  const list = [...channels];
  // A few at a time: one request per channel, not one per page.
  for (let i = 0; i < list.length; i += 8) {
    const got = await Promise.all(list.slice(i, i + 8).map((c) => readHead(url, c, token, fetchImpl)));
    got.forEach((h, k) => {
      if (epoch !== null && h.epoch !== epoch) throw new StampError(`hookcast stamp: ${url} answered two epochs (${epoch}, ${h.epoch}); the store was replaced during the build: build again`);
      epoch = h.epoch;
      heads.set(list[i + k], h.seq);
    });
  }
  let stamped = 0;
  for (const p of pages) {
    const next = stampHtml(p.html, { heads, epoch, deployId });
    if (next !== p.html) {
      await fs.writeFile(p.file, next);
    }
    if (channelsOf(p.html).length) stamped++;
  }
  log(`hookcast: stamped ${stamped} of ${files.length} HTML files with ${heads.size} channels (${[...heads].map(([c, s]) => `${c}=${s}`).join(' ') || 'none'})`);
  return { files: files.length, stamped, channels: Object.fromEntries(heads), epoch };
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(url|dir|token|deploy-id)(?:=(.*))?$/.exec(a);
    if (!m) {
      if (a === '--help' || a === '-h') return { help: true };
      throw new StampError(`hookcast stamp: unknown argument ${JSON.stringify(a)}; use --url, --dir, --token, --deploy-id`);
    }
    const v = m[2] ?? argv[++i];
    if (v === undefined) throw new StampError(`hookcast stamp: --${m[1]} needs a value`);
    out[m[1] === 'deploy-id' ? 'deployId' : m[1]] = v;
  }
  return out;
}

async function main() {
  try {
    const args = parseArgs(process.argv.slice(2));
    if (args.help) {
      console.log('usage: hookcast-stamp --url <hookcast base URL> --dir <build output> [--token <token>] [--deploy-id <id>]');
      return;
    }
    await stamp({
      ...args,
      token: args.token ?? process.env.HOOKCAST_TOKEN,
      deployId: args.deployId ?? process.env.DEPLOY_ID,
      log: (m) => console.log(m),
    });
  } catch (e) {
    console.error(e instanceof StampError ? e.message : `hookcast stamp failed: ${e.stack || e}`);
    process.exitCode = 1;
  }
}

/** Run as a command: by path, or through npm's bin link (a symlink to this file). */
function isMain() {
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1] || '')).href;
  } catch {
    return false;
  }
}

if (isMain()) main();
