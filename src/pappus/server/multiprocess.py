"""``pappus serve --processes N``: the worker's server processes under the supervisor.

The supervisor itself (sockets, forking, restarts) is :mod:`pappus.server.processes`;
this module gives each server process its :class:`~pappus.worker.Worker` and
the shared metrics directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from pappus.config import Settings
from pappus.server.app import announce_address, serve_on
from pappus.server.metrics import Metrics
from pappus.server.processes import Supervisor, bind_shared
from pappus.worker import Worker

METRICS_DIR_PREFIX = "pappus-metrics-"
"""Temporary directories ``pappus-metrics-<supervisor pid>-<random>``."""


def serve_processes(settings: Settings, *, announce: bool) -> None:
    """Serve with ``settings.processes`` server processes until SIGINT/SIGTERM.

    Raises :class:`SystemExit` with a non-zero status if they could not be kept running.
    """
    temp = Path(tempfile.gettempdir())
    remove_orphaned_metrics(temp)
    metrics_dir = Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=temp))
    sockets = bind_shared(settings.host, settings.port, settings.processes)

    def child_main(index: int, sock: socket.socket, ready: Callable[[], None]) -> None:
        worker = Worker(settings, metrics=Metrics(multiprocess_dir=metrics_dir),
                        process_index=index)
        serve_on(sock, worker, settings, ready)

    def on_ready() -> None:
        if announce:
            announce_address(sockets[0])

    def on_child_exit(pid: int) -> None:
        mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]

    supervisor = Supervisor(sockets, child_main, on_ready=on_ready, on_child_exit=on_child_exit)
    try:
        status = supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if status:
        raise SystemExit(status)


def remove_orphaned_metrics(temp: Path) -> list[Path]:
    """Delete this user's metrics directories whose supervisor is gone (killed: it could
    not clean up). Returns what was removed."""
    removed = []
    for directory in temp.glob(f"{METRICS_DIR_PREFIX}*-*"):
        owner = directory.name[len(METRICS_DIR_PREFIX):].split("-", 1)[0]
        try:
            if not owner.isdigit() or directory.stat().st_uid != os.getuid():
                continue
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
        except OSError:  # vanished meanwhile, or a live process of another user
            continue
    return removed
