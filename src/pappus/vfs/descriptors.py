"""Open files and the descriptor table: POSIX-shaped operations over a :class:`SetFileSystem`.

Front ends translate their calls (WASI ``fd_*``/``path_*``, Linux
``read``/``openat``/``getdents64``...) into these methods and map the
:class:`~pappus.vfs.nodes.Errno` of a :class:`~pappus.vfs.nodes.VfsError` to
their own numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pappus.vfs.nodes import Directory, Errno, File, Node, VfsError
from pappus.vfs.tree import SetFileSystem

DEFAULT_MAX_DESCRIPTORS = 1024
"""Descriptors open at once in one invocation (beyond that: ``MFILE``)."""
MAX_FILE_OFFSET = 2**63 - 1


class NodeKind(enum.Enum):
    """What a descriptor or path refers to."""

    FILE = "regular file"
    DIRECTORY = "directory"
    STREAM = "character device"  # descriptors 0-2: stdin, stdout, stderr


@dataclass(frozen=True, slots=True)
class Stat:
    """File metadata. Times are always zero: functions get no clock (see the engines)."""

    kind: NodeKind
    inode: int
    size: int
    links: int


@dataclass(eq=False, slots=True)
class OpenFile:
    """An open file description: a node, the access granted and a position.

    ``stream`` marks descriptors 0 to 2: not seekable, reported as character devices.
    """

    node: Node
    readable: bool
    writable: bool
    append: bool = False
    stream: bool = False
    position: int = 0


def stat_node(node: Node, *, stream: bool = False) -> Stat:
    """Metadata of ``node``."""
    if isinstance(node, Directory):
        return Stat(NodeKind.DIRECTORY, node.inode, 0, 2)
    return Stat(NodeKind.STREAM if stream else NodeKind.FILE, node.inode,
                0 if stream else len(node.data), 1)


class DescriptorTable:
    """Small integers → :class:`OpenFile`. New descriptors take the lowest free number."""

    def __init__(self, fs: SetFileSystem, *, limit: int = DEFAULT_MAX_DESCRIPTORS) -> None:
        self.fs = fs
        self.limit = limit
        self._open: dict[int, OpenFile] = {}

    @classmethod
    def with_standard_streams(cls, fs: SetFileSystem, *,
                              limit: int = DEFAULT_MAX_DESCRIPTORS) -> DescriptorTable:
        """A table with 0 = stdin, 1 = stdout, 2 = stderr already open."""
        table = cls(fs, limit=limit)
        table._open[0] = OpenFile(fs.stdin, readable=True, writable=False, stream=True)
        table._open[1] = OpenFile(fs.stdout, readable=False, writable=True, append=True,
                                  stream=True)
        table._open[2] = OpenFile(fs.stderr, readable=False, writable=True, append=True,
                                  stream=True)
        return table

    def __repr__(self) -> str:
        return f"<DescriptorTable open={sorted(self._open)} limit={self.limit}>"

    def __contains__(self, fd: int) -> bool:
        return fd in self._open

    def __len__(self) -> int:
        return len(self._open)

    # -- the table -------------------------------------------------------------------

    def get(self, fd: int) -> OpenFile:
        """The open file behind ``fd`` (``BADF`` if none)."""
        found = self._open.get(fd)
        if found is None:
            raise VfsError(Errno.BADF)
        return found

    def directory(self, fd: int) -> Directory:
        """The directory behind ``fd``, for ``*at`` calls (``NOTDIR`` if it is a file)."""
        node = self.get(fd).node
        if not isinstance(node, Directory):
            raise VfsError(Errno.NOTDIR)
        return node

    def install(self, open_file: OpenFile, lowest: int = 0) -> int:
        """Give ``open_file`` the lowest free descriptor ≥ ``lowest``."""
        if len(self._open) >= self.limit:
            raise VfsError(Errno.MFILE)
        fd = lowest
        while fd in self._open:
            fd += 1
        self._open[fd] = open_file
        return fd

    def close(self, fd: int) -> None:
        """Forget ``fd``."""
        self.get(fd)
        del self._open[fd]

    def renumber(self, old: int, new: int) -> None:
        """Move ``old`` to ``new``, closing whatever ``new`` was (``dup2`` + ``close``)."""
        open_file = self.get(old)
        if new < 0:
            raise VfsError(Errno.BADF)
        if new != old:
            del self._open[old]
            self._open[new] = open_file

    # -- opening ---------------------------------------------------------------------

    def open(self, path: str, base: Directory | None = None, *, read: bool = True,
             write: bool = False, create: bool = False, exclusive: bool = False,
             truncate: bool = False, directory: bool = False, append: bool = False,
             lowest: int = 0) -> int:
        """Open ``path`` (relative to ``base``) and return its new descriptor."""
        if len(self._open) >= self.limit:
            raise VfsError(Errno.MFILE, path)
        node = self.fs.open(path, base, create=create, exclusive=exclusive, truncate=truncate,
                            directory=directory, write=write)
        is_file = isinstance(node, File)
        open_file = OpenFile(node, readable=read and is_file, writable=write and is_file,
                             append=append)
        return self.install(open_file, lowest)

    # -- data ------------------------------------------------------------------------

    def _readable(self, fd: int) -> tuple[OpenFile, File]:
        open_file = self.get(fd)
        node = open_file.node
        if isinstance(node, Directory):
            raise VfsError(Errno.ISDIR)
        if not open_file.readable:
            raise VfsError(Errno.BADF)
        return open_file, node

    def _writable(self, fd: int) -> tuple[OpenFile, File]:
        open_file = self.get(fd)
        node = open_file.node
        if isinstance(node, Directory):
            raise VfsError(Errno.ISDIR)
        if not open_file.writable:
            raise VfsError(Errno.BADF)
        return open_file, node

    def read(self, fd: int, size: int) -> bytes:
        """Read up to ``size`` bytes at the position, advancing it."""
        open_file, node = self._readable(fd)
        start = open_file.position
        chunk = bytes(node.data[start:start + max(size, 0)])  # empty past the end
        open_file.position = start + len(chunk)
        return chunk

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; the position does not move."""
        open_file, node = self._readable(fd)
        if open_file.stream:
            raise VfsError(Errno.SPIPE)
        if offset < 0:
            raise VfsError(Errno.INVAL)
        return bytes(node.data[offset:offset + max(size, 0)])

    def write(self, fd: int, data: bytes) -> int:
        """Write at the position (at the end in append mode), advancing it."""
        open_file, node = self._writable(fd)
        if open_file.append:
            open_file.position = len(node.data)
        written = self.fs.write(node, open_file.position, data)
        open_file.position += written
        return written

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Write at ``offset``; the position does not move."""
        open_file, node = self._writable(fd)
        if open_file.stream:
            raise VfsError(Errno.SPIPE)
        if offset < 0 or offset + len(data) > MAX_FILE_OFFSET:
            raise VfsError(Errno.INVAL)
        return self.fs.write(node, offset, data)

    def seek(self, fd: int, offset: int, whence: int) -> int:
        """Move the position; ``whence`` 0 = start, 1 = current, 2 = end. Returns it."""
        open_file = self.get(fd)
        node = open_file.node
        if open_file.stream or isinstance(node, Directory):
            raise VfsError(Errno.SPIPE)
        bases = (0, open_file.position, len(node.data))
        if whence not in (0, 1, 2):
            raise VfsError(Errno.INVAL)
        position = bases[whence] + offset
        if not 0 <= position <= MAX_FILE_OFFSET:
            raise VfsError(Errno.INVAL)
        open_file.position = position
        return position

    def tell(self, fd: int) -> int:
        """The position of ``fd``."""
        open_file = self.get(fd)
        if open_file.stream:
            raise VfsError(Errno.SPIPE)
        return open_file.position

    def truncate(self, fd: int, size: int) -> None:
        """Set the size of the file behind ``fd`` (which must be open for writing)."""
        open_file, node = self._writable(fd)
        if open_file.stream or not 0 <= size <= MAX_FILE_OFFSET:
            raise VfsError(Errno.INVAL)
        self.fs.truncate(node, size)

    # -- metadata --------------------------------------------------------------------

    def stat(self, fd: int) -> Stat:
        """Metadata of the node behind ``fd``."""
        open_file = self.get(fd)
        return stat_node(open_file.node, stream=open_file.stream)

    def list_directory(self, fd: int) -> list[tuple[str, Stat]]:
        """``.``, ``..`` and the entries of the directory behind ``fd``, in a stable order."""
        directory = self.directory(fd)
        listing = [(".", stat_node(directory)), ("..", stat_node(directory.up()))]
        listing += [(name, stat_node(node)) for name, node in directory.entries.items()]
        return listing
