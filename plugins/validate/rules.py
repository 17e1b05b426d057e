"""The rule engine of the validate plugin: config parsing and request checking.

Kept free of the component bindings so that it runs, and is tested, under plain CPython.
"""

import json
import math
import re
from urllib.parse import unquote_plus

SOURCES = ("query", "headers", "body")
TEXT_TYPES = ("string", "integer", "number", "boolean")
BODY_TYPES = TEXT_TYPES + ("array", "object", "null")
RULE_KEYS = (
    "required",
    "type",
    "minimum",
    "maximum",
    "min_length",
    "max_length",
    "pattern",
    "enum",
    "multiple",
)
TOP_KEYS = SOURCES + ("body_methods", "max_depth", "echo_values")
DEFAULT_BODY_METHODS = ("POST", "PUT", "PATCH")
DEFAULT_MAX_DEPTH = 32
MAX_DEPTH_LIMIT = 128
MAX_VIOLATIONS = 100
ECHO_MAX_CHARS = 64

# Text is typed strictly: int() and float() alone would also take spaces, `_`, non-ASCII
# digits, `nan` and `inf`.
_INTEGER_TEXT = re.compile(r"-?[0-9]+", re.ASCII)
_NUMBER_TEXT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Nesting depth does not depend on the kind of bracket (the parser refuses mismatched ones).
_SQUARE = bytes.maketrans(b"{}", b"[]")
_BRACKET_RUNS = re.compile(rb"\[+|\]+")
_SCAN_CHUNK = 64 * 1024


# Marks a violation that is about no value at all (a missing field, the body as a whole).
_NO_VALUE = object()


class ConfigError(Exception):
    """A config the plugin refuses; `key` is the dotted path of the key at fault."""

    def __init__(self, key, message):
        super().__init__(message)
        self.key = key
        self.message = message


def _is_bool(v):
    return isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (_is_int(v) or isinstance(v, float)) and not (
        isinstance(v, float) and not math.isfinite(v)
    )


def _fmt(v):
    """A config value as it appears in a message (config text, never client input)."""
    if _is_bool(v):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e16 else repr(v)
    return str(v)


def _type_matches(kind, v):
    if kind == "string":
        return isinstance(v, str)
    if kind == "integer":
        return _is_int(v)
    if kind == "number":
        return _is_number(v)
    if kind == "boolean":
        return _is_bool(v)
    if kind == "array":
        return isinstance(v, list)
    if kind == "object":
        return isinstance(v, dict)
    return v is None


def _same_value(a, b):
    """JSON equality: `true` is not `1`, but `1` is `1.0`."""
    if _is_bool(a) or _is_bool(b):
        return _is_bool(a) and _is_bool(b) and a == b
    if a is None or b is None:
        return a is None and b is None
    if _is_number(a) and _is_number(b):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


class Rule:
    """The checks for one field, fixed at init."""

    __slots__ = (
        "source",
        "name",
        "path",
        "required",
        "type",
        "minimum",
        "maximum",
        "min_length",
        "max_length",
        "pattern",
        "pattern_text",
        "enum",
        "enum_text",
        "multiple",
        "type_message",
        "messages",
    )

    def __init__(self, source, name, spec, where):
        if not isinstance(spec, dict):
            raise ConfigError(where, "must be a table of rules")
        for k in spec:
            if k not in RULE_KEYS:
                raise ConfigError(
                    f"{where}.{k}", f"unknown rule (expected one of: {', '.join(RULE_KEYS)})"
                )
        self.source = source
        self.name = name
        self.path = tuple(name.split(".")) if source == "body" else None

        self.required = spec.get("required", False)
        if not _is_bool(self.required):
            raise ConfigError(f"{where}.required", "must be true or false")

        self.multiple = spec.get("multiple", False)
        if "multiple" in spec and source == "body":
            raise ConfigError(f"{where}.multiple", "applies to query parameters and headers only")
        if not _is_bool(self.multiple):
            raise ConfigError(f"{where}.multiple", "must be true or false")

        allowed = BODY_TYPES if source == "body" else TEXT_TYPES
        # Query and header values are text, so they are strings unless told otherwise; a body
        # field without a type may hold any JSON value.
        self.type = spec.get("type", None if source == "body" else "string")
        if "type" in spec and self.type not in allowed:
            raise ConfigError(f"{where}.type", f"must be one of: {', '.join(allowed)}")
        self.type_message = _type_message(self.type)

        self.minimum = self._bound(spec, "minimum", where)
        self.maximum = self._bound(spec, "maximum", where)
        if (
            self.minimum is not None
            and self.maximum is not None
            and self.minimum > self.maximum
        ):
            raise ConfigError(f"{where}.minimum", "must not be greater than maximum")

        self.min_length = self._length(spec, "min_length", where)
        self.max_length = self._length(spec, "max_length", where)
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise ConfigError(f"{where}.min_length", "must not be greater than max_length")

        self.pattern = None
        self.pattern_text = None
        if "pattern" in spec:
            text = spec["pattern"]
            if not isinstance(text, str) or not text:
                raise ConfigError(f"{where}.pattern", "must be a non-empty string")
            if self.type != "string":
                raise ConfigError(f"{where}.pattern", 'needs type = "string"')
            try:
                self.pattern = re.compile(text, re.ASCII)
            except (re.error, RecursionError, OverflowError, ValueError) as e:
                raise ConfigError(f"{where}.pattern", f"invalid regular expression: {e}") from None
            self.pattern_text = text

        self.enum = None
        self.enum_text = None
        if "enum" in spec:
            values = spec["enum"]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.enum", "must be a non-empty array")
            for i, v in enumerate(values):
                scalar = v is None or isinstance(v, (str, bool, int, float))
                if not scalar or (isinstance(v, float) and not math.isfinite(v)):
                    raise ConfigError(
                        f"{where}.enum[{i}]", "must be a string, number, boolean or null"
                    )
                if self.type is not None and not _type_matches(self.type, v):
                    raise ConfigError(f"{where}.enum[{i}]", f"must be of type {self.type}")
            self.enum = tuple(values)
            self.enum_text = ", ".join(_fmt(v) for v in values)

        # The messages depend on the config only, so they are built once.
        unit = "items" if self.type == "array" else "characters"
        self.messages = {
            "minimum": f"must be at least {_fmt(self.minimum)}",
            "maximum": f"must be at most {_fmt(self.maximum)}",
            "min_length": f"must be at least {self.min_length} {unit} long",
            "max_length": f"must be at most {self.max_length} {unit} long",
            "pattern": f"must match {self.pattern_text}",
            "enum": f"must be one of: {self.enum_text}",
        }

    def _bound(self, spec, key, where):
        if key not in spec:
            return None
        v = spec[key]
        if not _is_number(v):
            raise ConfigError(f"{where}.{key}", "must be a finite number")
        if self.type not in ("integer", "number"):
            raise ConfigError(f"{where}.{key}", 'needs type = "integer" or "number"')
        return v

    def _length(self, spec, key, where):
        if key not in spec:
            return None
        v = spec[key]
        if not _is_int(v) or v < 0:
            raise ConfigError(f"{where}.{key}", "must be an integer >= 0")
        if self.type not in ("string", "array"):
            raise ConfigError(f"{where}.{key}", 'needs type = "string" or "array"')
        return v

    def check(self, value, out):
        """Appends a violation for every rule `value` breaks; `value` is already typed."""
        if self.type is not None and not _type_matches(self.type, value):
            out.append(self.violation("type", self.type_message, value))
            return
        if _is_number(value):
            if self.minimum is not None and value < self.minimum:
                out.append(self.violation("minimum", value=value))
            if self.maximum is not None and value > self.maximum:
                out.append(self.violation("maximum", value=value))
        too_long = False
        if isinstance(value, (str, list)):
            n = len(value)
            if self.min_length is not None and n < self.min_length:
                out.append(self.violation("min_length", value=value))
            if self.max_length is not None and n > self.max_length:
                too_long = True
                out.append(self.violation("max_length", value=value))
        # An over-long value is not matched: the length rule already refused it, and a
        # backtracking pattern must not get to run on arbitrarily long client input.
        if self.pattern is not None and not too_long and isinstance(value, str):
            if self.pattern.fullmatch(value) is None:
                out.append(self.violation("pattern", value=value))
        if self.enum is not None and not any(_same_value(value, e) for e in self.enum):
            out.append(self.violation("enum", value=value))

    def violation(self, rule, message=None, value=_NO_VALUE):
        return {
            "in": _IN[self.source],
            "field": self.name,
            "rule": rule,
            "message": message or self.messages[rule],
            "_value": value,
        }


_IN = {"query": "query", "headers": "header", "body": "body"}


def _type_message(kind):
    return {
        None: "",
        "string": "must be a string",
        "integer": "must be an integer",
        "number": "must be a finite number",
        "boolean": "must be true or false",
        "array": "must be an array",
        "object": "must be an object",
        "null": "must be null",
    }[kind]


def _from_text(kind, text):
    """Query and header text converted to the rule's type; the text itself when it does not
    parse, so that the type check reports it."""
    if kind == "integer":
        if _INTEGER_TEXT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # more digits than CPython converts
                return text
        return text
    if kind == "number":
        if _NUMBER_TEXT.fullmatch(text):
            if _INTEGER_TEXT.fullmatch(text):
                try:
                    return int(text)
                except ValueError:
                    return text
            v = float(text)
            return v if math.isfinite(v) else text
        return text
    if kind == "boolean":
        if text == "true":
            return True
        if text == "false":
            return False
        return text
    return text


def parse_query(raw):
    """Decoded (name, value) pairs of a query string, in order, as a form decoder sees them
    (`+` is a space). A value that is not UTF-8 once decoded is None."""
    pairs = []
    if not raw:
        return pairs
    for piece in raw.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        try:
            name = unquote_plus(name, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            continue  # never a configured name, which is valid text
        try:
            value = unquote_plus(value, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            value = None
        pairs.append((name, value))
    return pairs


def _json_nesting(body, max_depth):
    """How the JSON text nests: "ok", "deep" or "unbalanced". Found without recursion and in
    C-speed passes over the bytes, so the parser never sees hostile nesting."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return "ok"
    # Brackets inside strings do not nest. Escaped backslashes go first, so that what is left
    # of `\"` is always an escaped quote; then every other piece between quotes is a string.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # In slices, so that a body of many short strings never becomes one list of them all.
    parts = []
    in_string = False
    for start in range(0, len(unescaped), _SCAN_CHUNK):
        pieces = unescaped[start : start + _SCAN_CHUNK].split(b'"')
        outside = b"".join(pieces[1::2] if in_string else pieces[::2])
        parts.append(outside.translate(_SQUARE, _NOT_BRACKETS))
        in_string ^= len(pieces) % 2 == 0
    brackets = b"".join(parts)
    if brackets.count(b"[") * 2 != len(brackets):
        return "unbalanced"
    # Each pass removes the innermost level of every branch: cheap while most brackets are
    # leaves (wide documents), slow on narrow deep ones, which the scan below handles.
    levels = 0
    while brackets and levels < max_depth:
        shorter = brackets.replace(b"[]", b"")
        levels += 1
        narrow = len(shorter) * 4 > len(brackets) * 3
        brackets = shorter
        if narrow:
            break
    if not brackets:
        return "ok"
    depth = 0
    for run in _BRACKET_RUNS.findall(brackets):
        if run[0] == 0x5B:
            depth += len(run)
            if levels + depth > max_depth:
                return "deep"
        else:
            depth -= len(run)
            if depth < 0:
                return "unbalanced"
    return "ok"


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    # Parsers disagree on which duplicate wins, so a duplicate could smuggle a value past the
    # check that the upstream then reads.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey("duplicate object key")
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(body, max_depth):
    """The JSON value of a body, or a message saying why there is none."""
    if not body or body.isspace():
        return None, "body is empty"
    nesting = _json_nesting(body, max_depth)
    if nesting == "deep":
        return None, f"body nests deeper than {max_depth} levels"
    if nesting == "unbalanced":
        return None, "body is not valid JSON (unbalanced brackets)"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not valid UTF-8"
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _DuplicateKey:
        return None, "body has a duplicate object key"
    except json.JSONDecodeError as e:
        return None, f"body is not valid JSON ({e.msg} at char {e.pos})"
    except (ValueError, RecursionError):
        return None, "body is not valid JSON"
    return value, None


def _is_json_media_type(content_type):
    if content_type is None:
        return False
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    main, _, sub = media.partition("/")
    if main != "application" or not (sub == "json" or sub.endswith("+json")):
        return False
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            if val.strip().strip('"').lower() not in ("utf-8", "utf8"):
                return False
    return True


def _lookup(doc, path):
    """The value at a dotted path through nested objects: (found, value)."""
    cur = doc
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _echo(value):
    """The value as it may appear in a violation, or _NO_VALUE when it may not: long text is
    cut, and arrays, objects and numbers too big to read are left out."""
    if isinstance(value, str):
        return value if len(value) <= ECHO_MAX_CHARS else value[:ECHO_MAX_CHARS] + "…"
    if value is None or _is_bool(value):
        return value
    if _is_int(value):
        return value if abs(value) < 10**18 else _NO_VALUE
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _NO_VALUE


class Validator:
    """Every rule of one route's config, compiled once at init."""

    def __init__(self, query, headers, body, body_methods, max_depth, echo_values):
        self.query = query
        self.headers = headers
        self.body = body
        self.body_methods = body_methods
        self.max_depth = max_depth
        self.echo_values = echo_values

    @property
    def needs_body(self):
        return bool(self.body)

    @classmethod
    def from_json(cls, text):
        try:
            config = json.loads(text) if text.strip() else {}
        except (ValueError, RecursionError) as e:
            raise ConfigError(None, f"config is not valid JSON: {e}") from None
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config):
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise ConfigError(None, "config must be a table")
        for k in config:
            if k not in TOP_KEYS:
                raise ConfigError(k, f"unknown key (expected one of: {', '.join(TOP_KEYS)})")

        rules = {}
        for source in SOURCES:
            section = config.get(source, {})
            if not isinstance(section, dict):
                raise ConfigError(source, "must be a table of field names to rules")
            built = []
            for name, spec in section.items():
                where = f"{source}.{name}"
                if not name:
                    raise ConfigError(where, "field name must not be empty")
                if source == "headers":
                    if not _TOKEN.fullmatch(name):
                        raise ConfigError(where, "is not a valid header name")
                    if name != name.lower():
                        raise ConfigError(where, "header names must be lower-case")
                if source == "body" and "" in name.split("."):
                    raise ConfigError(where, "a body path must not have empty segments")
                built.append(Rule(source, name, spec, where))
            rules[source] = tuple(built)
        if not (rules["query"] or rules["headers"] or rules["body"]):
            raise ConfigError(
                None, "config has no rules: give at least one of query, headers, body"
            )

        methods = config.get("body_methods", list(DEFAULT_BODY_METHODS))
        if not isinstance(methods, list) or not methods:
            raise ConfigError("body_methods", "must be a non-empty array of methods")
        for i, m in enumerate(methods):
            if not isinstance(m, str) or not _TOKEN.fullmatch(m) or m != m.upper():
                raise ConfigError(f"body_methods[{i}]", "must be an upper-case HTTP method")
        if "body_methods" in config and not rules["body"]:
            raise ConfigError("body_methods", "has no effect without body rules")

        max_depth = config.get("max_depth", DEFAULT_MAX_DEPTH)
        if not _is_int(max_depth) or not 1 <= max_depth <= MAX_DEPTH_LIMIT:
            raise ConfigError("max_depth", f"must be an integer from 1 to {MAX_DEPTH_LIMIT}")

        echo = config.get("echo_values", False)
        if not _is_bool(echo):
            raise ConfigError("echo_values", "must be true or false")

        return cls(
            rules["query"], rules["headers"], rules["body"], frozenset(methods), max_depth, echo
        )

    def validate(self, req):
        """Every violation of the request, in config order: query, headers, body. `req` has
        the request resource's methods: method, query, header, header_values, body."""
        out = []
        if self.query:
            self._check_query(req.query(), out)
        for rule in self.headers:
            values = req.header_values(rule.name)
            self._check_values(rule, values, out)
        if self.body and req.method().upper() in self.body_methods:
            self._check_body(req, out)
        return self._finish(out)

    def _check_query(self, raw, out):
        by_name = {}
        for name, value in parse_query(raw):
            by_name.setdefault(name, []).append(value)
        for rule in self.query:
            self._check_values(rule, by_name.get(rule.name, ()), out)

    def _check_values(self, rule, values, out):
        if not values:
            if rule.required:
                out.append(rule.violation("required", "is required"))
            return
        if len(values) > 1 and not rule.multiple:
            out.append(rule.violation("multiple", "must be given once"))
            return
        for text in values:
            if text is None:
                out.append(rule.violation("encoding", "must be valid UTF-8 once percent-decoded"))
                continue
            rule.check(_from_text(rule.type, text), out)

    def _check_body(self, req, out):
        if not _is_json_media_type(req.header("content-type")):
            out.append(_body_violation("content_type", "content-type must be application/json"))
            return
        doc, problem = parse_json(req.body(), self.max_depth)
        if problem is not None:
            out.append(_body_violation("json", problem))
            return
        if not isinstance(doc, dict):
            out.append(_body_violation("json", "body must be a JSON object"))
            return
        for rule in self.body:
            found, value = _lookup(doc, rule.path)
            if not found:
                if rule.required:
                    out.append(rule.violation("required", "is required"))
                continue
            rule.check(value, out)

    def _finish(self, out):
        del out[MAX_VIOLATIONS:]
        for v in out:
            value = v.pop("_value")
            # Header values are never echoed: they carry credentials.
            if self.echo_values and v["in"] != "header" and value is not _NO_VALUE:
                echoed = _echo(value)
                if echoed is not _NO_VALUE:
                    v["value"] = echoed
        return out


def _body_violation(rule, message):
    return {"in": "body", "field": None, "rule": rule, "message": message, "_value": _NO_VALUE}


def error_body(violations):
    """The 422 body listing every violation."""
    return json.dumps(
        {"error": "validation_failed", "violations": violations},
        ensure_ascii=True,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("ascii")
