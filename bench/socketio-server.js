// Baseline: Socket.IO, as a developer would use it. A page joins a room
// (`subscribe`); POST /publish emits the body to that room (Socket.IO encodes
// a broadcast once).
'use strict';
const { Server } = require('socket.io');
const { publishServer, listen } = require('./publish-server');

const server = publishServer((body) => {
  const ev = JSON.parse(body.toString('utf8'));
  io.to(ev.channel).emit('event', ev);
});
const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
io.on('connection', (socket) => {
  socket.on('subscribe', (channel) => { socket.join(channel); socket.emit('subscribed', channel); });
});
listen(server);
