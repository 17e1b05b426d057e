"""A WebSocket server and client (the `websockets` package) for the gateway's end-to-end tests.

`serve`: on an ephemeral port (printed on the first line of stdout), until stdin closes. Each
connection is first sent a JSON text message with the handshake's path and headers; every
message after that is echoed back; the text `close-me` is answered with a close, code 4000.

`client URL [-H "Name: value"]...`: connects; prints JSON of what happened. A refused handshake
gives `{"refused": STATUS, "body": ...}`.

`idle URL SHORT LONG`: connects, exchanges a message every 200 ms for a while, then stays quiet
for SHORT seconds and for LONG seconds, and reports whether a message still came back after
each pause.
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def handler(ws):
    request = ws.request
    await ws.send(
        json.dumps(
            {
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.raw_items()},
            }
        )
    )
    try:
        async for message in ws:
            if message == "close-me":
                await ws.close(4000, "bye")
                return
            await ws.send(message)
    except ConnectionClosed:
        pass  # the gateway cut a quiet tunnel: what the idle test expects


async def run_server():
    async with serve(handler, "127.0.0.1", 0, max_size=4 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def headers_from(args):
    out = []
    for i, a in enumerate(args):
        if a == "-H":
            name, value = args[i + 1].split(":", 1)
            out.append((name.strip(), value.strip()))
    return out


async def run_client(url, args):
    out = {}
    try:
        async with connect(
            url, additional_headers=headers_from(args), max_size=4 * 1024 * 1024
        ) as ws:
            out["hello"] = json.loads(await ws.recv())
            echoes = []
            for i in range(50):
                await ws.send(f"message {i}")
                echoes.append(await ws.recv())
            out["echoes"] = echoes
            big = bytes(range(256)) * 4096  # 1 MiB, in one binary message
            await ws.send(big)
            out["big_echoed"] = (await ws.recv()) == big
            await ws.send("close-me")
            try:
                await ws.recv()
            except ConnectionClosed as e:
                out["close"] = {"code": e.rcvd.code, "reason": e.rcvd.reason}
    except InvalidStatus as e:
        out = {
            "refused": e.response.status_code,
            "body": e.response.body.decode(errors="replace"),
        }
    print(json.dumps(out))


async def exchange(ws, message):
    """Whether a message still comes back."""
    try:
        await ws.send(message)
        await asyncio.wait_for(ws.recv(), 5)
        return True
    except (ConnectionClosed, asyncio.TimeoutError):
        return False


async def run_idle(url, short, long):
    async with connect(url, ping_interval=None) as ws:
        await ws.recv()
        started = time.monotonic()
        for i in range(8):
            await exchange(ws, f"tick {i}")
            await asyncio.sleep(0.2)
        busy = time.monotonic() - started
        await asyncio.sleep(short)
        open_after_short = await exchange(ws, "after a short pause")
        await asyncio.sleep(long)
        open_after_long = await exchange(ws, "after a long pause")
    print(
        json.dumps(
            {
                "busy_seconds": busy,
                "open_after_short": open_after_short,
                "open_after_long": open_after_long,
            }
        )
    )


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        asyncio.run(run_server())
    elif mode == "client":
        asyncio.run(run_client(sys.argv[2], sys.argv[3:]))
    elif mode == "idle":
        asyncio.run(run_idle(sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
    else:
        sys.exit(f"unknown mode {mode}")
