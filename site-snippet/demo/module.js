import Hookcast, { on } from '/hookcast.mjs';

on('news', (e) => {
  const li = document.createElement('li');
  li.textContent = `${e.event}: ${e.data.title}`;
  document.getElementById('received').append(li);
});
Hookcast.start();
