"""`{{name}}`: sets a configured header on every request before it goes upstream, and on every
response before it goes back to the client."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import http

DEFAULT_HEADER = "x-hello"

# The headers the gateway manages (framing and hop-by-hop), written here from its rules by
# `wasmgate plugin new`: the gateway refuses them from a plugin, so a config naming one is
# refused at load rather than failing every request.
HOST_MANAGED = frozenset({
    {{host_managed_headers}}
})

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)


def refuse(key, message):
    raise Err(handler.ConfigError(key=key, message=message))


def parse_config(text):
    """The route's config as (header, value); raises Err(ConfigError) naming the key at fault."""
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as e:
        refuse(None, f"not JSON: {e}")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        refuse(None, "must be a table")
    for key in config:
        if key not in ("header", "value"):
            refuse(key, "unknown key (expected `header` or `value`)")
    header = config.get("header", DEFAULT_HEADER)
    if not isinstance(header, str) or not header or not set(header) <= _TOKEN_CHARS:
        refuse("header", "must be an HTTP header name")
    header = header.lower()
    if header in HOST_MANAGED:
        refuse("header", "is managed by the gateway")
    if "value" not in config:
        refuse("value", "is required")
    value = config["value"]
    if not isinstance(value, str):
        refuse("value", "must be a string")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        refuse("value", "must not hold control characters")
    return header, value


def set_header(target, name, value):
    try:
        target.set_header(name, value)
    except Err as e:
        # The hook's error type is a string: turn the host's error code into one.
        raise Err(f"setting {name}: {e.value}")


# Module state, set by init: the Handler object itself is not guaranteed to outlive a call.
settings = None


class Handler(exports.Handler):
    def init(self, config: str) -> handler.Registration:
        global settings
        settings = parse_config(config)
        return handler.Registration(
            on_request=True, on_response=True, request_body=False, response_body=False
        )

    def on_request(self, req) -> http.Decision:
        header, value = settings
        set_header(req, header, value)
        return http.Decision_Continue()

    def on_response(self, req, resp) -> http.Decision:
        header, value = settings
        set_header(resp, header, value)
        return http.Decision_Continue()
