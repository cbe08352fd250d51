"""A set-backed virtual file system: the one function-facing file convention.

Built per invocation from the function's sets; it never touches a host file.
Engines are front ends: the wasm engine's WASI layer (and later the linux
engine's syscall layer) turn their calls into :class:`DescriptorTable` and
:class:`SetFileSystem` operations and map :class:`Errno` to their numbers.

The convention (the Dandelion SDK's, reference §4.3, plus keys):

**Inputs.** Input set ``S`` item ``I`` is the read-only file ``/S/I``; a ``/``
in an item name makes sub-directories. An item is not shown when its name is
empty, has an empty, ``.`` or ``..`` component, a component over 255 bytes or
a newline, or when its path is already taken (the first item wins). An absent
(``None``) set is an empty directory.

**Outputs.** Each declared output set ``O`` is the writable directory ``/O/``.
When the run ends every regular file the function created under it
(recursively) becomes an item, in creation order, named by its path relative
to ``/O/``. Input files are never outputs, even in a set that is both.

**Keys.** A file whose last path component ends in ``@<decimal u32>`` becomes
an item with that key and the suffix removed: ``/out/words@7`` → item
``words``, key 7; ``/out/a/b@3`` → ``a/b``, key 3. Without a suffix (or with a
value above 2³²-1) the key is 0, as in the Dandelion SDK. Input keys are in the
read-only file ``/.pappus/keys/<S>``: one line ``<key> <item name>\\n`` per
shown item, in set order. Set names starting with ``.`` are reserved (never
mounted), as are names that are not a single path component.

**stdio.** Input items ``stdin`` (the file behind descriptor 0; empty when
absent), ``argv`` and ``environ`` (split into words by :func:`split_words`;
without ``argv`` the arguments are just the function's name — wasi-libc would
otherwise hand ``main`` a NULL ``argv``). Descriptors 1 and 2 write the files
``stdout`` and ``stderr``; when ``stdio`` is a declared output set they are
``/stdio/stdout`` and ``/stdio/stderr`` and always its first two items
(possibly empty), followed by any other file the function creates in
``/stdio/``. Otherwise they are still captured (engines quote ``stderr`` in
errors) but not emitted.

**Bounds.** Output bytes are counted as written: every byte by which a file
the function writes (including stdout and stderr) grows counts; truncating
gives bytes back, deleting or replacing a file does not (its bytes were
written). Passing ``max_output_bytes`` raises :class:`OutputLimitExceeded`,
which ends the run (``bad_output``) — it is not an error code the function
could ignore. A function may create at most 65,536 files and directories
(``NOSPC``) and hold 1,024 descriptors (``MFILE``).
"""

from pappus.vfs.descriptors import DEFAULT_MAX_DESCRIPTORS as DEFAULT_MAX_DESCRIPTORS
from pappus.vfs.descriptors import DescriptorTable as DescriptorTable
from pappus.vfs.descriptors import NodeKind as NodeKind
from pappus.vfs.descriptors import OpenFile as OpenFile
from pappus.vfs.descriptors import Stat as Stat
from pappus.vfs.descriptors import stat_node as stat_node
from pappus.vfs.nodes import MAX_NAME_BYTES as MAX_NAME_BYTES
from pappus.vfs.nodes import MAX_PATH_BYTES as MAX_PATH_BYTES
from pappus.vfs.nodes import Directory as Directory
from pappus.vfs.nodes import Errno as Errno
from pappus.vfs.nodes import File as File
from pappus.vfs.nodes import Node as Node
from pappus.vfs.nodes import OutputLimitExceeded as OutputLimitExceeded
from pappus.vfs.nodes import VfsError as VfsError
from pappus.vfs.nodes import decode_path as decode_path
from pappus.vfs.tree import DEFAULT_MAX_NODES as DEFAULT_MAX_NODES
from pappus.vfs.tree import META_DIR as META_DIR
from pappus.vfs.tree import STDIO as STDIO
from pappus.vfs.tree import SetFileSystem as SetFileSystem
from pappus.vfs.words import split_key as split_key
from pappus.vfs.words import split_words as split_words

__all__ = [
    "DEFAULT_MAX_DESCRIPTORS",
    "DEFAULT_MAX_NODES",
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "META_DIR",
    "STDIO",
    "DescriptorTable",
    "Directory",
    "Errno",
    "File",
    "Node",
    "NodeKind",
    "OpenFile",
    "OutputLimitExceeded",
    "SetFileSystem",
    "Stat",
    "VfsError",
    "decode_path",
    "split_key",
    "split_words",
    "stat_node",
]
