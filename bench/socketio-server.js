// Baseline: Socket.IO, as a developer would use it. A page joins a room
// (`subscribe`); POST /publish emits the body to that room (Socket.IO encodes
// a broadcast once). Prints its URL on the first line; loopback only, port 0.
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish') { res.writeHead(404); res.end(); return; }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const ev = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    io.to(ev.channel).emit('event', ev);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
});
const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
io.on('connection', (socket) => {
  socket.on('subscribe', (channel) => { socket.join(channel); socket.emit('subscribed', channel); });
});
server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}`));
