"""pappus' own WASI preview1 layer, over the set-backed file system (:mod:`pappus.vfs`).

Wasmtime's built-in WASI is never used and no host directory, socket,
environment variable or clock is ever exposed: the function sees exactly
the file tree :class:`pappus.vfs.SetFileSystem` builds from its sets.

* Descriptors: 0 stdin, 1 stdout, 2 stderr (character devices), 3 the
  preopened root ``/`` (how wasi-libc resolves absolute paths), then files
  and directories the function opens.
* All 46 preview1 calls are defined; those with no honest answer here refuse
  with ``ENOTSUP`` (sockets, links, timestamps, rights) or ``ENOSYS``
  (``proc_raise``) — never a faked success. See :mod:`.wasi_process` (clocks
  are logical, ``random_get`` is deterministic) and :mod:`.wasi_files`.
* Every guest pointer and length is bounds-checked (:mod:`.memory`): a bad
  one gets ``EFAULT``. File-system errors become their errno. An unexpected
  exception in a host call (a pappus bug) ends the run as a crash, never the
  worker.
"""

from __future__ import annotations

from collections.abc import Mapping

import wasmtime

from pappus.engines.wasm import native, wasi_files, wasi_process
from pappus.engines.wasm.memory import Fault
from pappus.engines.wasm.wasi_abi import (
    EFAULT,
    MODULE,
    WASI_ERRNO,
    HostCallFailed,
    HostImpl,
    ProcExit,
    WasiState,
)
from pappus.vfs import OutputLimitExceeded, SetFileSystem, VfsError

CALLS: dict[str, tuple[list[str], HostImpl]] = {**wasi_process.CALLS.calls,
                                                **wasi_files.CALLS.calls}
NO_RESULT = frozenset({"proc_exit"})


def signature(name: str) -> tuple[list[str], list[str]]:
    """The wasm parameter and result types of preview1 call ``name``."""
    params, _ = CALLS[name]
    return params, [] if name in NO_RESULT else ["i32"]


def known_calls() -> Mapping[str, tuple[list[str], list[str]]]:
    """Every call this layer defines, with its wasm signature."""
    return {name: signature(name) for name in CALLS}


def _host(name: str, impl: HostImpl) -> native.HostImpl:
    def call(context: native.InvocationContext, *args: int) -> int:
        state: WasiState = context.host_state  # type: ignore[assignment]  # set by the engine
        try:
            state.host_calls += 1
            return impl(state, context.guest_memory(), *args)
        except Fault:
            return EFAULT
        except VfsError as error:
            return WASI_ERRNO[error.errno]
        except (ProcExit, OutputLimitExceeded):
            raise
        except Exception as error:
            raise HostCallFailed(name, error) from error

    return call


def define_wasi(linker: wasmtime.Linker) -> list[object]:
    """Define every preview1 call in ``linker``; keep the result alive as long as it."""
    return [
        native.define_host_function(linker, MODULE, name, params,
                                    returns_i32=name not in NO_RESULT, impl=_host(name, impl))
        for name, (params, impl) in CALLS.items()
    ]


def new_state(fs: SetFileSystem) -> WasiState:
    """The WASI state of one invocation over ``fs``."""
    return WasiState.create(fs)
