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



def cheap_transaction_rollback():
    """moto 5.2's TransactWriteItems deep-copies every table it touches, all
    items and stream records, before each transaction, to roll back on a
    cancellation: O(table) per transaction. A test that subscribes a thousand
    pages took minutes and moto's memory grew by gigabytes. With requests run
    one at a time (below), it is enough to keep the touched items and the
    stream's length, and put them back if the transaction is cancelled: the
    same all-or-nothing result, stream records included."""
    import copy as std_copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class TablesNotCopied:
        @staticmethod
        def deepcopy(x, memo=None):
            # The transaction's own whole-table backup becomes the table itself;
            # its rollback is the item-level one below.
            return x if isinstance(x, Table) else std_copy.deepcopy(x, memo)

    models.copy = TablesNotCopied
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved, streams = [], {}
        for entry in transact_items:
            for op_type, op in entry.items():
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                attrs = op["Item"] if op_type == "Put" else op.get("Key", {})
                if table.hash_key_attr not in attrs:
                    continue
                h = DynamoType(attrs[table.hash_key_attr])
                r = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr and table.range_key_attr in attrs else None
                if table.range_key_attr and r is None:
                    continue
                before = table.get_item(h, r)
                saved.append((table, h, r, std_copy.deepcopy(before) if before is not None else None))
                if table.stream_shard is not None and id(table) not in streams:
                    streams[id(table)] = (table.stream_shard, len(table.stream_shard.items))
        try:
            return original(self, transact_items)
        except Exception:
            for table, h, r, item in reversed(saved):
                if r is None:
                    if item is None:
                        table.items.pop(h, None)
                    else:
                        table.items[h] = item
                elif item is None:
                    table.items[h].pop(r, None)
                else:
                    table.items[h][r] = item
            for shard, n in streams.values():
                del shard.items[n:]
            raise

    models.DynamoDBBackend.transact_write_items = transact_write_items


def linear_sqs():
    """moto 5.2's SQS is quadratic in a queue's length: ReceiveMessage checks
    each message's retention through GetQueueAttributes, which counts every
    message (visible, in flight, delayed) each time, and each SendMessage on
    a FIFO queue builds those same counts to read one flag; every check reads
    the clock through datetime arithmetic. With a few thousand fan-out jobs
    queued, SQS took most of moto's time and every DynamoDB request waited
    behind it. Same answers, each in time linear in the queue (or constant)."""
    import time

    import moto.sqs.models as sqs

    sqs.unix_time = time.time
    sqs.unix_time_millis = lambda: time.time() * 1000.0

    def is_message_valid_based_on_retention_period(self, queue_name, message):
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > time.time()

    sqs.SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period

    # Sending reads one flag through Queue.attributes, which counts every
    # message: while a send is under way, the attributes are that flag alone.
    attributes = sqs.Queue.attributes.fget

    def attributes_or_the_flag(self):
        if getattr(self, "_sending", 0):
            return {"ContentBasedDeduplication": str(bool(self.content_based_deduplication)).lower()}
        return attributes(self)

    sqs.Queue.attributes = property(attributes_or_the_flag)

    def sending(method, queue_of):
        def wrapped(self, *args, **kwargs):
            queue = queue_of(self, *args)
            # A depth: send_message calls the other two.
            queue._sending = getattr(queue, "_sending", 0) + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                queue._sending -= 1

        return wrapped

    sqs.Queue.add_message = sending(sqs.Queue.add_message, lambda q, *a: q)
    sqs.SQSBackend._validate_message = sending(sqs.SQSBackend._validate_message, lambda b, q, *a: q)
    sqs.SQSBackend.send_message = sending(sqs.SQSBackend.send_message, lambda b, name, *a: b.get_queue(name))


def partition_query():
    """moto 5.2's Query on a table (no index) reads every item of the table,
    sorts them all, then keeps the partition asked for: O(table) per Query.
    The stack's table holds every channel's events, subscriptions, budgets
    and dedupe keys, so each subscribe's history read grew with everything
    ever written, and moto, at one request at a time, became the stack's
    bottleneck (200 subscribes at once: 33 s, of which 23 % in Table.all_items).
    DynamoDB reads one partition. Here too: the same answer, from the
    partition's items only."""
    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self, hash_key, *args, **kwargs):
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None:
            return original(self, hash_key, *args, **kwargs)
        part = self.items.get(hash_key)
        if part is None:
            items = []
        elif self.range_key_attr:
            items = list(part.values())
        else:
            items = [part]
        # Requests run one at a time (below): the instance's all_items is this partition's for this query only.
        self.all_items = lambda: items
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


def cached_routing():
    """moto's dispatcher finds each request's service by listing its own
    package directory (a directory read and an isdir per module) and
    matching URL patterns: a tenth of moto's time under the stack's load.
    The answer depends only on the host: kept per host."""
    import moto.backends as backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication as Dispatcher

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    original = Dispatcher.get_backend_for_host
    known = {}

    def get_backend_for_host(self, host):
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    Dispatcher.get_backend_for_host = get_backend_for_host


cheap_transaction_rollback()
linear_sqs()
partition_query()
cached_routing()
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
