// The baseline: a minimal Node `ws` broadcast server, as a developer would
// write one. POST /publish broadcasts the body to every socket on /ws.
// Prints its URL on the first line; loopback only, port 0.
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') { res.writeHead(404); res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const frame = Buffer.concat(chunks).toString('utf8');
    for (const ws of wss.clients) if (ws.readyState === 1) ws.send(frame);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
});
const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => ws.on('message', () => ws.send('{"type":"subscribed"}')));
server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}`));
