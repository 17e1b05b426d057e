import json
import unittest

from componentize_py_types import Err
from wit_world.imports import http

import app
from test_rules import FakeRequest


class HandlerTests(unittest.TestCase):
    def test_init_registers_the_request_body_only_with_body_rules(self):
        reg = app.Handler().init(json.dumps({"query": {"q": {}}}))
        self.assertEqual(
            (reg.on_request, reg.on_response, reg.request_body, reg.response_body),
            (True, False, False, False),
        )
        reg = app.Handler().init(json.dumps({"body": {"a": {}}}))
        self.assertTrue(reg.request_body)

    def test_bad_config_is_a_config_error_naming_the_key(self):
        with self.assertRaises(Err) as caught:
            app.Handler().init(json.dumps({"query": {"page": {"type": "integer", "minimum": "x"}}}))
        self.assertEqual(caught.exception.value.key, "query.page.minimum")
        self.assertIn("number", caught.exception.value.message)

    def test_valid_request_continues(self):
        app.Handler().init(json.dumps({"query": {"q": {"required": True}}}))
        got = app.Handler().on_request(FakeRequest(query="q=1"))
        self.assertIsInstance(got, http.Decision_Continue)

    def test_invalid_request_gets_422_json(self):
        app.Handler().init(json.dumps({"query": {"q": {"required": True}}}))
        got = app.Handler().on_request(FakeRequest(query="x=1"))
        self.assertIsInstance(got, http.Decision_Respond)
        self.assertEqual(got.value.status, 422)
        self.assertEqual(got.value.headers, [("content-type", "application/json")])
        body = json.loads(got.value.body)
        self.assertEqual(body["error"], "validation_failed")
        self.assertEqual(body["violations"][0]["rule"], "required")

    def test_host_errors_become_plugin_errors_with_a_string(self):
        class Refusing(FakeRequest):
            def body(self):
                raise Err(http.ErrorCode.BODY_TOO_LARGE)

        app.Handler().init(json.dumps({"body": {"a": {}}}))
        req = Refusing(method="POST", headers=[("content-type", "application/json")])
        with self.assertRaises(Err) as caught:
            app.Handler().on_request(req)
        self.assertIsInstance(caught.exception.value, str)


if __name__ == "__main__":
    unittest.main()
