"""A bare ASGI echo endpoint on the same stack as pappus (Starlette on uvicorn, same
options, same multi-process supervisor), the baseline for the HTTP benchmark.

    python -m benchmarks.echo_server --port 0 [--processes N]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pappus.server.app import bind_socket
from pappus.server.processes import Supervisor, bind_shared


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/json")


def serve_echo(sock: socket.socket, ready: Callable[[], None]) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ready()  # once uvicorn is accepting connections, as `pappus serve` does
        yield

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])], lifespan=lifespan)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def announce(sock: socket.socket) -> None:
    print(f"pappus listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.processes == 1:
        sock = bind_socket("127.0.0.1", args.port)
        serve_echo(sock, lambda: announce(sock))
        return
    sockets = bind_shared("127.0.0.1", args.port, args.processes)
    supervisor = Supervisor(sockets, lambda index, sock, ready: serve_echo(sock, ready),
                            on_ready=lambda: announce(sockets[0]))
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
