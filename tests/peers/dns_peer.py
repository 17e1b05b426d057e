"""A DNS server (dnslib) for the gateway's discovery tests.

`serve`: answers on UDP and TCP on 127.0.0.1, on an ephemeral port printed on the first line
of stdout, until stdin closes. Each line read from stdin sets the records: a JSON object of
name to a list of IPv4 addresses, `{"app.test": ["127.0.0.2", "127.0.0.3"]}`; each is
answered with a TTL of 1 second, an unknown name with NXDOMAIN. Each line is acknowledged
with `ok` on stdout once it is in force.
"""

import json
import sys
import threading

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

records = {}
lock = threading.Lock()


class Resolver(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        with lock:
            addresses = records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=1))
        return reply


class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def main():
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: dns_peer.py serve")
    # One port for both: the ephemeral port picked for UDP may be taken for TCP by a test
    # running beside this one, so another is tried then.
    for _ in range(50):
        udp = DNSServer(Resolver(), port=0, address="127.0.0.1", logger=Quiet())
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(Resolver(), port=port, address="127.0.0.1", tcp=True, logger=Quiet())
            break
        except OSError:
            udp.server.server_close()
    else:
        sys.exit("no port free for both UDP and TCP")
    udp.start_thread()
    tcp.start_thread()
    print(port, flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        with lock:
            records.clear()
            records.update(json.loads(line))
        print("ok", flush=True)


if __name__ == "__main__":
    main()
