"""A test fixture: on each request, calls `http://users/users/<x-user>` (the upstream `users`,
by name) through the wasi:http bindings, and answers with what came back, or with the error
code of a call that failed."""

import asyncio
from urllib.parse import quote

import poll_loop
from componentize_py_types import Err
from poll_loop import PollLoop, Stream
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import http
from wit_world.imports.types import Fields, OutgoingRequest, Scheme_Http


async def get(authority: str, path: str) -> tuple[int, bytes]:
    """Sends a GET and reads its whole body; a refused or failed call raises `Err(ErrorCode)`."""
    request = OutgoingRequest(Fields())
    request.set_scheme(Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path)
    response = await poll_loop.send(request)
    status = response.status()
    stream = Stream(response.consume())
    body = b""
    while (chunk := await stream.next()) is not None:
        body += chunk
    return status, body


def reply(status: int, content_type: str, body: bytes) -> http.Decision:
    return http.Decision_Respond(
        http.Reply(status=status, headers=[("content-type", content_type)], body=body)
    )


class Handler(exports.Handler):
    def init(self, config: str) -> handler.Registration:
        return handler.Registration(
            on_request=True, on_response=False, request_body=False, response_body=False
        )

    def on_request(self, req: http.Request) -> http.Decision:
        user = quote(req.header("x-user") or "", safe="")
        # The hook is synchronous: it runs the call's coroutine to completion on a
        # wasi:io/poll event loop.
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        try:
            status, body = loop.run_until_complete(get("users", f"/users/{user}"))
        except Err as e:
            # The wasi:http error code, e.g. `ErrorCode_HttpRequestDenied`.
            return reply(502, "text/plain", f"call failed: {type(e.value).__name__}".encode())
        finally:
            loop.close()
        return reply(200 if status == 200 else 502, "application/json", body)

    def on_response(self, req: http.Request, resp: http.Response) -> http.Decision:
        return http.Decision_Continue()
