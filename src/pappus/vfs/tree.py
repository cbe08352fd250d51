"""The file tree of one invocation, built from its sets (see :mod:`pappus.vfs` for the rules)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence

from pappus.model import DataSet, Item
from pappus.vfs.nodes import (
    Directory,
    Errno,
    File,
    Node,
    OutputLimitExceeded,
    VfsError,
    is_plain_name,
    split_path,
)
from pappus.vfs.words import split_key, split_words

STDIO = "stdio"
"""The set that carries stdin/argv/environ in and stdout/stderr out."""
META_DIR = ".pappus"
"""Top-level directory of host-provided metadata; set names starting with ``.`` are reserved."""
DEFAULT_MAX_NODES = 65_536
"""Files and directories a function may create in one run (beyond that: ``NOSPC``)."""
_NO_STDIN = File(b"", 0, writable=False)
"""Descriptor 0 without a ``stdin`` item: empty, immutable, so one object serves every run."""


class SetFileSystem:
    """The file tree of one invocation. Not thread-safe: one invocation, one thread.

    ``stdin``, ``stdout`` and ``stderr`` are the files behind descriptors 0 to 2;
    ``argv`` and ``environ`` the words of the ``stdio`` items of those names.
    ``output_bytes`` is what the function has written so far, against
    ``max_output_bytes``.
    """

    def __init__(
        self,
        inputs: Mapping[str, DataSet | None],
        output_sets: Sequence[str],
        max_output_bytes: int,
        *,
        program_name: str = "function",
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        self.output_sets = tuple(output_sets)
        self.max_output_bytes = max_output_bytes
        self.output_bytes = 0
        self.max_nodes = max_nodes
        self.created_nodes = 0
        self._inode = inode = itertools.count(1).__next__
        self.root = root = Directory(inode(), writable=False)
        self.argv: list[bytes] = [program_name.encode()]
        self.environ: list[bytes] = []
        self.stdin = _NO_STDIN
        self.stdout = File(bytearray(), inode(), writable=True)
        self.stderr = File(bytearray(), inode(), writable=True)
        self._outputs: dict[str, Directory] = {}
        for name in self.output_sets:
            if name not in root.entries and _mountable(name):
                directory = Directory(inode(), writable=True, parent=root)
                self._outputs[name] = root.entries[name] = directory
        stdio = self._outputs.get(STDIO)
        if stdio is not None:
            stdio.entries["stdout"] = self.stdout
            stdio.entries["stderr"] = self.stderr
            self.stdout.parent = self.stderr.parent = stdio
        meta = root.entries[META_DIR] = Directory(inode(), writable=False, parent=root)
        keys = meta.entries["keys"] = Directory(inode(), writable=False, parent=meta)
        for name, data_set in inputs.items():
            if name not in keys.entries and _mountable(name):
                listing = self._mount_input(name, data_set)
                keys.entries[name] = File(listing, inode(), writable=False, parent=keys)
        self._host_inodes = inode() - 1  # every later node is the function's

    def __repr__(self) -> str:
        return (f"<SetFileSystem outputs={list(self.output_sets)} created={self.created_nodes} "
                f"output_bytes={self.output_bytes}/{self.max_output_bytes}>")

    # -- construction ------------------------------------------------------------

    def _directory(self, parent: Directory, name: str, *, writable: bool) -> Directory:
        existing = parent.entries.get(name)
        if isinstance(existing, Directory):
            return existing
        directory = Directory(self._inode(), writable=writable, parent=parent)
        parent.entries[name] = directory
        return directory

    def _mount_input(self, set_name: str, data_set: DataSet | None) -> bytes:
        """Show the set's items as read-only files; return its ``/.pappus/keys`` listing."""
        directory = self._directory(self.root, set_name, writable=False)
        if data_set is None or not data_set.items:
            return b""
        lines: list[str] = []
        for item in data_set.items:
            node = self._add_input(directory, item)
            if node is None:
                continue
            lines.append(f"{item.key} {item.name}\n")
            if set_name == STDIO and "/" not in item.name:
                self._read_stdio(item, node)
        return "".join(lines).encode()

    def _add_input(self, directory: Directory, item: Item) -> File | None:
        """Link ``item`` at its path, or skip it (bad name, or the path is taken: first wins)."""
        parts = item.name.split("/")
        if "\n" in item.name or not all(is_plain_name(part) for part in parts):
            return None
        for part in parts[:-1]:
            child = directory.entries.get(part)
            if isinstance(child, File):
                return None
            directory = child or self._directory(directory, part, writable=directory.writable)
        if parts[-1] in directory.entries:
            return None
        node = File(item.data, self._inode(), writable=False, parent=directory)
        directory.entries[parts[-1]] = node
        return node

    def _read_stdio(self, item: Item, node: File) -> None:
        if item.name == "stdin":
            self.stdin = node
        elif item.name == "argv":
            self.argv = split_words(item.data)
        elif item.name == "environ":
            self.environ = split_words(item.data)

    # -- lookups -------------------------------------------------------------------

    def resolve(self, path: str, base: Directory | None = None) -> Node:
        """The node at ``path``: absolute, or relative to ``base`` (default: the root)."""
        absolute, parts, trailing_slash = split_path(path)
        if not path:
            raise VfsError(Errno.NOENT, path)
        node: Node = self.root if absolute or base is None else base
        for part in parts:
            if not isinstance(node, Directory):
                raise VfsError(Errno.NOTDIR, path)
            if part == "..":
                node = node.up()
                continue
            child = node.entries.get(part)
            if child is None:
                raise VfsError(Errno.NOENT, path)
            node = child
        if trailing_slash and not isinstance(node, Directory):
            raise VfsError(Errno.NOTDIR, path)
        return node

    def parent_of(self, path: str, base: Directory | None = None) -> tuple[Directory, str]:
        """The directory holding ``path``'s last component, and that component.

        Raises ``EXIST`` when the path names an existing directory by ``/``, ``.``
        or ``..`` (nothing there can be created or removed by that name).
        """
        absolute, parts, _ = split_path(path)
        if not path:
            raise VfsError(Errno.NOENT, path)
        if not parts or parts[-1] == "..":
            raise VfsError(Errno.EXIST, path)
        prefix = "/".join(parts[:-1])
        if absolute:
            parent = self.resolve("/" + prefix)
        else:
            parent = self.resolve(prefix, base) if prefix else (base or self.root)
        if not isinstance(parent, Directory):
            raise VfsError(Errno.NOTDIR, path)
        return parent, parts[-1]

    # -- changes -------------------------------------------------------------------

    def _new_node_allowed(self, parent: Directory, path: str) -> None:
        if not parent.writable:
            raise VfsError(Errno.ROFS, path)
        if self.created_nodes >= self.max_nodes:
            raise VfsError(Errno.NOSPC, path)
        self.created_nodes += 1

    def open(self, path: str, base: Directory | None = None, *, create: bool = False,
             exclusive: bool = False, truncate: bool = False, directory: bool = False,
             write: bool = False) -> Node:
        """Find (and with ``create`` make) the node to open, checking the access asked for."""
        try:
            node = self.resolve(path, base)
        except VfsError as error:
            if error.errno is not Errno.NOENT or not create:
                raise
            parent, name = self.parent_of(path, base)
            if path.endswith("/") or directory:
                raise VfsError(Errno.ISDIR, path) from None
            self._new_node_allowed(parent, path)
            new = File(bytearray(), self._inode(), writable=True, parent=parent)
            parent.entries[name] = new
            return new
        if create and exclusive:
            raise VfsError(Errno.EXIST, path)
        if isinstance(node, Directory):
            if write or truncate:
                raise VfsError(Errno.ISDIR, path)
            return node
        if directory:
            raise VfsError(Errno.NOTDIR, path)
        if (write or truncate) and not node.writable:
            raise VfsError(Errno.ROFS, path)
        if truncate:
            self.truncate(node, 0)
        return node

    def mkdir(self, path: str, base: Directory | None = None) -> Directory:
        """Create a directory inside a writable directory."""
        parent, name = self.parent_of(path, base)
        if name in parent.entries:
            raise VfsError(Errno.EXIST, path)
        self._new_node_allowed(parent, path)
        directory = Directory(self._inode(), writable=True, parent=parent)
        parent.entries[name] = directory
        return directory

    def _removable(self, path: str, base: Directory | None) -> tuple[Directory, str, Node]:
        try:
            parent, name = self.parent_of(path, base)
        except VfsError as error:
            if error.errno is Errno.EXIST:  # "/", "." or "..": never removable
                raise VfsError(Errno.INVAL, path) from None
            raise
        node = parent.entries.get(name)
        if node is None:
            raise VfsError(Errno.NOENT, path)
        if not parent.writable or not _created_by_function(node, self):
            raise VfsError(Errno.ROFS, path)
        return parent, name, node

    def unlink(self, path: str, base: Directory | None = None) -> None:
        """Remove a file the function created. Its bytes stay counted as output."""
        parent, name, node = self._removable(path, base)
        if isinstance(node, Directory):
            raise VfsError(Errno.ISDIR, path)
        del parent.entries[name]
        node.parent = None

    def rmdir(self, path: str, base: Directory | None = None) -> None:
        """Remove an empty directory the function created."""
        parent, name, node = self._removable(path, base)
        if not isinstance(node, Directory):
            raise VfsError(Errno.NOTDIR, path)
        if node.entries:
            raise VfsError(Errno.NOTEMPTY, path)
        del parent.entries[name]
        node.parent = None

    def rename(self, old: str, new: str, old_base: Directory | None = None,
               new_base: Directory | None = None) -> None:
        """Move a node the function created (replacing a file or an empty directory)."""
        source_parent, source_name, node = self._removable(old, old_base)
        target_parent, target_name = self.parent_of(new, new_base)
        if not target_parent.writable:
            raise VfsError(Errno.ROFS, new)
        if isinstance(node, Directory) and _is_within(target_parent, node):
            raise VfsError(Errno.INVAL, new)
        existing = target_parent.entries.get(target_name)
        if existing is node:
            return
        if existing is not None:
            if not _created_by_function(existing, self):
                raise VfsError(Errno.ROFS, new)
            if isinstance(node, Directory) != isinstance(existing, Directory):
                raise VfsError(Errno.ISDIR if isinstance(existing, Directory) else Errno.NOTDIR,
                               new)
            if isinstance(existing, Directory) and existing.entries:
                raise VfsError(Errno.NOTEMPTY, new)
            existing.parent = None
        del source_parent.entries[source_name]
        target_parent.entries[target_name] = node
        node.parent = target_parent

    def _charge(self, extra: int) -> None:
        if self.output_bytes + extra > self.max_output_bytes:
            raise OutputLimitExceeded(self.max_output_bytes)
        self.output_bytes += extra

    def write(self, node: File, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset`` (a gap reads as zeros); returns the bytes written."""
        content = node.data
        if not node.writable or not isinstance(content, bytearray):
            raise VfsError(Errno.BADF)
        end = offset + len(data)
        if end > len(content):
            self._charge(end - len(content))
            if offset > len(content):
                content.extend(bytes(offset - len(content)))
        content[offset:end] = data
        return len(data)

    def truncate(self, node: File, size: int) -> None:
        """Set a writable file's size (shrinking gives the bytes back to the output budget)."""
        content = node.data
        if not node.writable or not isinstance(content, bytearray):
            raise VfsError(Errno.BADF)
        if size > len(content):
            self._charge(size - len(content))
            content.extend(bytes(size - len(content)))
        else:
            self.output_bytes -= len(content) - size
            del content[size:]

    # -- results -------------------------------------------------------------------

    def stderr_tail(self, limit: int) -> bytes:
        """The last ``limit`` bytes the function wrote to stderr."""
        return bytes(self.stderr.data[-limit:])

    def stderr_detail(self, limit: int) -> dict[str, str]:
        """The last ``limit`` bytes of stderr as error detail (empty if nothing was written)."""
        tail = self.stderr_tail(limit)
        return {"stderr": tail.decode("utf-8", "replace")} if tail else {}

    def collect_outputs(self) -> tuple[DataSet, ...]:
        """One set per declared output set, in declaration order; items in creation order."""
        sets: list[DataSet] = []
        for name in self.output_sets:
            items: list[Item] = []
            if name == STDIO:
                items += [Item("stdout", 0, bytes(self.stdout.data)),
                          Item("stderr", 0, bytes(self.stderr.data))]
            directory = self._outputs.get(name)
            if directory is not None and self.created_nodes:
                files = sorted(_created_files(directory, "", self), key=lambda f: f[1].inode)
                for path, node in files:
                    item_name, key = split_key(path)
                    items.append(Item(item_name, key, bytes(node.data)))
            sets.append(DataSet(name, tuple(items)))
        return tuple(sets)


@functools.lru_cache(maxsize=4096)  # the same few set names, call after call
def _mountable(set_name: str) -> bool:
    return is_plain_name(set_name) and not set_name.startswith(".")


def _created_by_function(node: Node, fs: SetFileSystem) -> bool:
    """Nodes made while building the tree (inputs, set directories, captures) are fixed."""
    return node.inode > fs._host_inodes


def _is_within(node: Directory, ancestor: Directory) -> bool:
    current: Directory | None = node
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _created_files(directory: Directory, prefix: str, fs: SetFileSystem
                   ) -> Iterator[tuple[str, File]]:
    for name, node in directory.entries.items():
        if isinstance(node, Directory):
            yield from _created_files(node, f"{prefix}{name}/", fs)
        elif _created_by_function(node, fs):
            yield f"{prefix}{name}", node
