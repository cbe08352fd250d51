"""The set-backed file tree: inputs, outputs, keys, stdio, permissions, path resolution, bounds."""

from __future__ import annotations

import pytest

from pappus.model import DataSet, Item
from pappus.vfs import (
    Directory,
    Errno,
    File,
    OutputLimitExceeded,
    SetFileSystem,
    VfsError,
    decode_path,
)


def fs_of(*inputs: DataSet | None, outputs: tuple[str, ...] = ("out",), limit: int = 1 << 20,
          names: tuple[str, ...] = (), **options: int) -> SetFileSystem:
    mapping = {(names[i] if i < len(names) else s.name if s else f"absent{i}"): s
               for i, s in enumerate(inputs)}
    return SetFileSystem(mapping, outputs, limit, program_name="fn",
                         **options)


def create(fs: SetFileSystem, path: str, data: bytes = b"") -> File:
    node = fs.open(path, create=True, write=True)
    assert isinstance(node, File)
    fs.write(node, len(node.data), data)
    return node


def errno_of(call: object, *args: object, **kwargs: object) -> Errno:
    with pytest.raises(VfsError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value.errno


# -- inputs --------------------------------------------------------------------------------


def test_input_items_are_read_only_files() -> None:
    fs = fs_of(DataSet("in", (Item("a", 1, b"A"), Item("d/e/b", 2, b"B"))))
    a = fs.resolve("/in/a")
    assert isinstance(a, File) and a.data == b"A" and not a.writable
    assert isinstance(fs.resolve("/in/d/e"), Directory)
    assert fs.resolve("in/d/e/b").data == b"B"  # type: ignore[union-attr]
    assert errno_of(fs.open, "/in/a", write=True) is Errno.ROFS
    assert errno_of(fs.open, "/in/new", create=True, write=True) is Errno.ROFS
    assert errno_of(fs.unlink, "/in/a") is Errno.ROFS
    assert errno_of(fs.mkdir, "/in/x") is Errno.ROFS
    assert errno_of(fs.rename, "/in/a", "/out/a") is Errno.ROFS


@pytest.mark.parametrize("bad", ["", "a//b", "./a", "a/..", "../x", "a/./b", "a\nb", "x" * 256])
def test_items_with_unusable_names_are_not_shown(bad: str) -> None:
    fs = fs_of(DataSet("in", (Item(bad, 1, b"hidden"), Item("ok", 2, b"shown"))))
    directory = fs.resolve("/in")
    assert isinstance(directory, Directory)
    assert list(directory.entries) == ["ok"]
    assert fs.resolve("/.pappus/keys/in").data == b"2 ok\n"  # type: ignore[union-attr]


def test_the_first_item_wins_a_path() -> None:
    fs = fs_of(DataSet("in", (Item("a", 1, b"first"), Item("a", 2, b"second"),
                              Item("a/b", 3, b"under a file"))))
    assert fs.resolve("/in/a").data == b"first"  # type: ignore[union-attr]
    assert fs.resolve("/.pappus/keys/in").data == b"1 a\n"  # type: ignore[union-attr]


def test_keys_listing_per_input_set() -> None:
    fs = fs_of(DataSet("in", (Item("x y", 7, b""), Item("d/z", 2**32 - 1, b""))), None,
               names=("in", "other"))
    assert fs.resolve("/.pappus/keys/in").data == (  # type: ignore[union-attr]
        b"7 x y\n4294967295 d/z\n")
    assert fs.resolve("/.pappus/keys/other").data == b""  # type: ignore[union-attr]
    assert isinstance(fs.resolve("/other"), Directory)  # an absent set is an empty directory
    assert errno_of(fs.open, "/.pappus/keys/in", write=True) is Errno.ROFS


@pytest.mark.parametrize("name", [".pappus", ".hidden", "a/b", "", ".."])
def test_reserved_and_unusable_set_names_are_not_mounted(name: str) -> None:
    fs = SetFileSystem({name: DataSet(name, (Item("f", 0, b"x"),))}, (name,), 100)
    assert errno_of(fs.resolve, "/.pappus/keys/x") is Errno.NOENT
    assert set(fs.root.entries) == {".pappus"}
    assert fs.collect_outputs() == (DataSet(name, ()),)


# -- stdio ---------------------------------------------------------------------------------


def test_stdio_items() -> None:
    stdio = DataSet("stdio", (Item("stdin", 0, b"input"), Item("argv", 0, b"p 'a b'"),
                              Item("environ", 0, b"A=1\0B=2"), Item("other", 0, b"o")))
    fs = fs_of(stdio, outputs=("stdio",))
    assert fs.stdin.data == b"input"
    assert (fs.argv, fs.environ) == ([b"p", b"a b"], [b"A=1", b"B=2"])
    assert fs.resolve("/stdio/argv").data == b"p 'a b'"  # type: ignore[union-attr]
    assert fs.resolve("/stdio/stdout") is fs.stdout
    create(fs, "/stdio/extra", b"more")
    fs.write(fs.stderr, 0, b"err")
    assert fs.collect_outputs() == (DataSet("stdio", (
        Item("stdout", 0, b""), Item("stderr", 0, b"err"), Item("extra", 0, b"more"))),)
    assert errno_of(fs.unlink, "/stdio/stdout") is Errno.ROFS
    assert errno_of(fs.unlink, "/stdio/stdin") is Errno.ROFS


def test_stdio_defaults() -> None:
    fs = fs_of(outputs=())
    assert (fs.argv, fs.environ, fs.stdin.data) == ([b"fn"], [], b"")
    fs.write(fs.stdout, 0, b"captured")
    assert fs.stdout.data == b"captured"  # kept for error reports...
    assert fs.collect_outputs() == ()  # ...but not emitted
    assert errno_of(fs.resolve, "/stdio/stdout") is Errno.NOENT


# -- outputs -------------------------------------------------------------------------------


def test_outputs_in_creation_order_with_keys_and_nesting() -> None:
    fs = fs_of(outputs=("out", "empty"))
    create(fs, "/out/b", b"1")
    fs.mkdir("/out/d")
    create(fs, "/out/d/c@9", b"2")
    create(fs, "/out/a@4294967295", b"3")
    create(fs, "/out/@5", b"4")
    assert fs.collect_outputs() == (
        DataSet("out", (Item("b", 0, b"1"), Item("d/c", 9, b"2"), Item("a", 2**32 - 1, b"3"),
                        Item("", 5, b"4"))),
        DataSet("empty", ()))


def test_a_set_that_is_input_and_output() -> None:
    fs = fs_of(DataSet("data", (Item("in", 0, b"x"), Item("d/in2", 0, b"y"))),
               outputs=("data",))
    create(fs, "/data/new", b"n")
    create(fs, "/data/d/new2", b"m")  # input sub-directories accept new files
    assert errno_of(fs.open, "/data/in", write=True) is Errno.ROFS
    assert errno_of(fs.rmdir, "/data/d") is Errno.ROFS  # the host's directory stays
    assert fs.collect_outputs() == (
        DataSet("data", (Item("new", 0, b"n"), Item("d/new2", 0, b"m"))),)


def test_renamed_files_keep_their_creation_order() -> None:
    fs = fs_of()
    create(fs, "/out/first", b"1")
    create(fs, "/out/second", b"2")
    fs.rename("/out/first", "/out/renamed@3")
    assert [(i.name, i.key) for i in fs.collect_outputs()[0].items] == [
        ("renamed", 3), ("second", 0)]


# -- paths and changes -----------------------------------------------------------------------


def test_path_resolution() -> None:
    fs = fs_of(DataSet("in", (Item("d/f", 0, b"x"),)))
    directory = fs.resolve("/in/d")
    assert isinstance(directory, Directory)
    assert fs.resolve("f", directory).data == b"x"  # type: ignore[union-attr]
    assert fs.resolve("../d/./f", directory).data == b"x"  # type: ignore[union-attr]
    assert fs.resolve("/../../in/d/f").data == b"x"  # type: ignore[union-attr]
    assert fs.resolve("..", fs.root) is fs.root  # the root is its own parent
    assert fs.resolve(".", directory) is directory
    assert errno_of(fs.resolve, "") is Errno.NOENT
    assert errno_of(fs.resolve, "/in/d/f/") is Errno.NOTDIR
    assert errno_of(fs.resolve, "/in/d/f/g") is Errno.NOTDIR
    assert errno_of(fs.resolve, "/in/" + "x" * 256) is Errno.NAMETOOLONG


def test_decode_path() -> None:
    assert decode_path("ä/b".encode()) == "ä/b"
    assert errno_of(decode_path, b"\xff") is Errno.ILSEQ
    assert errno_of(decode_path, b"a\0b") is Errno.INVAL
    assert errno_of(decode_path, b"a" * 4097) is Errno.NAMETOOLONG


def test_open_flags() -> None:
    fs = fs_of()
    node = create(fs, "/out/f", b"data")
    assert errno_of(fs.open, "/out/f", create=True, exclusive=True) is Errno.EXIST
    assert fs.open("/out/f", truncate=True, write=True) is node
    assert node.data == b""
    assert errno_of(fs.open, "/out/f", directory=True) is Errno.NOTDIR
    assert errno_of(fs.open, "/out", write=True) is Errno.ISDIR
    assert errno_of(fs.open, "/out/g/", create=True, write=True) is Errno.ISDIR
    assert errno_of(fs.open, "/nowhere/g", create=True) is Errno.NOENT
    assert errno_of(fs.open, "/newset", create=True, write=True) is Errno.ROFS


def test_mkdir_rmdir_unlink_rename() -> None:
    fs = fs_of()
    fs.mkdir("/out/d")
    assert errno_of(fs.mkdir, "/out/d") is Errno.EXIST
    assert errno_of(fs.mkdir, "/") is Errno.EXIST
    assert errno_of(fs.mkdir, "/out/d/..") is Errno.EXIST
    create(fs, "/out/d/f", b"x")
    assert errno_of(fs.rmdir, "/out/d") is Errno.NOTEMPTY
    assert errno_of(fs.unlink, "/out/d") is Errno.ISDIR
    assert errno_of(fs.rmdir, "/out/d/f") is Errno.NOTDIR
    assert errno_of(fs.rmdir, "/out") is Errno.ROFS  # output set directories stay
    assert errno_of(fs.rmdir, "/") is Errno.INVAL
    assert errno_of(fs.rename, "/out/d", "/out/d/inside") is Errno.INVAL
    fs.mkdir("/out/e")
    assert errno_of(fs.rename, "/out/d", "/out/e/x/y") is Errno.NOENT
    create(fs, "/out/e/g", b"y")
    assert errno_of(fs.rename, "/out/d", "/out/e") is Errno.NOTEMPTY
    assert errno_of(fs.rename, "/out/d/f", "/out/e") is Errno.ISDIR
    assert errno_of(fs.rename, "/out/e", "/out/d/f") is Errno.NOTDIR
    fs.rename("/out/d/f", "/out/e/g")  # replaces a file
    fs.unlink("/out/e/g")
    fs.rmdir("/out/d")
    fs.rename("/out/e", "/out/moved")
    assert [i.name for i in fs.collect_outputs()[0].items] == []
    assert isinstance(fs.resolve("/out/moved"), Directory)
    assert fs.resolve("/out/moved/..") is fs.resolve("/out")  # parent links follow renames


# -- bounds --------------------------------------------------------------------------------


def test_output_bytes_are_bounded() -> None:
    fs = fs_of(limit=10)
    node = create(fs, "/out/f", b"12345")
    fs.write(node, 0, b"abc")  # overwriting does not grow the file
    assert fs.output_bytes == 5
    fs.truncate(node, 2)  # shrinking gives bytes back
    assert fs.output_bytes == 2
    fs.write(fs.stdout, 0, b"1234")  # stdout counts too
    assert "output_bytes=6/10" in repr(fs)
    with pytest.raises(OutputLimitExceeded, match="output limit of 10 bytes"):
        fs.write(node, 2, b"12345")
    assert node.data == b"ab"  # nothing written past the limit
    fs.unlink("/out/f")  # deleting does not give bytes back (they were written)
    assert fs.output_bytes == 6
    with pytest.raises(OutputLimitExceeded):
        fs.truncate(create(fs, "/out/g"), 5)
    with pytest.raises(OutputLimitExceeded):
        fs.write(create(fs, "/out/h"), 2**40, b"x")  # a far offset is charged, not allocated


def test_writes_extend_with_zeros() -> None:
    fs = fs_of()
    node = create(fs, "/out/f")
    fs.write(node, 3, b"x")
    assert node.data == b"\0\0\0x"
    assert fs.output_bytes == 4


def test_created_nodes_are_bounded() -> None:
    fs = fs_of(max_nodes=3)
    fs.mkdir("/out/a")
    create(fs, "/out/a/b")
    create(fs, "/out/c")
    assert errno_of(fs.mkdir, "/out/d") is Errno.NOSPC
    assert errno_of(fs.open, "/out/e", create=True, write=True) is Errno.NOSPC


def test_nothing_can_be_added_to_or_removed_from_the_root() -> None:
    """The root's entries are fixed for a run (the linux engine's fast path relies on it)."""
    fs = fs_of(DataSet("in", (Item("a", 0, b"x"),)), outputs=("out", "stdio"))
    before = dict(fs.root.entries)
    create(fs, "/out/file", b"data")
    attempts = [lambda: fs.mkdir("/new"), lambda: fs.open("/new", create=True, write=True),
                lambda: fs.rename("/out/file", "/new"), lambda: fs.rename("/out", "/other"),
                lambda: fs.rmdir("/out"), lambda: fs.unlink("/in"), lambda: fs.rmdir("/in")]
    for attempt in attempts:
        with pytest.raises(VfsError):
            attempt()
    assert fs.root.entries == before
