// The baseline: a minimal Node `ws` broadcast server, as a developer would
// write one. POST /publish broadcasts the body to every socket on /ws.
'use strict';
const { WebSocketServer } = require('ws');
const { publishServer, listen } = require('./publish-server');

const server = publishServer((body) => {
  const frame = body.toString('utf8');
  for (const ws of wss.clients) if (ws.readyState === 1) ws.send(frame);
});
const wss = new WebSocketServer({ server, path: '/ws' });
wss.on('connection', (ws) => ws.on('message', () => ws.send('{"type":"subscribed"}')));
listen(server);
