"""Unit tests, run natively: fakes stand in for the host's request and response."""

import unittest

from componentize_py_types import Err
from wit_world.imports import http

import app


class FakeMessage:
    """A request or response as the host lends it: headers with lower-case names."""

    def __init__(self, headers=()):
        self.headers = [(n.lower(), v) for n, v in headers]

    def header(self, name):
        return next((v for n, v in self.headers if n == name.lower()), None)

    def header_values(self, name):
        return [v for n, v in self.headers if n == name.lower()]

    def set_header(self, name, value):
        if "\r" in value or "\n" in value:
            raise Err(http.ErrorCode.INVALID_VALUE)
        self.headers = [(n, v) for n, v in self.headers if n != name.lower()]
        self.headers.append((name.lower(), value))


class HandlerTest(unittest.TestCase):
    def refused_key(self, config):
        with self.assertRaises(Err) as caught:
            app.Handler().init(config)
        return caught.exception.value.key

    def test_sets_the_header_both_ways(self):
        plugin = app.Handler()
        registration = plugin.init('{"header": "X-Hello", "value": "world"}')
        self.assertTrue(registration.on_request and registration.on_response)
        self.assertFalse(registration.request_body or registration.response_body)

        req = FakeMessage([("X-Hello", "from the client")])
        self.assertIsInstance(plugin.on_request(req), http.Decision_Continue)
        self.assertEqual(req.header_values("x-hello"), ["world"])

        resp = FakeMessage()
        self.assertIsInstance(plugin.on_response(req, resp), http.Decision_Continue)
        self.assertEqual(resp.header("x-hello"), "world")

    def test_the_header_name_defaults_to_x_hello(self):
        plugin = app.Handler()
        plugin.init('{"value": "v"}')
        req = FakeMessage()
        plugin.on_request(req)
        self.assertEqual(req.header("x-hello"), "v")

    def test_refuses_bad_configs_naming_the_key(self):
        self.assertEqual(self.refused_key("{}"), "value")
        self.assertEqual(self.refused_key('{"value": 7}'), "value")
        self.assertEqual(self.refused_key('{"value": "a\\r\\nb"}'), "value")
        self.assertEqual(self.refused_key('{"header": "", "value": "v"}'), "header")
        self.assertEqual(self.refused_key('{"header": "a b", "value": "v"}'), "header")
        self.assertEqual(self.refused_key('{"header": "Content-Length", "value": "1"}'), "header")
        self.assertEqual(self.refused_key('{"header": "Proxy-Authorization", "value": "1"}'), "header")
        self.assertEqual(self.refused_key('{"value": "v", "extra": 1}'), "extra")
        self.assertIsNone(self.refused_key("[1]"))
        self.assertIsNone(self.refused_key("{not json"))

    def test_a_refused_host_call_is_a_plugin_error(self):
        plugin = app.Handler()
        plugin.init('{"value": "v"}')
        app.settings = ("x-hello", "bad\r\nvalue")
        with self.assertRaises(Err) as caught:
            plugin.on_request(FakeMessage())
        self.assertIsInstance(caught.exception.value, str)


if __name__ == "__main__":
    unittest.main()
