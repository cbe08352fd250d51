"""The descriptor table: POSIX-shaped reads, writes, seeks, listings over the set file system."""

from __future__ import annotations

import pytest

from pappus.model import DataSet, Item
from pappus.vfs import DescriptorTable, Errno, NodeKind, SetFileSystem, VfsError


@pytest.fixture
def table() -> DescriptorTable:
    fs = SetFileSystem({"in": DataSet("in", (Item("a", 1, b"abcdef"), Item("d/b", 2, b"B"))),
                        "stdio": DataSet("stdio", (Item("stdin", 0, b"typed"),))},
                       ("out", "stdio"), 1 << 20)
    return DescriptorTable.with_standard_streams(fs, limit=8)


def errno_of(call: object, *args: object, **kwargs: object) -> Errno:
    with pytest.raises(VfsError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.errno


def test_standard_streams(table: DescriptorTable) -> None:
    assert table.read(0, 3) == b"typ"
    assert table.read(0, 100) == b"ed"
    assert table.read(0, 100) == b""
    assert table.write(1, b"out") == 3
    assert table.write(2, b"err") == 3
    assert table.fs.stdout.data == b"out"
    assert table.stat(1).kind is NodeKind.STREAM
    assert errno_of(table.seek, 0, 0, 0) is Errno.SPIPE
    assert errno_of(table.tell, 1) is Errno.SPIPE
    assert errno_of(table.pread, 0, 1, 0) is Errno.SPIPE
    assert errno_of(table.read, 1, 1) is Errno.BADF  # stdout is not readable
    assert errno_of(table.truncate, 1, 0) is Errno.INVAL
    assert errno_of(table.write, 0, b"x") is Errno.BADF


def test_lowest_free_descriptor_and_limit(table: DescriptorTable) -> None:
    first = table.open("/in/a")
    assert first == 3
    table.close(0)
    assert table.open("/in/a") == 0  # lowest free, as POSIX
    assert table.open("/in/a", lowest=5) == 5
    while len(table) < table.limit:
        table.open("/in/a")
    assert errno_of(table.open, "/in/a") is Errno.MFILE
    assert errno_of(table.close, 99) is Errno.BADF
    assert 99 not in table
    assert repr(table).startswith("<DescriptorTable open=[0, 1, 2, 3, 4, 5,")


def test_reading_seeking_and_positional_io(table: DescriptorTable) -> None:
    fd = table.open("/in/a")
    assert table.read(fd, 2) == b"ab"
    assert table.tell(fd) == 2
    assert table.seek(fd, -1, 2) == 5
    assert table.read(fd, 10) == b"f"
    assert table.seek(fd, 2, 1) == 8  # past the end is allowed; reads give nothing
    assert table.read(fd, 10) == b""
    assert table.pread(fd, 3, 1) == b"bcd"
    assert table.tell(fd) == 8
    assert errno_of(table.seek, fd, -100, 1) is Errno.INVAL
    assert errno_of(table.seek, fd, 0, 7) is Errno.INVAL
    assert errno_of(table.pread, fd, 1, -1) is Errno.INVAL
    assert errno_of(table.write, fd, b"x") is Errno.BADF  # opened read-only


def test_writing_appending_truncating(table: DescriptorTable) -> None:
    fd = table.open("/out/f", read=False, write=True, create=True)
    assert table.write(fd, b"hello") == 5
    assert table.pwrite(fd, b"J", 0) == 1
    assert table.tell(fd) == 5
    appender = table.open("/out/f", write=True, append=True)
    table.seek(appender, 0, 0)
    table.write(appender, b"!")  # append mode writes at the end regardless
    table.truncate(fd, 3)
    assert table.fs.resolve("/out/f").data == b"Jel"  # type: ignore[union-attr]
    assert table.stat(fd).size == 3
    assert errno_of(table.truncate, table.open("/in/a"), 0) is Errno.BADF
    assert errno_of(table.truncate, fd, -1) is Errno.INVAL
    assert errno_of(table.read, fd, 1) is Errno.BADF  # opened write-only


def test_directories(table: DescriptorTable) -> None:
    fd = table.open("/in", directory=True)
    assert table.directory(fd) is table.fs.resolve("/in")
    listing = table.list_directory(fd)
    assert [(name, stat.kind) for name, stat in listing] == [
        (".", NodeKind.DIRECTORY), ("..", NodeKind.DIRECTORY), ("a", NodeKind.FILE),
        ("d", NodeKind.DIRECTORY)]
    assert listing[1][1].inode == table.fs.root.inode
    assert listing[2][1].size == 6
    assert errno_of(table.read, fd, 1) is Errno.ISDIR
    assert errno_of(table.write, fd, b"x") is Errno.ISDIR
    assert errno_of(table.seek, fd, 0, 0) is Errno.SPIPE
    file_fd = table.open("/in/a")
    assert errno_of(table.directory, file_fd) is Errno.NOTDIR
    assert errno_of(table.list_directory, file_fd) is Errno.NOTDIR
    relative = table.open("b", table.directory(table.open("/in/d", directory=True)))
    assert table.read(relative, 5) == b"B"


def test_renumber(table: DescriptorTable) -> None:
    fd = table.open("/in/a")
    table.renumber(fd, 1)  # dup2 + close: replaces stdout
    assert fd not in table
    assert table.read(1, 3) == b"abc"
    table.renumber(1, 1)
    assert table.read(1, 3) == b"def"
    assert errno_of(table.renumber, 42, 1) is Errno.BADF
    assert errno_of(table.renumber, 1, -1) is Errno.BADF
