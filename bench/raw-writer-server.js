// Baseline: the floor for a Node server. `ws` does the handshake; a publish
// builds one WebSocket text frame (header + payload) once and writes that
// same buffer to every socket.
'use strict';
const { WebSocketServer } = require('ws');
const { publishServer, listen } = require('./publish-server');

function frame(payload) {
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x81, n]);
  else if (n < 65536) { head = Buffer.alloc(4); head[0] = 0x81; head[1] = 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x81; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2); }
  return Buffer.concat([head, payload]);
}

const server = publishServer((body) => {
  const bytes = frame(body);
  for (const ws of wss.clients) if (ws.readyState === 1) ws._socket.write(bytes);
});
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });
wss.on('connection', (ws) => ws.on('message', () => ws.send('{"type":"subscribed"}')));
listen(server);
