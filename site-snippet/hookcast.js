/*! hookcast.js — live updates for static pages. No dependencies, no build step.
 *
 *   <script src="https://hooks.example.com/hookcast.js" defer></script>
 *   <span data-hookcast-channel="deploys" data-hookcast-text="state">unknown</span>
 *
 * Script tag options: data-url (WebSocket URL; default /ws on the script's
 * host), data-storage="none" (don't keep the last seq per channel in
 * sessionStorage), data-spread (poke/pull refetch window in ms, default 5000),
 * data-occupancy-interval (seconds between occupancy asks, default 30),
 * data-pause-hidden (seconds a hidden tab stays connected, default 300; 0 =
 * always), data-manual (don't start; call Hookcast.start()), data-token (a
 * subscribe token for private channels, from `hookcast token` or your backend).
 *
 * Page attributes:
 *   data-hookcast-channel="c"      subscribe; bindings inside follow channel c
 *   data-hookcast-event="deploy.*" only matching event names
 *   data-hookcast-text="a.b"       textContent = data.a.b (@event @seq @at @channel)
 *   data-hookcast-attr="href:url title:t"  attributes from data (no on*, style,
 *                                  or non-http(s) URLs)
 *   data-hookcast-state            on a channel element: data are RFC 7386 merge
 *                                  patches on a per-channel state the bindings read
 *   <template data-hookcast-append="c" data-hookcast-max="20">  one copy per event
 *   data-hookcast-refresh="c"      on an element with an id: refetch this page
 *                                  after a random delay and swap in that element
 *   data-hookcast-banner="c"       unhide on an event; [data-hookcast-reload] reloads
 *   data-hookcast-status           connecting / live / reconnecting / paused / refused
 *   data-hookcast-occupancy="c"    textContent = pages viewing channel c (asked
 *                                  every data-occupancy-interval s, default 30, min 10)
 * Build stamps (written by stamp.mjs or the Netlify plugin):
 *   <meta name="hookcast-since" content="deploys=42 forms/contact=3">  where
 *                                  the build stood: later events replay in
 *   <meta name="hookcast-epoch" content="…">   the log those seqs belong to
 *   <meta name="hookcast-deploy" content="…">  this page's deploy: an event
 *                                  whose data.id is it raises no banner/refetch
 * A channel's state (server [state]) fills the bindings of a page that has
 * no place in its log, or one too old: last = the latest event, merge = the
 * data-hookcast-state block, list = template lists. A state is not news: no
 * banner, no refetch, no hookcast:event.
 * DOM events: hookcast:event {channel, seq, event, data, at}, hookcast:open,
 * hookcast:close, hookcast:reconnecting, hookcast:reset, hookcast:refresh,
 * hookcast:state {channel, seq, mode, state}, hookcast:occupancy {channel, count}.
 * Event data only ever reaches textContent and vetted attributes: never
 * innerHTML, never eval.
 */
(function () {
  'use strict';

  /**
   * @typedef {{type: 'event', channel: string, seq: number, event: string, data: any, at: string}} HookcastEvent
   * @typedef {{type: 'state', channel: string, seq: number, mode: 'last'|'merge'|'list', state: any}} HookcastState
   * pending: 0 answered, 1 asked, 2 asking again after a backoff (or given up).
   * @typedef {{last: number|null, epoch?: string, seen?: number, pending: number, tries: number, timer?: any, buffer: Map<number, HookcastEvent>, occ?: boolean, asked?: boolean}} ChannelState
   * @typedef {'idle'|'connecting'|'live'|'reconnecting'|'paused'|'closed'|'refused'} Status
   * @typedef {{
   *   url: string,
   *   WebSocket?: any,
   *   now?: () => number,
   *   random?: () => number,
   *   setTimeout?: (fn: () => void, ms: number) => any,
   *   clearTimeout?: (id: any) => void,
   *   storage?: {getItem(k: string): string|null, setItem(k: string, v: string): void}|null,
   *   baseDelay?: number, maxDelay?: number, minUptime?: number, pingInterval?: number, maxLifetime?: number, subscribeTimeout?: number,
   *   occupancyInterval?: number,
   *   token?: string|((channel: string) => string|null|undefined)|null,
   *   onOccupancy?: (channel: string, count: number) => void,
   *   stamps?: Record<string, number>, epoch?: string|null,
   *   onEvent?: (ev: HookcastEvent, quiet?: boolean) => void,
   *   onState?: (msg: HookcastState) => void,
   *   onStatus?: (status: Status, detail?: any) => void,
   *   onReset?: (channel: string, head: number) => void,
   * }} ClientOptions
   */

  // Close codes after which retrying cannot help.
  var NO_RETRY = { 1002: 1, 1003: 1, 1008: 1, 4400: 1, 4401: 1, 4403: 1 };
  // Error codes after which asking again cannot help.
  var FATAL = /^(forbidden|invalid_channel|too_many_subscriptions|bad_message|bad_json|unknown_action|message_too_large)$/;
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
    // It also closes every socket at 2 hours: reconnect on our terms before then.
    var maxLifetime = o.maxLifetime || 110 * 60 * 1000;
    // The server allows one occupancy ask per channel every 10 s by default.
    var occEvery = Math.max(o.occupancyInterval || 30000, 10000);
    // A subscribe unanswered by then failed (on AWS a cold start and a
    // throttled store can take seconds, a timed-out Lambda answers nothing).
    var answerWithin = o.subscribeTimeout || 15000;

    /** @type {Map<string, ChannelState>} */
    var channels = new Map();
    var ws = null, attempt = 0, openedAt = 0, retryTimer = null, pingTimer = null, lifeTimer = null, occTimer = null;
    var stopped = false;
    /** @type {Status} */
    var status = 'idle';

    /** @param {Status} s @param {any} [detail] */
    function setStatus(s, detail) {
      status = s;
      if (o.onStatus) o.onStatus(s, detail);
    }

    /**
     * The stored "seq" or "seq epoch" of a channel, as [seq, epoch].
     * @returns {[number?, string?]}
     */
    function remembered(name) {
      try {
        var v = /^(\d+)(?: (\S+))?$/.exec(storage.getItem(STORE_PREFIX + name));
        return v ? [Number(v[1]), v[2]] : [];
      } catch (_) { return []; }
    }

    function remember(name, seq) {
      var ch = channels.get(name);
      try { storage.setItem(STORE_PREFIX + name, seq + (ch && ch.epoch ? ' ' + ch.epoch : '')); } catch (_) { /* none, quota or privacy mode */ }
    }

    function send(obj) {
      if (ws && ws.readyState === 1) { ws.send(JSON.stringify(obj)); return true; }
      return false;
    }

    function subscribe(name) {
      var ch = channels.get(name);
      if (!ch) return;
      ch.pending = 1;
      // batch: the replay and the reply come in as few frames as fit.
      var msg = { action: 'subscribe', channel: name, batch: true };
      // The epoch `since` was read in: a wiped store answers with a reset.
      if (ch.last != null) { msg.since = ch.last; if (ch.epoch) msg.epoch = ch.epoch; }
      // Private channels need a subscribe token; public ones ignore it.
      var token = typeof o.token === 'function' ? o.token(name) : o.token;
      if (token) msg.token = token;
      if (send(msg)) ch.timer = setT(function () { fail(name, ch); }, answerWithin);
    }

    /** A subscribe failed: ask again after the backoff, or never if that cannot help. */
    function fail(name, ch, fatal) {
      if (ch.pending !== 1) return; // answered, or already failed
      ch.pending = 2;
      clearT(ch.timer);
      if (!fatal) ch.timer = setT(function () { subscribe(name); }, backoff(ch.tries++, base, max, random));
    }

    function deliver(ch, ev) {
      ch.last = ev.seq;
      remember(ev.channel, ev.seq);
      // A throwing page handler must not stall the channel: report it later.
      // An event this tab already showed (before a reload) is not news again.
      if (o.onEvent) {
        try { o.onEvent(ev, ev.seq <= ch.seen); } catch (err) { setT(function () { throw err; }, 0); }
      }
    }

    /** Applies buffered events that are now next in line; resyncs if a gap remains (or `more` is to come). */
    function drain(name, ch, more) {
      var next;
      while (ch.last != null && (next = ch.buffer.get(ch.last + 1))) {
        ch.buffer.delete(next.seq);
        deliver(ch, next);
      }
      ch.buffer.forEach(function (_, seq) { if (ch.last != null && seq <= ch.last) ch.buffer.delete(seq); });
      if ((more || ch.buffer.size) && !ch.pending) subscribe(name);
    }

    function onEvent(ev) {
      var ch = channels.get(ev.channel);
      if (!ch || typeof ev.seq !== 'number') return;
      if (ch.last != null && ev.seq <= ch.last) return; // seen: drop the duplicate
      // A page with no place yet waits for its state or head (held below).
      if (ch.last != null && ev.seq === ch.last + 1) {
        deliver(ch, ev);
        drain(ev.channel, ch);
        return;
      }
      // A gap: hold this event and ask for what is missing.
      ch.buffer.set(ev.seq, ev);
      if (!ch.pending) subscribe(ev.channel);
    }

    /** The channel's state at msg.seq: the page is current there. */
    function onState(msg) {
      var ch = channels.get(msg.channel);
      if (!ch || typeof msg.seq !== 'number' || (ch.last != null && msg.seq < ch.last)) return;
      ch.last = msg.seq;
      remember(msg.channel, msg.seq);
      if (o.onState) o.onState(msg);
    }

    function onSubscribed(msg) {
      var ch = channels.get(msg.channel);
      if (!ch) return;
      ch.pending = ch.tries = 0;
      clearT(ch.timer);
      if (msg.epoch) ch.epoch = msg.epoch;
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
      // `next`: the replay stopped early (its size bound); continue from there.
      drain(msg.channel, ch, msg.next);
      firstAsk(msg.channel, ch);
    }

    /** A watched channel's first count comes right after subscribing, once per connection. */
    function firstAsk(name, ch) {
      if (!ch.occ || ch.asked) return;
      ch.asked = true;
      send({ action: 'occupancy', channel: name });
      if (!occTimer) occTimer = setT(askOccupancy, occEvery);
    }

    /** Asks again for every watched channel every occEvery ms while connected. */
    function askOccupancy() {
      occTimer = setT(askOccupancy, occEvery);
      channels.forEach(function (ch, name) {
        if (ch.occ && !ch.pending) send({ action: 'occupancy', channel: name });
      });
    }

    function onMessage(e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (_) { return; }
      handle(msg);
    }

    /** @param {any} msg */
    function handle(msg) {
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'batch' && Array.isArray(msg.frames)) msg.frames.forEach(handle);
      else if (msg.type === 'event') onEvent(msg);
      else if (msg.type === 'subscribed') onSubscribed(msg);
      else if (msg.type === 'state') onState(msg);
      else if (msg.type === 'occupancy' && o.onOccupancy && channels.has(msg.channel)) o.onOccupancy(msg.channel, msg.count);
      else if (msg.type === 'error' || !msg.type) {
        // API Gateway's own frame (no type: a failed, timed-out or throttled
        // Lambda) and an error naming no channel may be about any pending subscribe.
        channels.forEach(function (ch, name) {
          var fatal = FATAL.test(msg.code);
          if (msg.channel ? msg.channel === name : !fatal) fail(name, ch, fatal);
        });
      }
    }

    /** The socket is gone: its timers and the channels' per-connection flags go with it. */
    function detach() {
      clearT(pingTimer); clearT(lifeTimer); clearT(occTimer); occTimer = null;
      channels.forEach(function (ch) { clearT(ch.timer); ch.pending = 0; ch.asked = false; });
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
        clearT(lifeTimer);
        lifeTimer = setT(function () {
          // A planned hand-over: resume at once with since, no backoff.
          if (sock !== ws) return;
          ws = null;
          detach();
          sock.close(1000, 'planned reconnect');
          attempt = 0;
          openedAt = 0;
          connect();
        }, maxLifetime);
      };
      sock.onmessage = function (e) { if (sock === ws) onMessage(e); };
      sock.onclose = function (e) {
        if (sock !== ws) return;
        ws = null;
        detach();
        retry(e);
      };
      sock.onerror = function () { /* onclose follows */ };
    }

    function retry(e) {
      if (stopped) return;
      if (e && e.code === 4403) {
        // The server refused this page (its origin is not allowed): retrying cannot help.
        console.error('hookcast: refused: ' + (e.reason || 'origin not allowed'));
        setStatus('refused', { code: e.code, reason: e.reason });
        return;
      }
      if (e && NO_RETRY[e.code]) { setStatus('closed', { code: e.code, reason: e.reason }); return; }
      // Never opened after several tries: say what usually causes it, once.
      if (!openedAt && attempt === 5) {
        console.warn('hookcast: cannot connect to ' + o.url + '; if this persists, check that this page\'s origin is allowed');
      }
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
        var r = remembered(name), stamp = o.stamps && o.stamps[name];
        var ch = { last: r[0] == null ? null : r[0], epoch: r[1], pending: 0, tries: 0, buffer: new Map() };
        // A built page shows its build: it replays from its stamp. What this
        // tab saw after it (before a reload) replays quietly.
        if (stamp != null) {
          if (r[1] === (o.epoch || undefined)) ch.seen = r[0];
          ch.last = stamp;
          ch.epoch = o.epoch || undefined;
        }
        channels.set(name, ch);
        subscribe(name);
      },
      /** Subscribes and asks how many pages view the channel, periodically. @param {string} name */
      watchOccupancy: function (name) {
        this.add(name);
        var ch = /** @type {ChannelState} */ (channels.get(name));
        ch.occ = true;
        if (ws && !ch.pending) firstAsk(name, ch);
      },
      start: function () { stopped = false; if (!ws && !retryTimer) connect(); },
      /** @param {Status} [label] status to show, default "closed" */
      stop: function (label) {
        stopped = true;
        clearT(retryTimer); retryTimer = null;
        detach();
        if (ws) { var s = ws; ws = null; s.close(1000, 'page closed'); }
        attempt = 0;
        setStatus(label || 'closed');
      },
      /** Test and debugging view of the resume state. */
      lastSeq: function (name) { var ch = channels.get(name); return ch ? ch.last : null; },
      status: function () { return status; },
    };
  }

  // ---- DOM bindings -------------------------------------------------------

  /** Reads a dotted path from the event's data; @names read the envelope. */
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

  /** Event-name filter: space-separated names, `prefix*` allowed. */
  function matches(filter, name) {
    if (!filter) return true;
    return filter.split(/\s+/).some(function (f) {
      return f.slice(-1) === '*' ? name.indexOf(f.slice(0, -1)) === 0 : f === name;
    });
  }

  /** RFC 7386 JSON merge patch; returns a new value, never mutates. */
  function mergePatch(target, patch) {
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
    var out = target && typeof target === 'object' && !Array.isArray(target) ? Object.assign({}, target) : {};
    Object.keys(patch).forEach(function (k) {
      if (patch[k] === null) delete out[k];
      else out[k] = mergePatch(out[k], patch[k]);
    });
    return out;
  }

  var URL_ATTRS = { href: 1, src: 1, action: 1, formaction: 1, poster: 1, cite: 1, 'xlink:href': 1 };

  /** Attribute bindings refuse handlers, styles and non-http(s) URLs. */
  function safeAttr(name, value, base) {
    name = name.toLowerCase();
    if (name.indexOf('on') === 0 || name === 'style' || name === 'srcdoc') return false;
    if (!URL_ATTRS[name]) return true;
    try { return /^https?:$/.test(new URL(String(value), base).protocol); } catch (_) { return false; }
  }

  function text(v) {
    return v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  }

  /**
   * Writes bindings in `scope` from `ev`, touching only what changed. With
   * `whole` (merge-patch state), a path that is gone was deleted: its text
   * empties and its attribute goes; otherwise an event that lacks a path
   * leaves that binding alone.
   */
  function fill(scope, ev, base, whole) {
    var nodes = [scope].concat(Array.prototype.slice.call(
      scope.querySelectorAll('[data-hookcast-text],[data-hookcast-attr]')));
    nodes.forEach(function (el) {
      if (!el.getAttribute) return;
      var path = el.getAttribute('data-hookcast-text');
      if (path) {
        var v = pick(ev, path);
        if (v === undefined && whole) v = null;
        if (v !== undefined && el.textContent !== text(v)) el.textContent = text(v);
      }
      var attrs = el.getAttribute('data-hookcast-attr');
      if (!attrs) return;
      attrs.split(/[\s,]+/).forEach(function (pair) {
        var i = pair.indexOf(':');
        if (i < 1) return;
        var name = pair.slice(0, i), val = pick(ev, pair.slice(i + 1));
        if (val === undefined && whole) val = null;
        if (val === undefined) return;
        if (val === false || val === null) { if (el.hasAttribute(name)) el.removeAttribute(name); return; }
        var s = val === true ? '' : text(val);
        if (el.getAttribute(name) !== s && safeAttr(name, s, base)) el.setAttribute(name, s);
      });
    });
  }

  function each(doc, selector, fn) {
    Array.prototype.forEach.call(doc.querySelectorAll(selector), fn);
  }

  /** @param {Document} doc @param {Window} win */
  function createPage(doc, win, opts) {
    var states = new Map();
    function meta(name) {
      var m = doc.querySelector('meta[name="hookcast-' + name + '"]');
      return m && m.getAttribute('content');
    }
    // Where the build stood: "deploys=42 forms/contact=3".
    var stamps = /** @type {Record<string, number>} */ ({}), deploy = meta('deploy');
    (meta('since') || '').split(/\s+/).forEach(function (p) {
      var i = p.lastIndexOf('=');
      if (i > 0 && /^\d+$/.test(p.slice(i + 1))) stamps[p.slice(0, i)] = Number(p.slice(i + 1));
    });
    var refreshIds = {}, refreshTimer = null;
    var spread = opts.spread == null || opts.spread === '' ? 5000 : Number(opts.spread);
    if (!(spread >= 0)) spread = 5000;

    function emit(name, detail) {
      doc.dispatchEvent(new CustomEvent('hookcast:' + name, { detail: detail }));
    }

    // Poke/pull: refetch this page after a random delay, so a thousand pages
    // do not hit the origin in the same second, and swap in only the regions.
    function refresh() {
      refreshTimer = null;
      var ids = Object.keys(refreshIds);
      refreshIds = {};
      var url = new URL(win.location.href);
      url.searchParams.set('hookcast', String(Date.now()));
      win.fetch(url.href, { credentials: 'same-origin', cache: 'no-store' })
        .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, 'text/html');
          var done = [];
          ids.forEach(function (id) {
            var now = doc.getElementById(id), next = fresh.getElementById(id);
            if (now && next) { now.replaceWith(doc.importNode(next, true)); done.push(id); }
          });
          page.rescan();
          emit('refresh', { ids: done });
        })
        .catch(function (err) { emit('refresh', { ids: [], error: String(err) }); });
    }

    /** An event into the page; `quiet`: not news (a state, or seen before a reload). */
    function apply(ev, quiet) {
      var base = win.location.href;
      var state = null;
      // This page's own deploy going live is not news to it.
      var news = !quiet && !(deploy && ev.data && ev.data.id === deploy);
      each(doc, '[data-hookcast-channel]', function (el) {
        if (el.getAttribute('data-hookcast-channel') !== ev.channel) return;
        if (!matches(el.getAttribute('data-hookcast-event'), ev.event)) return;
        if (el.hasAttribute('data-hookcast-state')) {
          // Each event's data is a merge patch. On the channel's whole state
          // (from the server) a missing path was deleted; without it (the
          // built page is the state) only what the patch names changes.
          if (!state && states.has(ev.channel)) states.set(ev.channel, state = mergePatch(states.get(ev.channel), ev.data));
          fill(el, { channel: ev.channel, seq: ev.seq, event: ev.event, at: ev.at, data: state || ev.data }, base, !!state);
        } else {
          fill(el, ev, base);
        }
      });
      each(doc, 'template[data-hookcast-append]', function (t) {
        if (t.getAttribute('data-hookcast-append') !== ev.channel) return;
        if (!matches(t.getAttribute('data-hookcast-event'), ev.event)) return;
        var frag = t.content.cloneNode(true);
        Array.prototype.forEach.call(frag.children, function (item) {
          item.setAttribute('data-hookcast-item', '');
          fill(item, ev, base);
        });
        var parent = t.parentNode;
        parent.insertBefore(frag, t.nextSibling); // newest first
        var max = Number(t.getAttribute('data-hookcast-max')) || 50;
        var items = parent.querySelectorAll(':scope > [data-hookcast-item]');
        for (var k = max; k < items.length; k++) parent.removeChild(items[k]);
      });
      if (quiet) return;
      each(doc, '[data-hookcast-banner]', function (el) {
        if (news && el.getAttribute('data-hookcast-banner') === ev.channel && matches(el.getAttribute('data-hookcast-event'), ev.event)) {
          el.hidden = false;
        }
      });
      each(doc, '[data-hookcast-refresh]', function (el) {
        if (!news || el.getAttribute('data-hookcast-refresh') !== ev.channel || !el.id) return;
        if (!matches(el.getAttribute('data-hookcast-event'), ev.event)) return;
        refreshIds[el.id] = 1;
        if (!refreshTimer) refreshTimer = win.setTimeout(refresh, Math.floor(Math.random() * spread));
      });
      var detail = { channel: ev.channel, seq: ev.seq, event: ev.event, data: ev.data, at: ev.at };
      listeners.forEach(function (l) {
        if (l.channel !== ev.channel || !matches(l.event, ev.event)) return;
        try { l.fn(detail); } catch (err) { win.setTimeout(function () { throw err; }, 0); }
      });
      emit('event', detail);
    }

    /** A channel's state: bindings filled as if current, nothing announced. */
    function snapshot(msg) {
      var c = msg.channel, st = msg.state;
      if (msg.mode === 'merge') {
        states.set(c, st);
        each(doc, '[data-hookcast-channel]', function (el) {
          if (el.getAttribute('data-hookcast-channel') === c) {
            fill(el, { channel: c, seq: msg.seq, data: st }, win.location.href, el.hasAttribute('data-hookcast-state'));
          }
        });
      } else {
        // The state replaces what the lists show (built items marked
        // data-hookcast-item included), then replays as quiet events.
        each(doc, 'template[data-hookcast-append]', function (t) {
          if (t.getAttribute('data-hookcast-append') === c) each(t.parentNode, ':scope > [data-hookcast-item]', function (i) { i.remove(); });
        });
        states.delete(c);
        (msg.mode === 'list' ? st : [st]).forEach(function (e) { apply(Object.assign({ channel: c }, e), true); });
      }
      emit('state', { channel: c, seq: msg.seq, mode: msg.mode, state: st });
    }

    function showOccupancy(channel, count) {
      each(doc, '[data-hookcast-occupancy]', function (el) {
        if (el.getAttribute('data-hookcast-occupancy') === channel && el.textContent !== String(count)) el.textContent = String(count);
      });
      emit('occupancy', { channel: channel, count: count });
    }

    function showStatus(s) {
      each(doc, '[data-hookcast-status]', function (el) {
        el.setAttribute('data-state', s);
        el.textContent = s;
      });
    }

    var client = createClient({
      url: opts.url,
      storage: opts.storage,
      onEvent: apply,
      onState: snapshot,
      stamps: stamps,
      epoch: meta('epoch'),
      onStatus: function (s, detail) {
        showStatus(s);
        if (s === 'live') emit('open', {});
        else if (s === 'reconnecting') emit('reconnecting', detail || {});
        else if (s === 'closed' || s === 'paused') emit('close', detail || { reason: s });
      },
      onReset: function (channel, head) { emit('reset', { channel: channel, seq: head }); },
      onOccupancy: showOccupancy,
      occupancyInterval: opts.occupancyInterval ? Number(opts.occupancyInterval) * 1000 : 0,
      token: opts.token || null,
    });

    var page = {
      client: client,
      rescan: function () {
        each(doc, '[data-hookcast-channel],[data-hookcast-refresh],[data-hookcast-banner],template[data-hookcast-append]', function (el) {
          client.add(el.getAttribute('data-hookcast-channel') || el.getAttribute('data-hookcast-append') ||
            el.getAttribute('data-hookcast-refresh') || el.getAttribute('data-hookcast-banner'));
        });
        each(doc, '[data-hookcast-occupancy]', function (el) {
          client.watchOccupancy(/** @type {string} */ (el.getAttribute('data-hookcast-occupancy')));
        });
        listeners.forEach(function (l) { client.add(l.channel); });
      },
    };

    // A background tab may pause and resume later with since.
    var pauseAfter = opts.pauseHidden == null ? 300000 : Number(opts.pauseHidden) * 1000;
    var pauseTimer = null, paused = false;
    doc.addEventListener('visibilitychange', function () {
      if (doc.visibilityState === 'hidden') {
        if (pauseAfter > 0) pauseTimer = win.setTimeout(function () { paused = true; client.stop('paused'); }, pauseAfter);
      } else {
        win.clearTimeout(pauseTimer);
        if (paused) { paused = false; client.start(); }
      }
    });
    doc.addEventListener('click', function (e) {
      var t = /** @type {Element} */ (e.target);
      if (t && t.closest && t.closest('[data-hookcast-reload]')) win.location.reload();
    });
    // Leave cleanly so the page can enter the back/forward cache; resume on return.
    win.addEventListener('pagehide', function () { client.stop(); });
    win.addEventListener('pageshow', function (e) { if (e.persisted) client.start(); });

    page.rescan();
    client.start();
    return page;
  }

  /** @type {{channel: string, event: string|null, fn: (detail: any) => void}[]} */
  var listeners = [];
  var current = null;

  function defaultUrl(src, href) {
    var u = new URL(src || href, href);
    return (u.protocol === 'https:' ? 'wss://' : 'ws://') + u.host + '/ws';
  }

  var Hookcast = {
    createClient: createClient,
    backoff: backoff,
    mergePatch: mergePatch,
    pick: pick,
    matches: matches,
    safeAttr: safeAttr,
    /** Starts on this page (idempotent). Options: url, storage ("session"|"none"), spread (ms), pauseHidden (s), occupancyInterval (s), token. */
    start: function (options) {
      if (current) return current;
      options = options || {};
      var storage = null;
      if (options.storage !== 'none') { try { storage = window.sessionStorage; } catch (_) { storage = null; } }
      current = createPage(document, window, {
        url: options.url || defaultUrl(null, location.href),
        storage: storage,
        spread: options.spread,
        pauseHidden: options.pauseHidden,
        occupancyInterval: options.occupancyInterval,
        token: options.token,
      });
      Hookcast.client = current.client;
      return current;
    },
    /** Hookcast.on(channel, [event filter], fn): business events from script. */
    on: function (channel, event, fn) {
      if (typeof event === 'function') { fn = event; event = null; }
      listeners.push({ channel: channel, event: event, fn: fn });
      if (current) current.client.add(channel);
    },
    client: null,
  };

  if (typeof module === 'object' && module.exports) {
    module.exports = Hookcast;
  } else if (typeof window !== 'undefined') {
    window.Hookcast = Hookcast;
    // A classic <script> tag configures itself from its data attributes.
    var script = /** @type {HTMLScriptElement|null} */ (document.currentScript);
    if (script && !script.hasAttribute('data-manual')) {
      var boot = function () {
        Hookcast.start({
          url: script.getAttribute('data-url') || defaultUrl(script.src, location.href),
          storage: script.getAttribute('data-storage') || 'session',
          spread: script.getAttribute('data-spread'),
          pauseHidden: script.getAttribute('data-pause-hidden'),
          occupancyInterval: script.getAttribute('data-occupancy-interval'),
          token: script.getAttribute('data-token'),
        });
      };
      if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
      else boot();
    }
  }
})();
