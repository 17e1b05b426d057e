import json
import time
import unittest

import rules
from rules import ConfigError, Validator


class FakeRequest:
    """Stands in for the host's request resource (the same method names)."""

    def __init__(self, method="GET", query=None, headers=(), body=b""):
        self._method = method
        self._query = query
        self._headers = [(n.lower(), v) for n, v in headers]
        self._body = body
        self.body_reads = 0

    def method(self):
        return self._method

    def query(self):
        return self._query

    def header(self, name):
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name):
        return [v for n, v in self._headers if n == name.lower()]

    def body(self):
        self.body_reads += 1
        return self._body


SAMPLE = {
    "query": {
        "page": {"type": "integer", "minimum": 1, "maximum": 1000},
        "sort": {"enum": ["asc", "desc"]},
        "q": {"required": True, "min_length": 1, "max_length": 100},
    },
    "headers": {"x-api-version": {"required": True, "pattern": "^v[0-9]+$"}},
    "body": {
        "name": {"type": "string", "required": True, "max_length": 64},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "address.zip": {"type": "string", "pattern": "^[0-9]{5}$"},
        "role": {"enum": ["admin", "user"]},
    },
}

GOOD_HEADERS = [("X-Api-Version", "v2"), ("Content-Type", "application/json")]
GOOD_BODY = json.dumps(
    {"name": "Ada", "age": 36, "address": {"zip": "12345"}, "role": "admin"}
).encode()


def validator(config=None):
    return Validator.from_json(json.dumps(SAMPLE if config is None else config))


def summary(violations):
    return sorted((v["in"], v["field"], v["rule"]) for v in violations)


def config_error(config):
    try:
        Validator.from_config(config)
    except ConfigError as e:
        return e.key, e.message
    raise AssertionError(f"config accepted: {config}")


class ConfigTests(unittest.TestCase):
    def test_sample_config_is_accepted_and_asks_for_the_body(self):
        v = validator()
        self.assertTrue(v.needs_body)
        self.assertFalse(validator({"query": {"a": {}}}).needs_body)

    def test_errors_name_the_dotted_key(self):
        cases = [
            ({"query": {"page": {"type": "integer", "minimum": "1"}}}, "query.page.minimum"),
            ({"query": {"page": {"type": "integer", "minimum": 5, "maximum": 1}}}, "query.page.minimum"),
            ({"query": {"page": {"minimum": 1}}}, "query.page.minimum"),
            ({"query": {"page": {"type": "float"}}}, "query.page.type"),
            ({"query": {"page": {"type": "array"}}}, "query.page.type"),
            ({"query": {"page": {"maxlength": 3}}}, "query.page.maxlength"),
            ({"query": {"q": {"max_length": -1}}}, "query.q.max_length"),
            ({"query": {"q": {"max_length": 1.5}}}, "query.q.max_length"),
            ({"query": {"q": {"min_length": 3, "max_length": 2}}}, "query.q.min_length"),
            ({"query": {"q": {"required": "yes"}}}, "query.q.required"),
            ({"query": {"q": {"multiple": 1}}}, "query.q.multiple"),
            ({"query": {"q": "string"}}, "query.q"),
            ({"query": {"q": {"type": "integer", "pattern": "^[0-9]+$"}}}, "query.q.pattern"),
            ({"query": {"q": {"type": "integer", "max_length": 3}}}, "query.q.max_length"),
            ({"query": {"q": {"enum": []}}}, "query.q.enum"),
            ({"query": {"q": {"enum": ["a", 1]}}}, "query.q.enum[1]"),
            ({"query": {"q": {"type": "integer", "enum": [1, True]}}}, "query.q.enum[1]"),
            ({"query": {"q": {"enum": [["a"]]}}}, "query.q.enum[0]"),
            ({"query": []}, "query"),
            ({"headers": {"X-Api": {}}}, "headers.X-Api"),
            ({"headers": {"bad name": {}}}, "headers.bad name"),
            ({"headers": {"x-a": {"pattern": "^(v$"}}}, "headers.x-a.pattern"),
            ({"headers": {"x-a": {"pattern": ""}}}, "headers.x-a.pattern"),
            ({"body": {"a..b": {}}}, "body.a..b"),
            ({"body": {"a": {"multiple": True}}}, "body.a.multiple"),
            ({"body": {"a": {"max_length": 3}}}, "body.a.max_length"),
            ({"body": {"a": {"type": "integer", "maximum": float("inf")}}}, "body.a.maximum"),
            ({"body": {"a": {"type": "integer", "maximum": True}}}, "body.a.maximum"),
            ({"body": {"a": {}}, "body_methods": []}, "body_methods"),
            ({"body": {"a": {}}, "body_methods": ["post"]}, "body_methods[0]"),
            ({"query": {"a": {}}, "body_methods": ["POST"]}, "body_methods"),
            ({"body": {"a": {}}, "max_depth": 0}, "max_depth"),
            ({"body": {"a": {}}, "max_depth": 1000}, "max_depth"),
            ({"query": {"a": {}}, "echo_values": "no"}, "echo_values"),
            ({"query": {"a": {}}, "querry": {}}, "querry"),
        ]
        for config, key in cases:
            with self.subTest(key=key):
                got, message = config_error(config)
                self.assertEqual(got, key, message)
                self.assertTrue(message)

    def test_config_without_rules_or_not_a_table_is_refused(self):
        self.assertEqual(config_error({})[0], None)
        self.assertEqual(config_error([1])[0], None)
        with self.assertRaises(ConfigError):
            Validator.from_json("{not json")

    def test_pattern_is_compiled_once(self):
        v = validator({"headers": {"x-a": {"pattern": "^a+$"}}})
        self.assertIsNotNone(v.headers[0].pattern.fullmatch("aaa"))


class QueryTests(unittest.TestCase):
    def check(self, query, config=None):
        return validator(config or {"query": SAMPLE["query"]}).validate(FakeRequest(query=query))

    def test_valid_query_passes(self):
        self.assertEqual(self.check("page=3&sort=asc&q=rust"), [])
        self.assertEqual(self.check("q=a&other=anything&page=1000"), [])

    def test_every_violation_is_reported(self):
        got = self.check("page=1001&sort=up")
        self.assertEqual(
            summary(got),
            [("query", "page", "maximum"), ("query", "q", "required"), ("query", "sort", "enum")],
        )
        page = next(v for v in got if v["field"] == "page")
        self.assertEqual(page["message"], "must be at most 1000")
        self.assertNotIn("value", page)

    def test_missing_query_string(self):
        self.assertEqual(summary(self.check(None)), [("query", "q", "required")])

    def test_integers_parse_strictly(self):
        for text in ["1.0", "1e3", "+5", " 5", "5 ", "0x10", "1_000", "٣", "abc", "", "NaN"]:
            with self.subTest(text=text):
                self.assertEqual(
                    summary(self.check(f"q=a&page={text}")), [("query", "page", "type")]
                )
        self.assertEqual(self.check("q=a&page=0007"), [])
        self.assertEqual(summary(self.check("q=a&page=-1")), [("query", "page", "minimum")])

    def test_huge_numbers(self):
        self.assertEqual(
            summary(self.check("q=a&page=" + "9" * 400)), [("query", "page", "maximum")]
        )
        # More digits than CPython converts: a type violation, not an exception.
        self.assertEqual(summary(self.check("q=a&page=" + "9" * 5000)), [("query", "page", "type")])
        cfg = {"query": {"n": {"type": "number", "maximum": 10}}}
        self.assertEqual(summary(self.check("n=1e400", cfg)), [("query", "n", "type")])
        for text in ["NaN", "nan", "Infinity", "inf", "-inf"]:
            self.assertEqual(summary(self.check(f"n={text}", cfg)), [("query", "n", "type")])
        self.assertEqual(self.check("n=2.5", cfg), [])
        self.assertEqual(self.check("n=-1e3", cfg), [])
        self.assertEqual(summary(self.check("n=10.5", cfg)), [("query", "n", "maximum")])

    def test_booleans(self):
        cfg = {"query": {"b": {"type": "boolean", "enum": [True]}}}
        self.assertEqual(self.check("b=true", cfg), [])
        self.assertEqual(summary(self.check("b=false", cfg)), [("query", "b", "enum")])
        for text in ["1", "True", "yes", ""]:
            self.assertEqual(summary(self.check(f"b={text}", cfg)), [("query", "b", "type")])

    def test_percent_encoding_is_decoded(self):
        # The name is decoded too, so an encoded name does not slip past its rule.
        self.assertEqual(
            summary(self.check("q=a&pa%67e=5000")), [("query", "page", "maximum")]
        )
        self.assertEqual(self.check("q=hello+world&sort=%61sc"), [])
        cfg = {"query": {"q": {"pattern": "^[a-z ]+$"}}}
        self.assertEqual(self.check("q=hello+world", cfg), [])
        self.assertEqual(self.check("q=hello%20world", cfg), [])
        self.assertEqual(summary(self.check("q=a%2Bb", cfg)), [("query", "q", "pattern")])

    def test_lengths_count_characters_after_decoding(self):
        cfg = {"query": {"q": {"max_length": 2}}}
        self.assertEqual(self.check("q=%C3%A9%C3%A9", cfg), [])
        self.assertEqual(summary(self.check("q=%C3%A9%C3%A9%C3%A9", cfg)), [("query", "q", "max_length")])
        cfg = {"query": {"q": {"required": True, "min_length": 1}}}
        self.assertEqual(summary(self.check("q=", cfg)), [("query", "q", "min_length")])
        self.assertEqual(summary(self.check("q", cfg)), [("query", "q", "min_length")])

    def test_invalid_utf8_after_decoding(self):
        self.assertEqual(summary(self.check("q=%FF%FE")), [("query", "q", "encoding")])
        # An undecodable name is not a configured one.
        self.assertEqual(self.check("q=a&%FF=1"), [])

    def test_repeated_parameters(self):
        self.assertEqual(summary(self.check("q=a&page=1&page=5000")), [("query", "page", "multiple")])
        self.assertEqual(summary(self.check("q=a&page=1&page=1")), [("query", "page", "multiple")])
        cfg = {"query": {"tag": {"multiple": True, "enum": ["a", "b"]}}}
        self.assertEqual(self.check("tag=a&tag=b", cfg), [])
        got = self.check("tag=a&tag=c&tag=d", cfg)
        self.assertEqual(summary(got), [("query", "tag", "enum"), ("query", "tag", "enum")])

    def test_odd_separators(self):
        self.assertEqual(self.check("&&q=a&&page=2&"), [])
        self.assertEqual(summary(self.check("q=a;page=5000")), [])
        self.assertEqual(self.check("q=a=b"), [])

    def test_pattern_is_anchored(self):
        cfg = {"query": {"v": {"pattern": "v[0-9]+"}}}
        self.assertEqual(self.check("v=v1", cfg), [])
        for text in ["xv1", "v1x", "v1%0A", "v%D9%A3"]:
            with self.subTest(text=text):
                self.assertEqual(summary(self.check(f"v={text}", cfg)), [("query", "v", "pattern")])

    def test_pattern_skipped_on_over_long_values(self):
        cfg = {"query": {"v": {"pattern": "^(a+)+$", "max_length": 20}}}
        start = time.monotonic()
        got = self.check("v=" + "a" * 5000 + "b", cfg)
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertEqual(summary(got), [("query", "v", "max_length")])


class HeaderTests(unittest.TestCase):
    CFG = {
        "headers": {
            "x-api-version": {"required": True, "pattern": "^v[0-9]+$"},
            "x-count": {"type": "integer", "maximum": 10},
        }
    }

    def check(self, headers, cfg=None):
        return validator(cfg or self.CFG).validate(FakeRequest(headers=headers))

    def test_valid_headers_pass(self):
        self.assertEqual(self.check([("X-API-Version", "v1"), ("x-count", "3")]), [])

    def test_violations_never_echo_header_values(self):
        v = validator(dict(self.CFG, echo_values=True))
        got = v.validate(FakeRequest(headers=[("x-api-version", "secret-token"), ("x-count", "99")]))
        self.assertEqual(
            summary(got),
            [("header", "x-api-version", "pattern"), ("header", "x-count", "maximum")],
        )
        self.assertNotIn("secret-token", rules.error_body(got).decode())
        for violation in got:
            self.assertNotIn("value", violation)

    def test_missing_and_repeated(self):
        self.assertEqual(summary(self.check([])), [("header", "x-api-version", "required")])
        got = self.check([("x-api-version", "v1"), ("x-api-version", "v2")])
        self.assertEqual(summary(got), [("header", "x-api-version", "multiple")])


class BodyTests(unittest.TestCase):
    def check(self, body, method="POST", content_type="application/json", cfg=None):
        headers = [("content-type", content_type)] if content_type else []
        req = FakeRequest(method=method, headers=headers, body=body)
        return validator(cfg or {"body": SAMPLE["body"]}).validate(req)

    def test_valid_body_passes(self):
        self.assertEqual(self.check(GOOD_BODY), [])
        self.assertEqual(self.check(b'{"name":"x"}'), [])
        self.assertEqual(self.check(b'{"name":"x"}', content_type="application/problem+json"), [])
        self.assertEqual(self.check(b'{"name":"x"}', content_type="Application/JSON; charset=UTF-8"), [])

    def test_every_violation_is_reported(self):
        body = json.dumps(
            {"name": "x" * 65, "age": 151, "address": {"zip": "1234"}, "role": "root"}
        ).encode()
        self.assertEqual(
            summary(self.check(body)),
            [
                ("body", "address.zip", "pattern"),
                ("body", "age", "maximum"),
                ("body", "name", "max_length"),
                ("body", "role", "enum"),
            ],
        )
        self.assertEqual(summary(self.check(b"{}")), [("body", "name", "required")])

    def test_types_are_strict(self):
        cases = [
            (b'{"name":"a","age":true}', "type"),
            (b'{"name":"a","age":36.0}', "type"),
            (b'{"name":"a","age":"36"}', "type"),
            (b'{"name":"a","age":null}', "type"),
            (b'{"name":"a","age":1e400}', "type"),
            (b'{"name":"a","age":-1}', "minimum"),
            (b'{"name":"a","age":' + b"9" * 300 + b"}", "maximum"),
        ]
        for body, rule in cases:
            with self.subTest(body=body[:40]):
                self.assertEqual(summary(self.check(body)), [("body", "age", rule)])
        self.assertEqual(summary(self.check(b'{"name":1}')), [("body", "name", "type")])
        self.assertEqual(summary(self.check(b'{"name":"a","role":1}')), [("body", "role", "enum")])
        self.assertEqual(summary(self.check(b'{"name":"a","address":"12345"}')), [])

    def test_enum_does_not_confuse_true_with_one(self):
        cfg = {"body": {"flag": {"enum": [1, "x", None]}}}
        self.assertEqual(summary(self.check(b'{"flag":true}', cfg=cfg)), [("body", "flag", "enum")])
        self.assertEqual(self.check(b'{"flag":1.0}', cfg=cfg), [])
        self.assertEqual(self.check(b'{"flag":null}', cfg=cfg), [])

    def test_json_types(self):
        cfg = {
            "body": {
                "a": {"type": "array", "min_length": 1, "max_length": 2},
                "o": {"type": "object"},
                "n": {"type": "null"},
                "f": {"type": "number", "minimum": 0.5},
                "b": {"type": "boolean"},
            }
        }
        ok = b'{"a":[1],"o":{},"n":null,"f":0.5,"b":false}'
        self.assertEqual(self.check(ok, cfg=cfg), [])
        bad = b'{"a":[1,2,3],"o":[],"n":0,"f":0.25,"b":0}'
        self.assertEqual(
            summary(self.check(bad, cfg=cfg)),
            [
                ("body", "a", "max_length"),
                ("body", "b", "type"),
                ("body", "f", "minimum"),
                ("body", "n", "type"),
                ("body", "o", "type"),
            ],
        )
        self.assertEqual(summary(self.check(b'{"a":[]}', cfg=cfg)), [("body", "a", "min_length")])

    def test_body_that_is_not_a_json_object(self):
        for body in [b"", b"  ", b"[]", b'"x"', b"42", b"null", b"{", b'{"name":"a",}', b"\xff\xfe{}",
                     b'\xef\xbb\xbf{"name":"a"}', b'{"name":NaN}', b'{"name":"a","age":Infinity}',
                     b'{"name":"a","age":-Infinity}', b"{'name':'a'}", b'{"name":"a"} x']:
            with self.subTest(body=body):
                got = self.check(body)
                self.assertEqual(summary(got), [("body", None, "json")], got)

    def test_duplicate_keys_are_refused(self):
        got = self.check(b'{"name":"a","age":5,"age":500}')
        self.assertEqual(summary(got), [("body", None, "json")])
        self.assertIn("duplicate", got[0]["message"])
        got = self.check(b'{"name":"a","address":{"zip":"12345","zip":"x"}}')
        self.assertEqual(summary(got), [("body", None, "json")])

    def test_wrong_content_type(self):
        for ct in [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx",
                   "application/json; charset=latin-1", "multipart/form-data; boundary=x"]:
            with self.subTest(ct=ct):
                got = self.check(GOOD_BODY, content_type=ct)
                self.assertEqual(summary(got), [("body", None, "content_type")])

    def test_body_rules_apply_to_body_methods_only(self):
        req = FakeRequest(method="GET", body=b"not json")
        self.assertEqual(validator({"body": SAMPLE["body"]}).validate(req), [])
        self.assertEqual(req.body_reads, 0)
        for method in ["POST", "PUT", "PATCH"]:
            self.assertEqual(summary(self.check(b"{}", method=method)), [("body", "name", "required")])
        cfg = {"body": SAMPLE["body"], "body_methods": ["DELETE"]}
        self.assertEqual(self.check(b"[]", method="POST", cfg=cfg), [])
        self.assertEqual(summary(self.check(b"[]", method="DELETE", cfg=cfg)), [("body", None, "json")])

    def test_deep_nesting_is_refused_before_parsing(self):
        for body in [b"[" * 100000 + b"]" * 100000, b"[" * 100000, b'{"a":' * 50000 + b"1" + b"}" * 50000,
                     b"[{" * 50000]:
            with self.subTest(body=body[:10]):
                got = self.check(body)
                self.assertEqual(summary(got), [("body", None, "json")])
        deep = b'{"name":"a","x":' + b"[" * 40 + b"]" * 40 + b"}"
        got = self.check(deep)
        self.assertIn("deeper than 32", got[0]["message"])
        shallow = b'{"name":"a","x":' + b"[" * 30 + b"]" * 30 + b"}"
        self.assertEqual(self.check(shallow), [])

    def test_brackets_inside_strings_do_not_count(self):
        cfg = {"body": {"name": {"type": "string"}}}
        body = json.dumps({"name": "[" * 1000 + '\\"{' * 100, "x": [[]] * 1000}).encode()
        self.assertEqual(self.check(body, cfg=cfg), [])
        # Strings that span the scan's 64 KiB slices, around real nesting.
        for pad in [0, 1, 65535, 65536, 70000]:
            body = json.dumps(
                {"pad": "x" * pad, "name": "[{" * 100_000, "x": [[]] * 100, "y": "]}" * 50_000}
            ).encode()
            self.assertEqual(self.check(body, cfg=cfg), [], pad)
            deep = body[:-1] + b',"z":' + b"[" * 33 + b"]" * 33 + b"}"
            self.assertEqual(summary(self.check(deep, cfg=cfg)), [("body", None, "json")], pad)
        # An unclosed string cannot hide brackets from the check.
        body = b'{"name":"a","x":"' + b"[" * 1000
        self.assertEqual(summary(self.check(body)), [("body", None, "json")])

    def test_nesting_check_counts_levels_exactly(self):
        for depth in [1, 2, 5, 31, 32, 33, 64]:
            for shape in (b"[", b"{\"k\":"):
                close = b"]" if shape == b"[" else b"}"
                text = shape * depth + b"0" + close * depth
                want = "ok" if depth <= 32 else "deep"
                self.assertEqual(rules._json_nesting(text, 32), want, (depth, shape))
        self.assertEqual(rules._json_nesting(b"]" + b"[]" * 50, 32), "unbalanced")
        self.assertEqual(rules._json_nesting(b"[" * 50, 32), "unbalanced")
        self.assertEqual(rules._json_nesting(b"[]" * 100, 1), "ok")

    def test_non_utf8_and_surrogates(self):
        got = self.check(b'{"name":"\xc3\x28"}')
        self.assertEqual(got[0]["message"], "body is not valid UTF-8")
        cfg = {"body": {"name": {"type": "string", "pattern": "^[a-z]+$"}}, "echo_values": True}
        got = self.check(b'{"name":"\\ud800"}', cfg=cfg)
        self.assertEqual(summary(got), [("body", "name", "pattern")])
        json.loads(rules.error_body(got))

    def test_missing_intermediate_objects(self):
        cfg = {"body": {"a.b.c": {"required": True, "type": "integer"}}}
        for body in [b"{}", b'{"a":1}', b'{"a":{"b":[]}}', b'{"a":{"b":{}}}']:
            self.assertEqual(summary(self.check(body, cfg=cfg)), [("body", "a.b.c", "required")])
        self.assertEqual(self.check(b'{"a":{"b":{"c":3}}}', cfg=cfg), [])


class ResponseTests(unittest.TestCase):
    def test_echo_values_is_off_by_default(self):
        got = validator({"query": {"q": {"max_length": 1}}}).validate(FakeRequest(query="q=abc"))
        self.assertEqual(got[0], {"in": "query", "field": "q", "rule": "max_length",
                                  "message": "must be at most 1 characters long"})

    def test_echo_values_echoes_scalars_cut_short(self):
        cfg = {
            "query": {"q": {"max_length": 1}, "r": {"required": True}},
            "body": {"s": {"type": "string", "max_length": 1}, "o": {"type": "integer"},
                     "n": {"type": "integer", "maximum": 1}, "big": {"type": "integer", "maximum": 1}},
            "echo_values": True,
        }
        req = FakeRequest(
            method="POST",
            query="q=abc",
            headers=[("content-type", "application/json")],
            body=json.dumps({"s": "x" * 200, "o": {"k": 1}, "n": 5, "big": 10**30}).encode(),
        )
        got = {v["field"]: v for v in validator(cfg).validate(req)}
        self.assertEqual(got["q"]["value"], "abc")
        self.assertNotIn("value", got["r"])
        self.assertEqual(got["s"]["value"], "x" * 64 + "…")
        self.assertNotIn("value", got["o"])
        self.assertEqual(got["n"]["value"], 5)
        self.assertNotIn("value", got["big"])

    def test_error_body_shape(self):
        got = validator({"query": {"q": {"required": True}}}).validate(FakeRequest())
        body = json.loads(rules.error_body(got))
        self.assertEqual(
            body,
            {"error": "validation_failed", "violations": [
                {"in": "query", "field": "q", "rule": "required", "message": "is required"}]},
        )

    def test_violations_are_capped(self):
        cfg = {"query": {"t": {"multiple": True, "enum": ["a"]}}}
        got = validator(cfg).validate(FakeRequest(query="&".join(["t=b"] * 500)))
        self.assertEqual(len(got), rules.MAX_VIOLATIONS)


if __name__ == "__main__":
    unittest.main()
