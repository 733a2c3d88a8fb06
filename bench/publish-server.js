// What every Node baseline shares: an HTTP server whose POST /publish hands
// the request body (a Buffer) to `broadcast`, and a listen on 127.0.0.1,
// port 0, that prints the URL on the first line.
'use strict';
const http = require('node:http');

function publishServer(broadcast) {
  return http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/publish') { res.writeHead(404); res.end(); return; }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      broadcast(Buffer.concat(chunks));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
  });
}

function listen(server) {
  server.listen(0, '127.0.0.1', () => console.log(`http://127.0.0.1:${server.address().port}`));
}

module.exports = { publishServer, listen };
