// The business-events pattern: plain DOM listeners on hookcast:event.
document.addEventListener('hookcast:event', function (e) {
  var d = e.detail;
  var li = document.createElement('li');
  li.textContent = d.channel + ' #' + d.seq + ' ' + d.event;
  var list = document.getElementById('events');
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 20) list.removeChild(list.lastChild);
});
document.addEventListener('hookcast:event', function (e) {
  var badge = document.getElementById('deploy-state');
  if (e.detail.channel === 'deploys') badge.setAttribute('data-state', e.detail.data.state || '');
});
