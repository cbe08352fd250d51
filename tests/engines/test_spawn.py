"""spawn(): a helper program starts with exactly the descriptors given and default signals."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from pappus.engines.spawn import spawn

SH = "/bin/sh"


def _run(script: str, descriptors: dict[int, int]) -> int:
    pid = spawn(SH, ["sh", "-c", script], descriptors)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_child_gets_the_given_descriptors_and_default_signal_state() -> None:
    read_end, write_end = os.pipe()
    try:
        status = _run("grep -E '^Sig(Blk|Ign)' /proc/self/status; ls /proc/self/fd",
                      {1: write_end})
    finally:
        os.close(write_end)
    text = _read_all(read_end).decode()
    os.close(read_end)
    assert status == 0, text
    fields = dict(line.split(":\t") for line in text.splitlines() if ":\t" in line)
    ignored = int(fields["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), "SIGPIPE must not stay ignored"
    assert not ignored & (1 << (signal.SIGXFSZ - 1))
    assert int(fields["SigBlk"], 16) == 0


def test_crossed_descriptors_are_each_duplicated_from_the_original() -> None:
    first_r, first_w = os.pipe()
    second_r, second_w = os.pipe()
    high = (900, 901)  # numbers nothing else here uses, so they can be given exactly
    try:
        os.dup2(first_w, high[0], inheritable=False)
        os.dup2(second_w, high[1], inheritable=False)
        os.close(first_w)
        os.close(second_w)
        # Crossed: the child's 900 is our 901 and its 901 our 900.
        script = "import os; os.write(900, b'to-900'); os.write(901, b'to-901')"
        pid = spawn(sys.executable, ["python", "-c", script], {900: 901, 901: 900})
        _, status = os.waitpid(pid, 0)
    finally:
        for fd in high:
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _read_all(second_r) == b"to-900"
    assert _read_all(first_r) == b"to-901"
    os.close(first_r)
    os.close(second_r)


def test_a_missing_program_is_an_os_error() -> None:
    with pytest.raises(OSError):
        spawn("/nonexistent/program", ["x"], {})
