"""A real SOAP service for the transform plugin's end-to-end tests, built with spyne.

One service (namespace ORDERS_NS) is served twice: SOAP 1.1 under /soap11/ and SOAP 1.2 under
/soap12/ (any path below those, so each gateway route can have a path of its own; the service
dispatches on the Body's element, not the path). GET /calls answers how many requests reached
the SOAP endpoints, so a test can show that the gateway did not forward one.

Operations:
- CreateOrder(customer, items*, tags*, note, express): echoes them back as an Order,
  with an id, the item count and the total computed here (so the answer is not a copy of the
  request text), and nested complex types and repeated elements both ways.
- Echo(text): returns text unchanged (for hostile strings).
- RejectOrder(reason): raises a Client fault, whose string is the reason.
- FailOrder(): raises a Server fault.

Binds 127.0.0.1 on an ephemeral port and prints the port on stdout. Exits when stdin closes,
so it dies with the test that started it.
"""

import logging
import os
import sys
import threading
from decimal import Decimal as D
from wsgiref.simple_server import WSGIRequestHandler, make_server

from spyne import (
    Application,
    Boolean,
    ComplexModel,
    Decimal,
    Fault,
    Integer,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.protocol.soap import Soap11, Soap12
from spyne.server.wsgi import WsgiApplication

ORDERS_NS = "http://example.com/orders"


class Address(ComplexModel):
    __namespace__ = ORDERS_NS
    street = Unicode
    city = Unicode
    zip = Unicode


class Customer(ComplexModel):
    __namespace__ = ORDERS_NS
    name = Unicode
    email = Unicode
    address = Address


class Item(ComplexModel):
    __namespace__ = ORDERS_NS
    sku = Unicode
    quantity = Integer
    price = Decimal


class Order(ComplexModel):
    __namespace__ = ORDERS_NS
    id = Unicode
    customer = Customer
    items = Item.customize(max_occurs="unbounded")
    tags = Unicode(max_occurs="unbounded")
    note = Unicode
    express = Boolean
    item_count = Integer
    total = Decimal


class OrderService(ServiceBase):
    @rpc(
        Customer,
        Item.customize(max_occurs="unbounded"),
        Unicode(max_occurs="unbounded"),
        Unicode,
        Boolean,
        _returns=Order,
    )
    def CreateOrder(ctx, customer, items, tags, note, express):
        items = list(items or [])
        total = sum(((i.price or D(0)) * (i.quantity or 0) for i in items), D(0))
        return Order(
            id="ord-%d" % (len(items) * 1000 + len(tags or [])),
            customer=customer,
            items=items,
            tags=list(tags or []),
            note=note,
            express=express,
            item_count=len(items),
            total=total,
        )

    @rpc(Unicode, _returns=Unicode)
    def Echo(ctx, text):
        return text

    @rpc(Unicode)
    def RejectOrder(ctx, reason):
        raise Fault(faultcode="Client.InvalidOrder", faultstring=reason)

    @rpc()
    def FailOrder(ctx):
        raise Fault(faultcode="Server", faultstring="the order database is down")


def soap_app(name, protocol):
    app = Application(
        [OrderService],
        tns=ORDERS_NS,
        name=name,
        in_protocol=protocol(validator="lxml"),
        out_protocol=protocol(),
    )
    return WsgiApplication(app)


class Service:
    def __init__(self):
        self.mounts = {
            "soap11": soap_app("Orders11", Soap11),
            "soap12": soap_app("Orders12", Soap12),
        }
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/calls":
            with self.lock:
                body = str(self.calls).encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        app = self.mounts.get(path.strip("/").split("/")[0])
        if app is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such service\n"]
        with self.lock:
            self.calls += 1
        return app(environ, start_response)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    # Faults are the service's answers here, not its errors: keep their tracebacks quiet.
    logging.getLogger("spyne").setLevel(logging.CRITICAL)
    server = make_server("127.0.0.1", 0, Service(), handler_class=QuietHandler)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
