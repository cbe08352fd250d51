"""Demo functions preloaded by ``pappus serve --demo``.

They are our own WebAssembly text, assembled at load time (no binary is
shipped), and speak the file convention of :mod:`pappus.vfs`:

* ``upper`` and ``reverse`` read item ``text`` of input set ``in`` (the file
  ``/in/text``) and write item ``text`` of output set ``out``;
* ``wordcount`` writes, for every item of input set ``text``, an item of
  output set ``counts`` with the same name and key holding its number of
  words (it lists the items and keys in ``/.pappus/keys/text`` and sets each
  output key with an ``@<key>`` file-name suffix).

:data:`DEMO_COMPOSITION` chains them: ``shout_backwards`` (``upper`` then
``reverse`` on every item) and ``loud_word_counts`` (``upper`` then
``wordcount`` on every item).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import wasmtime

TRANSFORMS = ("upper", "reverse")
"""Functions made of ``skeleton.wat`` plus ``<name>.wat`` (a byte transform)."""


@dataclass(frozen=True, slots=True)
class DemoFunction:
    """A demo function ready to register."""

    name: str
    engine: str
    binary: bytes
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _assemble(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def load_demo() -> list[DemoFunction]:
    """Assemble the demo functions (``upper``, ``reverse``, ``wordcount``)."""
    skeleton = _text("skeleton.wat")
    functions = [
        DemoFunction(
            name=name,
            engine="wasm",
            binary=_assemble(skeleton.replace(";;TRANSFORM;;", _text(f"{name}.wat"))),
            input_sets=("in",),
            output_sets=("out",),
        )
        for name in TRANSFORMS
    ]
    functions.append(DemoFunction("wordcount", "wasm", _assemble(_text("wordcount.wat")),
                                  input_sets=("text",), output_sets=("counts",)))
    return functions


DEMO_COMPOSITION = _text("demo.comp")
"""Source of the demo compositions ``shout_backwards`` and ``loud_word_counts``."""
