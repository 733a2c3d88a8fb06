'use strict';
const js = require('@eslint/js');
const globals = require('globals');

module.exports = [
  // Installed and generated trees (.tools holds the test command's Python venv).
  { ignores: ['node_modules/', 'target/', 'site-snippet/dist/', 'tests/artifacts/', '.tools/', '.aws-sam/', '.hookcast/'] },
  js.configs.recommended,
  {
    files: ['site-snippet/hookcast.js', 'site-snippet/demo/demo.js'],
    languageOptions: { sourceType: 'script', ecmaVersion: 2020, globals: { ...globals.browser, module: 'writable' } },
  },
  {
    files: ['site-snippet/hookcast.mjs', 'site-snippet/demo/module.js'],
    languageOptions: { sourceType: 'module', ecmaVersion: 2022, globals: globals.browser },
  },
  {
    // Build-time tools: the stamper (an ES module) and the Netlify plugin (CommonJS), both Node.
    files: ['site-snippet/stamp/stamp.mjs'],
    languageOptions: { sourceType: 'module', ecmaVersion: 2022, globals: globals.node },
  },
  {
    files: ['site-snippet/test/**/*.js', 'site-snippet/netlify-plugin/**/*.js', 'site-snippet/build.js', 'tests/**/*.js', 'bench/**/*.js', 'eslint.config.js'],
    languageOptions: { sourceType: 'commonjs', ecmaVersion: 2022, globals: { ...globals.node, ...globals.browser } },
  },
  { rules: { 'no-unused-vars': ['error', { args: 'after-used', caughtErrors: 'none' }] } },
];
