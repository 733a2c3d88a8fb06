// ES module entry. The classic script does the work; this file exports it.
//   import Hookcast from 'https://hooks.example.com/hookcast.mjs';
//   Hookcast.start();   // connects to /ws on the host this module came from
import './hookcast.js';

/** @type {import('./hookcast').Hookcast} */
const Hookcast = /** @type {any} */ (globalThis).Hookcast;

const own = new URL(import.meta.url);
const defaultUrl = (own.protocol === 'https:' ? 'wss://' : 'ws://') + own.host + '/ws';

/** @param {import('./hookcast').StartOptions} [options] */
export function start(options) {
  return Hookcast.start(Object.assign({ url: defaultUrl }, options));
}
export const on = Hookcast.on;
export const createClient = Hookcast.createClient;
export const mergePatch = Hookcast.mergePatch;
export default { start, on, createClient, mergePatch };
