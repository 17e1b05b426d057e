"""The validate plugin's component glue: the rule engine in `rules` does the work."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import http

import rules

# One validator per instance: init runs once per instance, and componentize-py may build a
# new Handler object for every call.
_validator = None

_JSON_HEADERS = [("content-type", "application/json")]


class Handler(exports.Handler):
    def init(self, config: str) -> handler.Registration:
        global _validator
        try:
            _validator = rules.Validator.from_json(config)
        except rules.ConfigError as e:
            raise Err(handler.ConfigError(key=e.key, message=e.message)) from None
        return handler.Registration(
            on_request=True,
            on_response=False,
            request_body=_validator.needs_body,
            response_body=False,
        )

    def on_request(self, req: http.Request) -> http.Decision:
        if _validator is None:
            raise Err("validate: called before init")
        try:
            violations = _validator.validate(req)
        except Err as e:
            # A host call refused (the body, say): its error code is not the string this
            # function's errors carry.
            raise Err(f"validate: host call failed: {e.value}") from None
        except Exception as e:
            # An Err fails just this request; an uncaught exception would trap and cost the
            # instance.
            raise Err(f"validate: {type(e).__name__}") from None
        if not violations:
            return http.Decision_Continue()
        return http.Decision_Respond(
            http.Reply(status=422, headers=list(_JSON_HEADERS), body=rules.error_body(violations))
        )

    def on_response(self, req: http.Request, resp: http.Response) -> http.Decision:
        return http.Decision_Continue()
