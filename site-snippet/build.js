// Minifies hookcast.js into dist/hookcast.min.js, the file the server ships.
// `node site-snippet/build.js --check` fails if the committed build is stale
// or over the 4 KB gzip budget.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { minify } = require('terser');

const BUDGET = 4096;
const src = path.join(__dirname, 'hookcast.js');
const out = path.join(__dirname, 'dist', 'hookcast.min.js');

(async () => {
  const code = fs.readFileSync(src, 'utf8');
  const result = await minify(code, {
    compress: { passes: 2 },
    mangle: true,
    format: { comments: false, preamble: '/*! hookcast.js | docs: hookcast README */' },
  });
  const min = result.code + '\n';
  const gz = zlib.gzipSync(min, { level: 9 }).length;
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
