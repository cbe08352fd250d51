"""Several processes sharing one data directory: a cross-process lock and a change hint.

``pappus serve --processes N`` runs N server processes on one data
directory, and a test or an operator may point two workers at the same one.
Each process keeps its registry in memory, so they must agree on what is
registered:

* every change (register, delete) is made while holding
  :class:`DataDirectoryLock`, after bringing the in-memory registry up to date
  with SQLite, so a name conflict or a composition's use of a function is
  checked against what every process has committed;
* SQLite holds the authoritative *generation*, a counter increased in the
  same transaction as each change;
* :class:`GenerationHint` mirrors that counter in an 8-byte shared file so a
  process can tell, before each invocation and at the cost of one memory
  read, that another process changed something. Reading SQLite instead costs
  ~5 µs per request. The hint is only a hint: a process killed between its
  commit and its hint update leaves it behind until the next change, which
  is why a (re)starting process rewrites it from SQLite.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

_HINT = struct.Struct("<Q")


class DataDirectoryLock:
    """An exclusive lock over the registry, between threads and between processes.

    ``flock`` excludes other open file descriptions (other processes, other
    :class:`DataDirectoryLock` objects), not other threads using the same
    one, hence the thread lock in front of it. Not re-entrant.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._threads = threading.Lock()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block (blocks until it is free)."""
        with self._threads:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the file. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GenerationHint:
    """The registry's generation as last published, readable in well under a microsecond."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _HINT.size:
                os.ftruncate(fd, _HINT.size)  # zero-filled: generation 0
            self._map = mmap.mmap(fd, _HINT.size)
        finally:
            os.close(fd)

    def read(self) -> int:
        """The published generation. A read torn by a concurrent publish only makes the
        reader compare with SQLite once more, which is where the truth is."""
        value: int = _HINT.unpack_from(self._map)[0]
        return value

    def publish(self, generation: int) -> None:
        """Record ``generation``; callers hold the :class:`DataDirectoryLock`."""
        _HINT.pack_into(self._map, 0, generation)

    def close(self) -> None:
        """Unmap. Idempotent."""
        if not self._map.closed:
            self._map.close()
