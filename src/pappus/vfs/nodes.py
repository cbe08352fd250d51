"""Nodes of the set-backed file tree, error codes and path handling.

Everything here is front-end neutral: the WASI layer and a future Linux
syscall layer both map :class:`Errno` to their own numbering.
"""

from __future__ import annotations

import enum

MAX_NAME_BYTES = 255
"""Longest path component, in UTF-8 bytes (as ``NAME_MAX`` on Linux)."""
MAX_PATH_BYTES = 4096
"""Longest path a function may pass (as ``PATH_MAX`` on Linux)."""


class Errno(enum.Enum):
    """Why a file operation failed, named as in POSIX; front ends map them to numbers."""

    ACCES = "permission denied"
    BADF = "bad file descriptor"
    EXIST = "file exists"
    FBIG = "file too large"
    ILSEQ = "path is not valid UTF-8"
    INVAL = "invalid argument"
    ISDIR = "is a directory"
    MFILE = "too many open files"
    NAMETOOLONG = "name too long"
    NOENT = "no such file or directory"
    NOSPC = "too many files and directories"
    NOTDIR = "not a directory"
    NOTEMPTY = "directory not empty"
    ROFS = "read-only file system"
    SPIPE = "illegal seek"


class VfsError(Exception):
    """A file operation failed with ``errno``; the function sees an error code, not a crash."""

    def __init__(self, errno: Errno, path: str = "") -> None:
        super().__init__(f"{path}: {errno.value}" if path else errno.value)
        self.errno = errno


class OutputLimitExceeded(Exception):
    """The function wrote more output bytes than its limit allows; the run must end.

    Not a :class:`VfsError`: front ends end the invocation (``bad_output``)
    instead of returning an error code the function could ignore.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the function wrote more than its output limit of {limit} bytes "
            "(files in output sets plus stdout and stderr)")
        self.limit = limit


class File:
    """A regular file. Input files are read-only ``bytes`` shared with the input item."""

    __slots__ = ("data", "inode", "parent", "writable")

    def __init__(self, data: bytes | bytearray, inode: int, *, writable: bool,
                 parent: Directory | None = None) -> None:
        self.data = data
        self.inode = inode
        self.writable = writable
        self.parent = parent

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<File #{self.inode} {mode} {len(self.data)} bytes>"


class Directory:
    """A directory. ``writable`` directories accept new, removed and renamed entries.

    ``parent`` is ``None`` only for the root, whose ``..`` is itself.
    """

    __slots__ = ("entries", "inode", "parent", "writable")

    def __init__(self, inode: int, *, writable: bool, parent: Directory | None = None) -> None:
        self.entries: dict[str, Node] = {}
        self.inode = inode
        self.writable = writable
        self.parent = parent

    def up(self) -> Directory:
        """The parent directory (the root is its own parent)."""
        return self.parent if self.parent is not None else self

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Directory #{self.inode} {mode} {len(self.entries)} entries>"


Node = File | Directory


def decode_path(raw: bytes) -> str:
    """A path from guest memory: UTF-8 without NUL, at most :data:`MAX_PATH_BYTES`.

    Output item names travel on as JSON strings, so names that are not UTF-8
    are refused here (``ILSEQ``) rather than smuggled through.
    """
    if len(raw) > MAX_PATH_BYTES:
        raise VfsError(Errno.NAMETOOLONG)
    if b"\0" in raw:
        raise VfsError(Errno.INVAL)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VfsError(Errno.ILSEQ) from None


def split_path(path: str) -> tuple[bool, list[str], bool]:
    """``(absolute, components, trailing_slash)``; empty and ``.`` components dropped.

    ``..`` is kept: resolution walks to the parent (never above the root).
    """
    components = [part for part in path.split("/") if part not in ("", ".")]
    for part in components:
        if len(part.encode()) > MAX_NAME_BYTES:
            raise VfsError(Errno.NAMETOOLONG, path)
    return path.startswith("/"), components, path.endswith("/")


def is_plain_name(name: str) -> bool:
    """A name usable as one path component: not empty, ``.``, ``..``; no ``/`` or NUL."""
    return (name not in ("", ".", "..") and "/" not in name and "\0" not in name
            and len(name.encode()) <= MAX_NAME_BYTES)
