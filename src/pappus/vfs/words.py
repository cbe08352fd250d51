"""The two small text conventions of the file system: argv/environ words and ``@key`` names."""

from __future__ import annotations

import re

from pappus.model import MAX_KEY

SPACE, NUL = 0x20, 0x00
QUOTES = (0x22, 0x27)  # " and '
_KEY_SUFFIX = re.compile(r"(?P<name>.*)@(?P<key>[0-9]{1,10})", re.DOTALL)


def split_words(text: bytes) -> list[bytes]:
    """Split the ``argv`` or ``environ`` item of set ``stdio`` into words, as Dandelion's SDK.

    * Words are separated by runs of spaces (0x20) or NULs (0x00); leading and
      trailing separators are ignored. Tabs and newlines are ordinary characters.
    * A ``"`` or ``'`` opens a quoted section that runs to the next quote of the
      same kind (or the end of the text); the quote characters are dropped and
      spaces inside are kept: ``b'prog "a b"c'`` → ``[b"prog", b"a bc"]``.
      ``""`` alone is an empty word.
    * A NUL always ends the word, even inside quotes (a C string cannot hold
      one), so ``b"A=1\\0B=2\\0"`` → ``[b"A=1", b"B=2"]``.
    """
    words: list[bytes] = []
    current = bytearray()
    in_word = False
    quote: int | None = None
    for byte in text:
        if byte == NUL or (byte == SPACE and quote is None):
            if in_word:
                words.append(bytes(current))
                current.clear()
                in_word = False
            quote = None
        elif quote is not None:
            if byte == quote:
                quote = None
            else:
                current.append(byte)
        elif byte in QUOTES:
            quote = byte
            in_word = True
        else:
            current.append(byte)
            in_word = True
    if in_word:
        words.append(bytes(current))
    return words


def split_key(path: str) -> tuple[str, int]:
    """An output file's item name and key: ``words@7`` → ``("words", 7)``.

    Only the last path component may carry the suffix (``a/b@3`` → ``("a/b",
    3)``); its digits must give a value ≤ 2³²-1, otherwise the name is kept
    whole with key 0, as is a name without a suffix (the Dandelion SDK's key).
    ``@5`` alone names an item with the empty name and key 5.
    """
    head, slash, last = path.rpartition("/")
    match = _KEY_SUFFIX.fullmatch(last)
    if match is None or int(match["key"]) > MAX_KEY:
        return path, 0
    return f"{head}{slash}{match['name']}", int(match["key"])
