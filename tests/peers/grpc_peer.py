"""A gRPC service and client (grpcio) for the gateway's end-to-end tests.

`serve`: a service `wasmgate.test.Echo` with one method of each streaming shape, on an
ephemeral port (printed on the first line of stdout), until stdin closes. Messages are raw
bytes, so no generated code is needed.

`call TARGET`: calls each method through TARGET and prints what came back as JSON.
`unary TARGET MESSAGE`: one unary call; prints its code, details and reply as JSON.
With `--ca FILE --name NAME`, the client speaks TLS and checks the certificate for NAME.
"""

import json
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "wasmgate.test.Echo"
peers = set()
peers_lock = threading.Lock()


def seen(context):
    with peers_lock:
        peers.add(context.peer())


def unary(request, context):
    seen(context)
    if request == b"fail":
        context.set_trailing_metadata((("x-detail", "gone"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"peers":
        with peers_lock:
            return json.dumps(sorted(peers)).encode()
    context.set_trailing_metadata((("x-served-by", "grpcio"),))
    return b"echo:" + request


def server_stream(request, context):
    seen(context)
    for i in range(int(request)):
        yield b"%d" % i


def client_stream(requests, context):
    seen(context)
    return b"+".join(requests)


def bidi(requests, context):
    seen(context)
    for r in requests:
        yield r.upper()


def serve(args):
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def channel(target, args):
    if "--ca" in args:
        ca = open(args[args.index("--ca") + 1], "rb").read()
        name = args[args.index("--name") + 1]
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        return grpc.secure_channel(
            target, creds, options=(("grpc.ssl_target_name_override", name),)
        )
    return grpc.insecure_channel(target)


def method(ch, name, shape):
    path = f"/{SERVICE}/{name}"
    return getattr(ch, shape)(path)


def trailing(call):
    return {k: v for k, v in (call.trailing_metadata() or ())}


def call_all(target, args):
    ch = channel(target, args)
    out = {}
    reply, call = method(ch, "Unary", "unary_unary").with_call(b"hi", timeout=10)
    out["unary"] = {
        "reply": reply.decode(),
        "code": call.code().name,
        "trailing": trailing(call),
    }
    try:
        method(ch, "Unary", "unary_unary").with_call(b"fail", timeout=10)
        out["fail"] = "succeeded"
    except grpc.RpcError as e:
        out["fail"] = {
            "code": e.code().name,
            "details": e.details(),
            "trailing": trailing(e),
        }
    stream = method(ch, "ServerStream", "unary_stream")(b"50", timeout=10)
    out["server_stream"] = [m.decode() for m in stream]
    out["server_stream_code"] = stream.code().name
    sent = (b"part%d" % i for i in range(20))
    out["client_stream"] = method(ch, "ClientStream", "stream_unary")(
        sent, timeout=10
    ).decode()
    # Each message waits for the answer to the last: both directions stream at once.
    bidi_call = method(ch, "Bidi", "stream_stream")
    requests = BidiRequests()
    responses = bidi_call(iter(requests), timeout=10)
    got = []
    for i in range(30):
        requests.send(b"m%d" % i)
        got.append(next(responses).decode())
    requests.close()
    out["bidi"] = got
    out["bidi_rest"] = [m.decode() for m in responses]
    # Many calls at once share the gateway's connections to the service.
    unary_call = method(ch, "Unary", "unary_unary")
    calls = [unary_call.future(b"c%d" % i, timeout=10) for i in range(64)]
    out["concurrent"] = sorted(c.result().decode() for c in calls)
    out["peers"] = json.loads(unary_call(b"peers", timeout=10))
    print(json.dumps(out))


class BidiRequests:
    """Requests handed to grpcio one at a time, as the test sends them."""

    def __init__(self):
        self.cond = threading.Condition()
        self.queue = []
        self.closed = False

    def send(self, m):
        with self.cond:
            self.queue.append(m)
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()

    def __iter__(self):
        while True:
            with self.cond:
                while not self.queue and not self.closed:
                    self.cond.wait()
                if self.queue:
                    m = self.queue.pop(0)
                else:
                    return
            yield m


def call_unary(target, message, args):
    ch = channel(target, args)
    try:
        reply, call = method(ch, "Unary", "unary_unary").with_call(
            message.encode(), timeout=10
        )
        out = {"code": call.code().name, "reply": reply.decode(), "details": None}
    except grpc.RpcError as e:
        out = {"code": e.code().name, "reply": None, "details": e.details()}
    print(json.dumps(out))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2:])
    elif mode == "call":
        call_all(sys.argv[2], sys.argv[3:])
    elif mode == "unary":
        call_unary(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(f"unknown mode {mode}")
