"""moto's DynamoDB on 127.0.0.1, port 0, serving one request at a time.

moto_server's threaded mode lets two TransactWriteItems interleave, which real
DynamoDB never does; serialising requests restores the all-or-nothing
semantics the store relies on. Prints the URL as its first line.
"""
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", 0, app, threaded=False)
print(f"http://127.0.0.1:{server.server_port}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    sys.exit(0)
