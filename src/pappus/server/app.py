"""HTTP API v1 (JSON) as a Starlette application, served by uvicorn.

Routes are listed in ``docs/api.md``. Every error is a JSON body
``{"error": {"type", "message", ...detail}}`` with the status of its
:class:`pappus.errors.PappusError` class; an unexpected exception is logged
and answered ``500 internal``, never a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pappus.config import Settings
from pappus.errors import PappusError, TooLarge
from pappus.registry import RegisteredComposition, RegisteredFunction
from pappus.server import codec
from pappus.server.dandelion import dandelion_routes
from pappus.worker import Worker

logger = logging.getLogger(__name__)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""One encoder for every response: ``json.dumps`` with options builds a new one per call."""


class JSON(JSONResponse):
    """Compact JSON responses (no spaces): smaller and faster to encode."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


def error_response(error: PappusError) -> JSON:
    """The JSON error body for ``error``."""
    return JSON({"error": error.to_dict()}, status_code=error.http_status)


class AnswerUnexpectedErrors:
    """ASGI middleware: an unexpected exception is logged and answered ``500 internal``.

    It is not raised further: Starlette's own error middleware would answer and
    then re-raise it, and uvicorn then drops the connection, so a client's next
    request on it would fail too. Only once the response has started is the
    exception raised (the connection cannot carry a clean answer any more).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception as exc:
            if started:
                raise
            logger.exception("unexpected error handling %s %s", scope["method"], scope["path"])
            answer = JSON({"error": {"type": "internal",
                                     "message": f"internal error: {type(exc).__name__}: {exc}"}},
                          status_code=500)
            await answer(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with ``too_large``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}",
                       limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(worker: Worker, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The ASGI application for ``worker``; starts and stops it with the server.

    ``on_ready`` is called once the worker has restored its registry.
    """
    settings = worker.settings
    limit = settings.max_request_bytes

    async def add_function(request: Request) -> Response:
        body = codec.parse_json(await read_body(request, limit))
        registration = codec.decode_registration(body, settings.max_binary_bytes)
        if len(registration.binary) > settings.max_binary_bytes:
            raise TooLarge(f"binary exceeds the limit of {settings.max_binary_bytes} bytes",
                           limit=settings.max_binary_bytes)
        entry = await asyncio.to_thread(worker.registry.add_function, registration)
        return JSON(entry.record.to_json(), status_code=201)

    async def list_functions(request: Request) -> Response:
        await worker.dispatcher.catch_up()
        return JSON({"functions": [f.record.to_json() for f in worker.registry.functions()]})

    async def get_function(request: Request) -> Response:
        await worker.dispatcher.catch_up()
        entry = worker.registry.get(request.path_params["name"])
        if not isinstance(entry, RegisteredFunction):
            raise _not_a("function", request.path_params["name"])
        return JSON(entry.record.to_json())

    async def delete_function(request: Request) -> Response:
        name = request.path_params["name"]
        await asyncio.to_thread(worker.registry.remove, name, RegisteredFunction)
        return Response(status_code=204)

    async def add_compositions(request: Request) -> Response:
        source = codec.decode_source(codec.parse_json(await read_body(request, limit)))
        entries = await asyncio.to_thread(worker.registry.add_compositions, source)
        return JSON({"compositions": [e.record.name for e in entries]}, status_code=201)

    async def list_compositions(request: Request) -> Response:
        await worker.dispatcher.catch_up()
        return JSON({"compositions": [c.record.to_json() for c in worker.registry.compositions()]})

    async def get_composition(request: Request) -> Response:
        await worker.dispatcher.catch_up()
        entry = worker.registry.get(request.path_params["name"])
        if not isinstance(entry, RegisteredComposition):
            raise _not_a("composition", request.path_params["name"])
        return JSON(entry.record.to_json())

    async def delete_composition(request: Request) -> Response:
        name = request.path_params["name"]
        await asyncio.to_thread(worker.registry.remove, name, RegisteredComposition)
        return Response(status_code=204)

    async def invoke(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await worker.dispatcher.catch_up()
            system = worker.registry.system_functions.get(name)
            signature = system if system is not None else worker.registry.get(name).signature
            raw = await read_body(request, limit)
            decoding = time.perf_counter()
            inputs, timeout_ms = codec.decode_invocation(codec.parse_json(raw),
                                                         signature.input_sets)
            decode_us = (time.perf_counter() - decoding) * 1e6
            result = await worker.dispatcher.invoke(name, inputs, timeout_ms=timeout_ms)
            result.timings.decode_us = decode_us
        except PappusError as error:
            worker.metrics.request_finished(error.type)
            raise
        worker.metrics.request_finished("ok")
        # Most requests have no query string: skip parsing one.
        as_text = bool(request.scope["query_string"]) and (
            request.query_params.get("output") == "text")
        return JSON({"sets": codec.encode_sets(result.outputs, as_text=as_text),
                     "timings": result.timings.to_json()})

    async def healthz(request: Request) -> Response:
        stats = worker.dispatcher.statistics()
        return JSON({"status": "ok", "queued": stats.queued, "running": stats.running,
                     "slots": stats.slots})

    async def stats(request: Request) -> Response:
        s = worker.dispatcher.statistics()
        return JSON({
            "slots": s.slots, "queue_capacity": s.queue_capacity, "queued": s.queued,
            "running": s.running, "completed": s.completed, "failed": s.failed,
            "inline": s.inline, "preempted": s.preempted, "apart": s.apart,
            "process": {"index": worker.process_index, "pid": os.getpid(),
                        "count": settings.processes},
            "engines": {
                name: dataclasses.asdict(engine.statistics())
                for name, engine in worker.registry.engines.items()
            },
        })

    async def metrics(request: Request) -> Response:
        return Response(worker.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    async def on_pappus_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, PappusError):  # pragma: no cover - registration guarantees it
            raise exc
        return error_response(exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await worker.start()
        worker.metrics.add_gauge(
            "pappus_compute_slots", "Compute slots", lambda: worker.dispatcher.slots)
        worker.metrics.add_gauge(
            "pappus_queue_depth", "Function jobs waiting for a compute slot",
            lambda: worker.dispatcher.statistics().queued)
        refresher = None
        if worker.metrics.multiprocess_dir is not None:
            refresher = asyncio.create_task(_refresh_gauges(worker))
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
            await worker.stop()

    routes = [
        # Starlette tries routes in order: the hot one first (each miss costs ~1.3 µs).
        Route("/v1/invoke/{name}", invoke, methods=["POST"]),
        Route("/v1/functions", add_function, methods=["POST"]),
        Route("/v1/functions", list_functions, methods=["GET"]),
        Route("/v1/functions/{name}", get_function, methods=["GET"]),
        Route("/v1/functions/{name}", delete_function, methods=["DELETE"]),
        Route("/v1/compositions", add_compositions, methods=["POST"]),
        Route("/v1/compositions", list_compositions, methods=["GET"]),
        Route("/v1/compositions/{name}", get_composition, methods=["GET"]),
        Route("/v1/compositions/{name}", delete_composition, methods=["DELETE"]),
        Route("/v1/stats", stats, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *dandelion_routes(worker, lambda request: read_body(request, limit)),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AnswerUnexpectedErrors)],
        exception_handlers={PappusError: on_pappus_error},
    )


GAUGE_REFRESH_S = 1.0
"""How stale another server process's gauges (queue depth) may be in a scrape."""


async def _refresh_gauges(worker: Worker) -> None:
    while True:
        await asyncio.sleep(GAUGE_REFRESH_S)
        worker.metrics.refresh_gauges()


def _not_a(kind: str, name: str) -> PappusError:
    from pappus.errors import NotFound

    return NotFound(f"{name!r} is not a registered {kind}", name=name)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front so ``port=0`` yields a known port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, *, announce: bool = True) -> None:
    """Run the worker's HTTP server until SIGINT/SIGTERM. Blocking.

    With ``settings.processes > 1``, several server processes under a
    supervisor (:mod:`pappus.server.processes`); exits non-zero if they fail.
    """
    raise_descriptor_limit()
    if settings.processes > 1:
        from pappus.server.multiprocess import serve_processes

        serve_processes(settings, announce=announce)
        return
    sock = bind_socket(settings.host, settings.port)

    def ready() -> None:
        if announce:
            announce_address(sock)

    serve_on(sock, Worker(settings), settings, ready)


def raise_descriptor_limit() -> None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit.

    Every connection and every warm sandbox holds descriptors, and the usual
    soft limit of 1024 would make a busy worker fail with ``EMFILE`` long
    before the hard limit (often 524288) is near. Sandboxes set their own
    limits, so this widens nothing for functions.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (soft, resource.RLIM_INFINITY):  # Linux caps it at fs.nr_open anyway
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not raise the descriptor limit from %d to %d: %s", soft, hard, exc)


def announce_address(sock: socket.socket) -> None:
    """Print the line ``pappus serve`` users and tests wait for."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"pappus listening on http://{shown}:{port}", flush=True)


def serve_on(sock: socket.socket, worker: Worker, settings: Settings,
             ready: Callable[[], None]) -> None:
    """Serve ``worker`` on the listening ``sock`` until SIGINT/SIGTERM; ``ready()`` once up."""
    app = create_app(worker, on_ready=ready)
    if settings.http2:
        _serve_http2(app, sock, settings)
        return
    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=False, lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


def _serve_http2(app: Starlette, sock: socket.socket, settings: Settings) -> None:
    """Serve HTTP/1.1 and HTTP/2 (h2c, prior knowledge or upgrade) on ``sock`` with Hypercorn.

    uvicorn, the default server, speaks HTTP/1.1 only and is faster for it;
    ``http2`` trades some HTTP/1.1 throughput for HTTP/2 clients (Dandelion's
    tests use both).
    """
    import asyncio

    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = settings.log_level.upper()
    config.accesslog = None
    config.graceful_timeout = 10
    asyncio.run(hypercorn_serve(app, config))  # type: ignore[arg-type]
