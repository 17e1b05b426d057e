"""A JWKS endpoint for jwt-auth's end-to-end tests, on the standard library only.

`serve`: answers HTTP on 127.0.0.1, on an ephemeral port printed on the first line of stdout,
until stdin closes (or it is killed):

    GET /jwks.json   the JWK set in force (`{"keys": []}` until one is set), after its delay
    PUT /control     sets the JWK set and the delay: {"jwks": {"keys": [...]}, "delay_ms": 0}
    GET /control     {"jwks_requests": N}: the GETs of /jwks.json received so far

Anything else is a 404. Nothing is printed after the port.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"jwks": {"keys": []}, "delay_ms": 0, "jwks_requests": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/jwks.json":
            with lock:
                state["jwks_requests"] += 1
                jwks, delay_ms = state["jwks"], state["delay_ms"]
            time.sleep(delay_ms / 1000)
            self.answer(200, jwks)
        elif self.path == "/control":
            with lock:
                self.answer(200, {"jwks_requests": state["jwks_requests"]})
        else:
            self.answer(404, {"error": "not found"})

    def do_PUT(self):
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/control":
            self.answer(404, {"error": "not found"})
            return
        with lock:
            state["jwks"] = request["jwks"]
            state["delay_ms"] = request.get("delay_ms", 0)
        self.answer(200, {"ok": True})

    def log_message(self, format, *args):
        pass


def main():
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: jwks_server.py serve")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
