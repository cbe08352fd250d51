"""``serve --processes N``: N server processes sharing one port and one data directory.

One CPython process runs its request path on one core at a time (the GIL),
so a single server process cannot use a many-core machine for short
invocations. With ``processes > 1`` the command's process becomes a small
supervisor:

* it binds N listening sockets to the same address with ``SO_REUSEPORT``
  (the kernel spreads new connections over them) and forks one server
  process per socket;
* the first server process starts alone (it restores the registry and fills
  the engines' compile caches); the others start once it is ready, restoring
  from those caches; the supervisor announces the address when all are ready;
* a server process that dies (crash, ``kill -9``, out-of-memory killer) is
  logged and started again on the same socket, so the port keeps being
  served; one that keeps dying within seconds of starting stops the worker;
* SIGTERM or SIGINT stops every server process gracefully (each drains its
  requests), then the supervisor exits; if the supervisor itself is killed,
  the kernel sends SIGTERM to the server processes (``PR_SET_PDEATHSIG``).

The server processes agree on the registry through the data directory
(:mod:`pappus.coherence`) and share their metrics through
``prometheus_client``'s multi-process mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0
"""How long a server process may take to restore the registry and start listening."""
STOP_TIMEOUT_S = 30.0
"""How long stopping waits for the server processes before killing them."""
QUICK_DEATH_S = 5.0
MAX_QUICK_DEATHS = 3
"""A server process dying within QUICK_DEATH_S of its start this many times in a row stops
the worker instead of being restarted forever."""
_PR_SET_PDEATHSIG = 1

ChildMain = Callable[[int, socket.socket, Callable[[], None]], None]
"""``child_main(index, sock, ready)``: serve on ``sock`` until told to stop; call ``ready()``
once accepting connections."""


class ProcessStartError(RuntimeError):
    """A server process exited or hung before it was ready."""


def bind_shared(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one address (``port=0``: one free port for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # the others join the port the first one got
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class _Child:
    index: int
    pid: int = 0
    ready_fd: int = -1
    started: float = 0.0
    quick_deaths: int = 0


@dataclass
class Supervisor:
    """Forks and watches one server process per socket. Use :meth:`run` once."""

    sockets: list[socket.socket]
    child_main: ChildMain
    on_ready: Callable[[], None] = lambda: None
    on_child_exit: Callable[[int], None] = lambda pid: None
    """Called with the pid of every server process that ended (for metrics clean-up)."""
    _children: list[_Child] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status for the command."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        self._children = [_Child(i) for i in range(len(self.sockets))]
        try:
            self._start(self._children[0])
            self._await_ready(self._children[:1])
            for child in self._children[1:]:
                if not self._stopping:
                    self._start(child)
            self._await_ready([c for c in self._children[1:] if c.pid])
            if not self._stopping:
                self.on_ready()
            return self._watch()
        except ProcessStartError as exc:
            logger.error("%s; stopping", exc)
            self._stop_all()
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- starting -------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the server process: never returns
            os.close(read_end)
            self._become_server(child.index, write_end)
        os.close(write_end)
        child.pid, child.ready_fd, child.started = pid, read_end, time.monotonic()
        logger.debug("server process %d started (pid %d)", child.index, pid)

    def _become_server(self, index: int, ready_fd: int) -> None:
        status = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() == 1:  # the supervisor died before prctl
                os._exit(1)
            for i, sock in enumerate(self.sockets):
                if i != index:
                    sock.close()
            for sibling in self._children:  # read ends of the siblings' ready pipes
                if sibling.index != index and sibling.ready_fd >= 0:
                    os.close(sibling.ready_fd)

            def ready() -> None:
                with contextlib.suppress(OSError):
                    os.write(ready_fd, b"R")
                    os.close(ready_fd)

            self.child_main(index, self.sockets[index], ready)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)

    def _await_ready(self, children: list[_Child]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = {c.ready_fd: c for c in children}
        with selectors.DefaultSelector() as selector:
            for fd in waiting:
                selector.register(fd, selectors.EVENT_READ)
            while waiting and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcessStartError(
                        f"server process(es) {sorted(c.index for c in waiting.values())} not "
                        f"ready after {READY_TIMEOUT_S:.0f} s")
                for key, _ in selector.select(timeout=min(left, 0.5)):
                    child = waiting.pop(key.fd)
                    selector.unregister(key.fd)
                    message = os.read(key.fd, 1)
                    os.close(key.fd)
                    child.ready_fd = -1
                    if message != b"R":
                        raise ProcessStartError(
                            f"server process {child.index} exited while starting "
                            f"({self._reap_status(child)})")

    def _reap_status(self, child: _Child) -> str:
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(child.pid, 0)
            self.on_child_exit(child.pid)
            child.pid = 0
            return _describe(status)
        return "status unknown"

    # -- watching and stopping ---------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self._stopping:
            self._stopping = True
            self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum: int) -> None:
        for child in self._children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def _watch(self) -> int:
        """Wait for server processes to end; restart them until stopping. Exit status."""
        while any(c.pid for c in self._children):
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            child = next((c for c in self._children if c.pid == pid), None)
            if child is None:
                continue
            child.pid = 0
            self.on_child_exit(pid)
            if self._stopping:
                continue
            if time.monotonic() - child.started < QUICK_DEATH_S:
                child.quick_deaths += 1
            else:
                child.quick_deaths = 0
            if child.quick_deaths >= MAX_QUICK_DEATHS:
                logger.error("server process %d ended (%s) %d times within %.0f s of starting; "
                             "stopping the worker", child.index, _describe(status),
                             child.quick_deaths, QUICK_DEATH_S)
                self._stop_all()
                return 1
            logger.error("server process %d (pid %d) ended (%s); starting it again",
                         child.index, pid, _describe(status))
            try:
                self._start(child)
                self._await_ready([child])
            except ProcessStartError as exc:
                logger.error("%s; stopping", exc)
                self._stop_all()
                return 1
        return 0

    def _stop_all(self) -> None:
        self._stopping = True
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self._children:
            while child.pid:
                try:
                    pid, _ = os.waitpid(child.pid, os.WNOHANG)
                except ChildProcessError:
                    child.pid = 0
                    break
                if pid:
                    self.on_child_exit(pid)
                    child.pid = 0
                elif time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                    time.sleep(0.01)
                else:
                    time.sleep(0.01)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
