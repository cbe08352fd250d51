"""argv/environ word splitting (as Dandelion's SDK) and output-name keys."""

from __future__ import annotations

import pytest

from pappus.vfs import split_key, split_words


@pytest.mark.parametrize(("text", "words"), [
    (b"stdio flag0 flag1", [b"stdio", b"flag0", b"flag1"]),  # Dandelion's stdio oracle
    (b"HOME=test_home\0", [b"HOME=test_home"]),
    (b"A=1\0B=2\0", [b"A=1", b"B=2"]),
    (b"  lead   and trail  ", [b"lead", b"and", b"trail"]),
    (b'prog "a b" c', [b"prog", b"a b", b"c"]),
    (b"prog 'a \"b' c", [b"prog", b'a "b', b"c"]),  # the other quote is literal
    (b'x"y z"w', [b"xy zw"]),  # quoted parts join their neighbours
    (b'"" x', [b"", b"x"]),  # an empty quoted word is a word
    (b'"unterminated x', [b"unterminated x"]),
    (b'"a\0b"', [b"a", b"b"]),  # NUL ends a word even inside quotes
    (b"tab\tand\nnewline", [b"tab\tand\nnewline"]),  # only spaces and NULs separate
    (b"", []),
    (b" \0 ", []),
])
def test_split_words(text: bytes, words: list[bytes]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize(("path", "expected"), [
    ("words@7", ("words", 7)),
    ("words", ("words", 0)),
    ("a/b@3", ("a/b", 3)),
    ("a@3/b", ("a@3/b", 0)),  # only the last component
    ("@5", ("", 5)),
    ("x@4294967295", ("x", 4294967295)),
    ("x@4294967296", ("x@4294967296", 0)),  # not a u32: part of the name
    ("x@007", ("x", 7)),
    ("x@", ("x@", 0)),
    ("x@1a", ("x@1a", 0)),
    ("mail@host@2", ("mail@host", 2)),
])
def test_split_key(path: str, expected: tuple[str, int]) -> None:
    assert split_key(path) == expected
