// Baseline: the floor for a Node server. `ws` does the handshake; a publish
// builds one WebSocket text frame (header + payload) once and writes that
// same buffer to every socket. Prints its URL on the first line; loopback
// only, port 0.
'use strict';
const http = require('node:http');
const { WebSocketServer } = require('ws');

function frame(payload) {
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x81, n]);
  else if (n < 65536) { head = Buffer.alloc(4); head[0] = 0x81; head[1] = 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x81; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2); }
  return Buffer.concat([head, payload]);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') { res.writeHead(404); res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const bytes = frame(Buffer.concat(chunks));
    for (const ws of wss.clients) if (ws.readyState === 1) ws._socket.write(bytes);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
});
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => ws.on('message', () => ws.send('{"type":"subscribed"}')));
server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}`));
