/* hookcast console: the delivery log, a channel view, open pages by build,
 * test events and replays. It holds no data of its own: everything comes
 * from /_console/api/*, with the operator token as a Bearer header. The
 * token arrives in the URL's fragment (#token=…, never sent to a server),
 * is kept in this tab's sessionStorage only, and the fragment is cleared.
 * Data only ever reaches textContent: never innerHTML. */
(function () {
  'use strict';

  var KEY = 'hookcast-operator-token';
  // The log is asked again this long after each answer (never two asks at once).
  var POLL_MS = 250;
  var $ = function (id) { return /** @type {any} */ (document.getElementById(id)); };
  var token = null;
  var channel = null;
  var timers = [];
  var loopTimer = null;

  function readToken() {
    var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      try { sessionStorage.setItem(KEY, decodeURIComponent(m[1])); } catch (_) { /* storage off: kept in memory */ }
      token = decodeURIComponent(m[1]);
      history.replaceState(null, '', location.pathname + location.search);
      return;
    }
    try { token = sessionStorage.getItem(KEY); } catch (_) { token = null; }
  }

  function api(path, body) {
    var init = { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' };
    if (body !== undefined) {
      init.method = 'POST';
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch('/_console/api/' + path, init).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (json) {
        if (res.status === 401) { signOut(json.message || 'the token was refused'); throw new Error('unauthorized'); }
        if (!res.ok) throw new Error(json.message || ('HTTP ' + res.status));
        return json;
      });
    });
  }

  function setStatus(s, text) {
    var el = $('status');
    el.setAttribute('data-status', s);
    el.textContent = text || s;
  }

  function signOut(why) {
    token = null;
    try { sessionStorage.removeItem(KEY); } catch (_) { /* nothing kept */ }
    timers.forEach(clearInterval);
    clearTimeout(loopTimer);
    timers = [];
    $('app').hidden = true;
    $('signout').hidden = true;
    $('login').hidden = false;
    if (why) $('login-why').textContent = why;
    setStatus('signed-out', 'no token');
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function audienceText(a) {
    if (!a) return '';
    var s = a.delivered + ' delivered';
    if (a.gone) s += ', ' + a.gone + ' gone';
    if (a.failed) s += ', ' + a.failed + ' failed';
    return s;
  }

  function row(d) {
    var tr = document.createElement('tr');
    tr.setAttribute('data-id', d.id);
    tr.setAttribute('data-outcome', d.outcome);
    tr.className = d.outcome;
    cell(tr, d.at.replace('T', ' ').replace('Z', ''), 'time');
    cell(tr, d.source);
    cell(tr, d.replay_of ? 'replay' : d.kind);
    cell(tr, d.status);
    cell(tr, d.outcome, 'outcome');
    cell(tr, d.event);
    cell(tr, d.channel, 'channel');
    cell(tr, d.seq, 'seq');
    cell(tr, audienceText(d.audience), 'audience');
    cell(tr, d.reason || (d.replay_of ? 'replay of ' + d.replay_of : d.code || ''), 'reason');
    var actions = cell(tr, '');
    if (d.outcome === 'accepted') {
      var b = document.createElement('button');
      b.type = 'button';
      b.className = 'replay';
      b.textContent = 'Replay';
      b.addEventListener('click', function () { replay(d.id, b); });
      actions.appendChild(b);
    }
    return tr;
  }

  function renderDeliveries(list) {
    var body = $('deliveries').tBodies[0];
    var rows = {};
    Array.prototype.forEach.call(body.rows, function (r) { rows[r.getAttribute('data-id')] = r; });
    // Newest first: the answer is oldest first.
    for (var i = 0; i < list.length; i++) {
      var d = list[i], fresh = row(d), old = rows[d.id];
      if (old) {
        // Only the audience changes once an entry is made.
        old.querySelector('.audience').textContent = audienceText(d.audience);
      } else {
        body.insertBefore(fresh, body.firstChild);
      }
    }
    $('deliveries-empty').hidden = body.rows.length > 0;
    if (!channel) {
      for (var j = list.length - 1; j >= 0; j--) {
        if (list[j].channel && list[j].outcome === 'accepted') { showChannel(list[j].channel); break; }
      }
    }
  }

  function pollDeliveries() {
    return api('deliveries?limit=100').then(function (r) {
      renderDeliveries(r.deliveries || []);
      setStatus('live', 'live');
    }, function (e) {
      if (e.message !== 'unauthorized') setStatus('offline', 'offline: ' + e.message);
    });
  }

  function showChannel(name) {
    channel = name;
    $('channel-name').value = name;
    if (!$('test-channel').value) $('test-channel').value = name;
    pollChannel();
  }

  function pollChannel() {
    if (!channel) return Promise.resolve();
    var asked = channel;
    return api('channels/' + asked.split('/').map(encodeURIComponent).join('/')).then(function (c) {
      if (asked !== channel) return;
      $('channel-view').hidden = false;
      $('ch-name').textContent = c.channel;
      $('ch-head').textContent = String(c.head);
      $('ch-epoch').textContent = c.epoch;
      $('ch-occupancy').textContent = String(c.occupancy);
      $('ch-state').textContent = c.state === undefined || c.state === null ? '(none)' : c.mode + ': ' + JSON.stringify(c.state, null, 2);
      var list = $('ch-events');
      list.textContent = '';
      (c.events || []).slice().reverse().forEach(function (e) {
        var li = document.createElement('li');
        li.value = e.seq;
        li.textContent = '#' + e.seq + ' ' + e.event + ' ' + JSON.stringify(e.data);
        list.appendChild(li);
      });
    }, function () { /* shown by the deliveries poll */ });
  }

  function pollPages() {
    return api('pages').then(function (p) {
      var body = $('pages').tBodies[0];
      body.textContent = '';
      (p.builds || []).forEach(function (b) {
        var tr = document.createElement('tr');
        tr.setAttribute('data-build', b.build);
        cell(tr, b.build || '(not stamped)');
        cell(tr, b.pages, 'pages');
        body.appendChild(tr);
      });
      $('pages-total').textContent = p.total + ' open page' + (p.total === 1 ? '' : 's');
    }, function () { /* shown by the deliveries poll */ });
  }

  function replay(id, button) {
    button.disabled = true;
    api('replay', { id: id }).then(function (r) {
      button.disabled = false;
      button.textContent = 'Replayed as #' + r.delivery.seq;
      pollDeliveries();
    }, function (e) {
      button.disabled = false;
      button.textContent = 'Replay failed: ' + e.message;
    });
  }

  function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('signout').hidden = false;
    var loop = function () {
      // A hidden tab asks nothing (each ask is a request, and on AWS a bill).
      var asked = document.visibilityState === 'hidden' ? Promise.resolve() : pollDeliveries();
      asked.then(function () { if (token) loopTimer = setTimeout(loop, POLL_MS); });
    };
    loop();
    pollPages();
    var shown = function (fn) { return function () { if (document.visibilityState !== 'hidden') fn(); }; };
    timers.push(setInterval(shown(pollChannel), 1000));
    timers.push(setInterval(shown(pollPages), 2000));
  }

  document.addEventListener('DOMContentLoaded', function () {
    readToken();
    $('login-form').addEventListener('submit', function (e) {
      e.preventDefault();
      token = $('token').value.trim();
      if (!token) return;
      try { sessionStorage.setItem(KEY, token); } catch (_) { /* kept in memory */ }
      start();
    });
    $('signout').addEventListener('click', function () { signOut('Signed out. Paste the operator token to open the console.'); });
    $('channel-form').addEventListener('submit', function (e) {
      e.preventDefault();
      var name = $('channel-name').value.trim();
      if (name) showChannel(name);
    });
    $('test-form').addEventListener('submit', function (e) {
      e.preventDefault();
      var out = $('test-result'), data;
      try { data = JSON.parse($('test-data').value || '{}'); } catch (err) { out.textContent = 'data is not JSON: ' + err.message; return; }
      var ch = $('test-channel').value.trim();
      api('events', { channel: ch, event: $('test-event').value.trim() || 'test', data: data }).then(function (r) {
        out.textContent = 'sent: ' + r.delivery.channel + ' #' + r.delivery.seq;
        if (!channel) showChannel(ch);
        pollDeliveries();
      }, function (err) { out.textContent = 'not sent: ' + err.message; });
    });
    if (token) start();
    else signOut('');
  });
})();
