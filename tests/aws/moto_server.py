"""moto's DynamoDB on 127.0.0.1, port 0; prints the URL as its first line.

moto's own threaded server lets two TransactWriteItems interleave, which real
DynamoDB never does. Here connections are still served by threads (keep-alive
stays fast) but requests run one at a time under a lock, which restores the
all-or-nothing transactions the store relies on.
"""
import socket
import sys
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

moto_app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def app(environ, start_response):
    # Every request, SQS's too: moto's ReceiveMessage decides which FIFO
    # groups are in flight once, at the start of a long poll, so two
    # concurrent receives can each take a message of one group (SQS never
    # does). Hence nothing here may long-poll: under the lock a
    # WaitTimeSeconds > 0 would hold every other request behind it.
    with lock:
        # Drain the response inside the lock: moto builds it lazily.
        return list(moto_app(environ, start_response))


class Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle and
        # delayed ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, *args, **kwargs):
        pass


server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Handler)
print(f"http://127.0.0.1:{server.server_port}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
