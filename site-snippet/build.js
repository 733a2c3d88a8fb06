// Minifies hookcast.js into dist/hookcast.min.js, the file the server ships.
// `node site-snippet/build.js --check` fails if the committed build is stale
// or over the 4.5 KB gzip budget.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { minify } = require('terser');

// 4 KB until channel state and build stamps (issue 21): reading stamps,
// state frames, rendering a snapshot and knowing the page's own deploy took
// it from 4,045 to about 4,410 bytes gzip. 4.5 KB leaves room for fixes.
const BUDGET = 4608;
const src = path.join(__dirname, 'hookcast.js');
const out = path.join(__dirname, 'dist', 'hookcast.min.js');

(async () => {
  const code = fs.readFileSync(src, 'utf8');
  const result = await minify(code, {
    compress: { passes: 2 },
    mangle: true,
    format: { comments: false, preamble: '/*! hookcast */' },
  });
  const min = result.code + '\n';
  // The larger of two measures: Node's zlib, and `gzip -9 dist/hookcast.min.js`
  // (GNU gzip's own deflate, its header naming the file: 16 to 26 bytes more).
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'hookcast-'));
  const tmp = path.join(dir, 'hookcast.min.js');
  fs.writeFileSync(tmp, min);
  const gnu = require('node:child_process').execFileSync('gzip', ['-9', '-c', tmp]).length;
  fs.rmSync(dir, { recursive: true });
  const gz = Math.max(zlib.gzipSync(min, { level: 9 }).length, gnu);
  console.log(`hookcast.min.js: ${min.length} bytes, ${gz} bytes gzip (budget ${BUDGET})`);
  if (process.argv.includes('--check')) {
    const committed = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
    if (committed !== min) {
      console.error('dist/hookcast.min.js is stale: run `node site-snippet/build.js` and commit it');
      process.exit(1);
    }
  } else {
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, min);
  }
  if (gz > BUDGET) {
    console.error(`over budget by ${gz - BUDGET} bytes`);
    process.exit(1);
  }
})().catch((e) => { console.error(e); process.exit(1); });
