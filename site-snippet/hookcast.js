/*! hookcast.js — live updates for static pages. No dependencies, no build step.
 *
 *   <script src="https://hooks.example.com/hookcast.js" defer></script>
 *   <span data-hookcast-channel="deploys" data-hookcast-text="state">unknown</span>
 *
 * Options (attributes on the script tag):
 *   data-url       WebSocket URL; default: /ws on the script's own host
 *   data-storage   "session" (default) keeps the last seq per channel in
 *                  sessionStorage so a reload resumes; "none" turns it off
 *
 * Page bindings:
 *   data-hookcast-channel="c"   subscribes; bindings inside it follow channel c
 *   data-hookcast-event="deploy.*"  only events matching this name (prefix*)
 *   data-hookcast-text="a.b"    textContent = event data at path a.b
 *                               (@event, @seq, @at, @channel: the envelope)
 *   <template data-hookcast-append="c" data-hookcast-max="20"> renders each
 *                               event on c into a copy, newest first
 *   data-hookcast-status        shows connecting / live / reconnecting
 * Events on document: hookcast:event {channel, seq, event, data, at},
 * hookcast:open, hookcast:close, hookcast:reconnecting, hookcast:reset.
 * Event data only ever reaches textContent: never innerHTML, never eval.
 */
(function () {
  'use strict';

  /**
   * @typedef {{type: 'event', channel: string, seq: number, event: string, data: any, at: string}} HookcastEvent
   * @typedef {{last: number|null, pending: boolean, buffer: Map<number, HookcastEvent>}} ChannelState
   * @typedef {{
   *   url: string,
   *   WebSocket?: any,
   *   now?: () => number,
   *   random?: () => number,
   *   setTimeout?: (fn: () => void, ms: number) => any,
   *   clearTimeout?: (id: any) => void,
   *   storage?: {getItem(k: string): string|null, setItem(k: string, v: string): void}|null,
   *   baseDelay?: number, maxDelay?: number, minUptime?: number, pingInterval?: number,
   *   onEvent?: (ev: HookcastEvent) => void,
   *   onStatus?: (status: string, detail?: any) => void,
   *   onReset?: (channel: string, head: number) => void,
   * }} ClientOptions
   */

  // Close codes after which retrying cannot help.
  var NO_RETRY = { 1002: 1, 1003: 1, 1008: 1, 4400: 1, 4401: 1, 4403: 1 };
  var STORE_PREFIX = 'hookcast:last:';

  /**
   * Capped exponential backoff with full jitter: a random delay in
   * [0, min(max, base * 2^attempt)). The one backoff used everywhere.
   * @param {number} attempt @param {number} base @param {number} max @param {() => number} random
   */
  function backoff(attempt, base, max, random) {
    var cap = Math.min(max, base * Math.pow(2, attempt));
    return Math.floor(random() * cap);
  }

  /** The connection, resume and ordering logic, free of the DOM. @param {ClientOptions} o */
  function createClient(o) {
    var WS = o.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);
    var now = o.now || Date.now;
    var random = o.random || Math.random;
    var setT = o.setTimeout || function (f, ms) { return setTimeout(f, ms); };
    var clearT = o.clearTimeout || function (id) { clearTimeout(id); };
    var storage = o.storage === undefined ? null : o.storage;
    var base = o.baseDelay || 500, max = o.maxDelay || 30000;
    var minUptime = o.minUptime || 5000;
    // API Gateway drops sockets idle for 10 minutes and has no protocol ping.
    var pingEvery = o.pingInterval || 4 * 60 * 1000;

    /** @type {Map<string, ChannelState>} */
    var channels = new Map();
    var ws = null, attempt = 0, openedAt = 0, retryTimer = null, pingTimer = null, stopped = false;
    var status = 'idle';

    function setStatus(s, detail) {
      status = s;
      if (o.onStatus) o.onStatus(s, detail);
    }

    function remembered(name) {
      if (!storage) return null;
      try {
        var v = storage.getItem(STORE_PREFIX + name);
        return v != null && /^\d+$/.test(v) ? Number(v) : null;
      } catch (_) { return null; }
    }

    function remember(name, seq) {
      if (!storage) return;
      try { storage.setItem(STORE_PREFIX + name, String(seq)); } catch (_) { /* quota or privacy mode */ }
    }

    function send(obj) {
      if (ws && ws.readyState === 1) { ws.send(JSON.stringify(obj)); return true; }
      return false;
    }

    function subscribe(name) {
      var ch = channels.get(name);
      if (!ch) return;
      ch.pending = true;
      var msg = { action: 'subscribe', channel: name };
      if (ch.last != null) msg.since = ch.last;
      send(msg);
    }

    function deliver(ch, ev) {
      ch.last = ev.seq;
      remember(ev.channel, ev.seq);
      // A throwing page handler must not stall the channel: report it later.
      if (o.onEvent) {
        try { o.onEvent(ev); } catch (err) { setT(function () { throw err; }, 0); }
      }
    }

    /** Applies buffered events that are now next in line; resyncs if a gap remains. */
    function drain(name, ch) {
      var next;
      while (ch.last != null && (next = ch.buffer.get(ch.last + 1))) {
        ch.buffer.delete(next.seq);
        deliver(ch, next);
      }
      ch.buffer.forEach(function (_, seq) { if (ch.last != null && seq <= ch.last) ch.buffer.delete(seq); });
      if (ch.buffer.size && !ch.pending) subscribe(name);
    }

    function onEvent(ev) {
      var ch = channels.get(ev.channel);
      if (!ch || typeof ev.seq !== 'number') return;
      if (ch.last != null && ev.seq <= ch.last) return; // seen: drop the duplicate
      if (ch.last == null || ev.seq === ch.last + 1) {
        deliver(ch, ev);
        drain(ev.channel, ch);
        return;
      }
      // A gap: hold this event and ask for what is missing.
      ch.buffer.set(ev.seq, ev);
      if (!ch.pending) subscribe(ev.channel);
    }

    function onSubscribed(msg) {
      var ch = channels.get(msg.channel);
      if (!ch) return;
      ch.pending = false;
      if (msg.reset) {
        // Events were missed beyond recovery: start from the head; the page refetches.
        ch.last = msg.seq;
        ch.buffer.clear();
        remember(msg.channel, msg.seq);
        if (o.onReset) o.onReset(msg.channel, msg.seq);
      } else if (ch.last == null) {
        ch.last = msg.seq;
        remember(msg.channel, msg.seq);
      }
      drain(msg.channel, ch);
    }

    function onMessage(e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (_) { return; }
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'event') onEvent(msg);
      else if (msg.type === 'subscribed') onSubscribed(msg);
    }

    function schedulePing() {
      clearT(pingTimer);
      pingTimer = setT(function () { send({ action: 'ping' }); schedulePing(); }, pingEvery);
    }

    function connect() {
      if (stopped) return;
      retryTimer = null;
      setStatus(attempt === 0 ? 'connecting' : 'reconnecting');
      var sock;
      try { sock = new WS(o.url); } catch (err) { return retry(null); }
      ws = sock;
      sock.onopen = function () {
        if (sock !== ws) return;
        openedAt = now();
        setStatus('live');
        channels.forEach(function (_, name) { subscribe(name); });
        schedulePing();
      };
      sock.onmessage = function (e) { if (sock === ws) onMessage(e); };
      sock.onclose = function (e) {
        if (sock !== ws) return;
        ws = null;
        clearT(pingTimer);
        channels.forEach(function (ch) { ch.pending = false; });
        retry(e);
      };
      sock.onerror = function () { /* onclose follows */ };
    }

    function retry(e) {
      if (stopped) return;
      if (e && NO_RETRY[e.code]) { setStatus('closed', { code: e.code, reason: e.reason }); return; }
      // Reset the backoff only after the connection stayed up a while, so a
      // server that accepts and drops at once is not hammered.
      if (openedAt && now() - openedAt >= minUptime) attempt = 0;
      openedAt = 0;
      var delay = backoff(attempt, base, max, random);
      attempt++;
      setStatus('reconnecting', { delay: delay, attempt: attempt });
      retryTimer = setT(connect, delay);
    }

    return {
      /** @param {string} name */
      add: function (name) {
        if (channels.has(name)) return;
        channels.set(name, { last: remembered(name), pending: false, buffer: new Map() });
        subscribe(name);
      },
      start: function () { stopped = false; if (!ws && !retryTimer) connect(); },
      stop: function () {
        stopped = true;
        clearT(retryTimer); clearT(pingTimer); retryTimer = null;
        if (ws) { var s = ws; ws = null; s.close(1000, 'page closed'); }
        setStatus('closed');
      },
      /** Test and debugging view of the resume state. */
      lastSeq: function (name) { var ch = channels.get(name); return ch ? ch.last : null; },
      status: function () { return status; },
    };
  }

  // ---- DOM bindings -------------------------------------------------------

  /** Reads a dotted path from the event; @names read the envelope. */
  function pick(ev, path) {
    if (path.charAt(0) === '@') return ev[path.slice(1)];
    var v = ev.data;
    var parts = path.split('.');
    for (var i = 0; i < parts.length; i++) {
      if (v == null || typeof v !== 'object') return undefined;
      v = v[parts[i]];
    }
    return v;
  }

  function matches(filter, name) {
    if (!filter) return true;
    return filter.split(/\s+/).some(function (f) {
      return f.slice(-1) === '*' ? name.indexOf(f.slice(0, -1)) === 0 : f === name;
    });
  }

  function fill(scope, ev) {
    var nodes = [scope].concat(Array.prototype.slice.call(scope.querySelectorAll('[data-hookcast-text]')));
    nodes.forEach(function (el) {
      var path = el.getAttribute && el.getAttribute('data-hookcast-text');
      if (!path) return;
      var v = pick(ev, path);
      if (v === undefined) return;
      var text = v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
      if (el.textContent !== text) el.textContent = text;
    });
  }

  function applyToDom(doc, ev) {
    var bound = doc.querySelectorAll('[data-hookcast-channel]');
    for (var i = 0; i < bound.length; i++) {
      var el = bound[i];
      if (el.getAttribute('data-hookcast-channel') !== ev.channel) continue;
      if (!matches(el.getAttribute('data-hookcast-event'), ev.event)) continue;
      fill(el, ev);
    }
    var templates = doc.querySelectorAll('template[data-hookcast-append]');
    for (var j = 0; j < templates.length; j++) {
      var t = templates[j];
      if (t.getAttribute('data-hookcast-append') !== ev.channel) continue;
      if (!matches(t.getAttribute('data-hookcast-event'), ev.event)) continue;
      var frag = t.content.cloneNode(true);
      var items = Array.prototype.slice.call(frag.children);
      items.forEach(function (item) { item.setAttribute('data-hookcast-item', ''); fill(item, ev); });
      var parent = t.parentNode;
      // Newest first: right after the template.
      parent.insertBefore(frag, t.nextSibling);
      var maxItems = Number(t.getAttribute('data-hookcast-max')) || 50;
      var all = parent.querySelectorAll(':scope > [data-hookcast-item]');
      for (var k = maxItems; k < all.length; k++) parent.removeChild(all[k]);
    }
  }

  function emit(doc, name, detail) {
    doc.dispatchEvent(new CustomEvent('hookcast:' + name, { detail: detail }));
  }

  function showStatus(doc, s) {
    var text = s === 'idle' ? 'connecting' : s;
    var els = doc.querySelectorAll('[data-hookcast-status]');
    for (var i = 0; i < els.length; i++) {
      els[i].setAttribute('data-state', text);
      els[i].textContent = text;
    }
  }

  function socketUrl(script, loc) {
    var explicit = script && script.getAttribute('data-url');
    if (explicit) return explicit;
    var u = new URL(script && script.src ? script.src : loc.href, loc.href);
    return (u.protocol === 'https:' ? 'wss://' : 'ws://') + u.host + '/ws';
  }

  /** Wires a client to the page. */
  function startPage(doc, win, script) {
    var listeners = [];
    var storageOpt = script && script.getAttribute('data-storage');
    var storage = null;
    if (storageOpt !== 'none') { try { storage = win.sessionStorage; } catch (_) { storage = null; } }
    var client = createClient({
      url: socketUrl(script, win.location),
      storage: storage,
      onEvent: function (ev) {
        applyToDom(doc, ev);
        var detail = { channel: ev.channel, seq: ev.seq, event: ev.event, data: ev.data, at: ev.at };
        listeners.forEach(function (l) {
          if (l.channel === ev.channel && matches(l.event, ev.event)) {
            try { l.fn(detail); } catch (err) { setTimeout(function () { throw err; }); }
          }
        });
        emit(doc, 'event', detail);
      },
      onStatus: function (s, detail) {
        showStatus(doc, s);
        if (s === 'live') emit(doc, 'open', {});
        else if (s === 'reconnecting') emit(doc, 'reconnecting', detail || {});
        else if (s === 'closed') emit(doc, 'close', detail || {});
      },
      onReset: function (channel, head) { emit(doc, 'reset', { channel: channel, seq: head }); },
    });
    function scan() {
      var els = doc.querySelectorAll('[data-hookcast-channel], template[data-hookcast-append]');
      for (var i = 0; i < els.length; i++) {
        client.add(els[i].getAttribute('data-hookcast-channel') || els[i].getAttribute('data-hookcast-append'));
      }
    }
    scan();
    client.start();
    // Leave cleanly so the page can enter the back/forward cache; resume on return.
    win.addEventListener('pagehide', function () { client.stop(); });
    win.addEventListener('pageshow', function (e) { if (e.persisted) client.start(); });
    return {
      client: client,
      /** Hookcast.on(channel, [event filter], fn) */
      on: function (channel, event, fn) {
        if (typeof event === 'function') { fn = event; event = null; }
        listeners.push({ channel: channel, event: event, fn: fn });
        client.add(channel);
      },
      rescan: scan,
    };
  }

  var api = { createClient: createClient, backoff: backoff, pick: pick, matches: matches };
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
  } else if (typeof window !== 'undefined' && typeof document !== 'undefined') {
    var script = /** @type {HTMLScriptElement|null} */ (document.currentScript);
    var boot = function () {
      var page = startPage(document, window, script);
      window.Hookcast = Object.assign(api, page);
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
    else boot();
  }
})();
