"""Differential test, gVisor-style: busybox applets in the sandbox against the same binary natively.

Each case runs Debian's static ``/bin/busybox`` twice on the same generated
files: natively (``cwd`` a temporary directory holding ``in/NAME`` and an
empty ``out/``) and in the linux engine (the files are items of set ``in``,
so ``in/NAME`` resolves to ``/in/NAME`` from the sandbox's working directory
``/``). Both runs get the same argv (``argv[0]`` is the applet), the same
environment (``TZ=UTC0`` only) and the same stdin; stdout and the exit
status must be identical, and so must every file written under ``out/``.

Native input files get what the sandbox reports for inputs: modification
time 0 (``gzip`` headers agree) and mode 0444 (``uuencode`` prints it). The
native runs happen on tmpfs when there is one. Inputs are seeded, so a
failure reproduces. Applets that need a second process (pipelines, ``zcat``,
which forks its decompressor) cannot match and are not here; see
``test_ordinary_programs.py`` for how they must fail.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import random
import subprocess
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from pappus.errors import ForbiddenSyscall
from tests.engines.linux.support import (
    BUSYBOX,
    Sandbox,
    busybox_binary,
    mtime_zero,
    native_environment,
)

ENVIRON = ("TZ=UTC0",)
SEED = 20240505
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
         "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau",
         "upsilon", "phi", "chi", "psi", "omega", "Abc", "abacus", "cab", "42", "007")


def _text(rng: random.Random, lines: int) -> bytes:
    out = []
    for _ in range(lines):
        words = [rng.choice(WORDS) for _ in range(rng.randint(0, 9))]
        separator = "\t" if rng.random() < 0.15 else " "
        out.append(separator.join(words))
    return ("\n".join(out) + "\n").encode()


def _tar(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        directory = tarfile.TarInfo("docs")
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 1_000_000_000
        archive.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_234_567_890
            info.uname, info.gname = "alice", "staff"
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2001, 9, 9, 1, 46, 40)), data)
    return buffer.getvalue()


def make_inputs() -> dict[str, bytes]:
    """The files every case may use, from a fixed seed."""
    rng = random.Random(SEED)
    text = _text(rng, 300)
    lines = text.splitlines(keepends=True)
    other = bytearray(text)
    middle = next(i for i in range(len(text) // 2, len(text)) if chr(text[i]).isalpha())
    other[middle] ^= 0x20  # one letter changes case, in the middle
    edited = [*lines[:40], b"an inserted line\n", *lines[40:200], *lines[203:]]
    binary = rng.randbytes(4096)
    big = rng.randbytes(256 << 10)  # above the engine's real-file threshold (32 KiB)
    big_text = _text(rng, 6000)
    numbers = "".join(f"{rng.randint(-10_000, 10_000)}\n" for _ in range(500)).encode()
    csv = "".join(
        f"{rng.choice(WORDS)},{rng.randint(0, 999)},{rng.choice(WORDS)},{rng.random():.4f}\n"
        for _ in range(200)
    ).encode()
    tabs = b"".join(
        b"\t".join(rng.choice(WORDS).encode() for _ in range(rng.randint(1, 6))) + b"\n"
        for _ in range(80)
    )
    repeated = b"".join(sorted(rng.choice(WORDS).encode() + b"\n" for _ in range(400)))
    return {
        "text": text,
        "same": bytes(text),
        "other": bytes(other),
        "edited": b"".join(edited),
        "bin": binary,
        "big": big,
        "bigtext": big_text,
        "numbers": numbers,
        "csv": csv,
        "tabs": tabs,
        "spaced": tabs.replace(b"\t", b" " * 9),
        "repeated": repeated,
        "huge": rng.randbytes(3 << 20),  # more than one emulated transfer (1 MiB)
        "text.gz": gzip.compress(text, mtime=0),
        "text.bz2": bz2.compress(text),
        "x.zip": _zip({"docs/text": text, "csv": csv}),
        "big.gz": gzip.compress(big, compresslevel=1, mtime=0),
        "text.xz": lzma.compress(text, format=lzma.FORMAT_XZ),
        "bin.b64": base64.encodebytes(binary),
        "x.tar": _tar({"docs/text": text, "docs/bin": binary, "csv": csv}),
        "sums": (hashlib.sha256(text).hexdigest() + "  in/text\n"
                 + hashlib.sha256(b"not it").hexdigest() + "  in/bin\n").encode(),
        "empty": b"",
        "calc": b"scale=20\n4*a(1)\n2^100\nsqrt(2)\n",
    }


INPUTS = make_inputs()


@dataclass(frozen=True)
class Case:
    """One applet run: ``argv`` (``argv[0]`` the applet), optional stdin from an input file.

    ``status`` is the exit status the native run must have (so a case meant to
    differ really differs); ``None`` accepts any, as long as both runs agree.
    """

    id: str
    argv: tuple[str, ...]
    stdin: str | None = None
    status: int | None = 0
    engine_bug: str | None = None


def case(id_: str, *argv: str, stdin: str | None = None, status: int | None = 0,
         engine_bug: str | None = None) -> Case:
    return Case(id_, argv, stdin, status, engine_bug)


CASES = (
    # checksums (sha256sum prints the path: the same relative path in both runs)
    case("sha256sum", "sha256sum", "in/text", "in/bin", "in/big", "in/empty"),
    case("sha256sum-stdin", "sha256sum", stdin="big"),
    case("sha256sum-check", "sha256sum", "-c", "in/sums", status=1),
    case("md5sum", "md5sum", "in/text", "in/bin", "in/big"),
    case("sha1sum", "sha1sum", "in/text", "in/big"),
    case("sha512sum", "sha512sum", "in/bigtext"),
    case("sha3sum", "sha3sum", "in/text"),
    case("crc32", "crc32", "in/bin", status=None),
    # text
    case("wc", "wc", "in/text", "in/bigtext"),
    case("wc-l-stdin", "wc", "-l", stdin="text"),
    case("wc-c-huge", "wc", "-c", "in/huge"),
    case("cat-huge-stdin", "cat", stdin="huge"),
    case("sha256sum-huge-stdin", "sha256sum", stdin="huge"),
    case("head-c-huge", "head", "-c", "1500000", "in/huge"),
    case("sed-count", "sed", "-n", "$=", "in/bigtext"),
    case("awk-getline", "awk",
         'BEGIN { while ((getline line < "in/csv") > 0) n++; print n; print ENVIRON["TZ"] }'),
    case("sort", "sort", "in/text"),
    case("sort-n", "sort", "-n", "in/numbers"),
    case("sort-ru", "sort", "-r", "-u", "in/text"),
    case("sort-t-k", "sort", "-t,", "-k2,2n", "-k1,1", "in/csv"),
    case("uniq", "uniq", "in/repeated"),
    case("uniq-c", "uniq", "-c", "in/repeated"),
    case("sed", "sed", "s/a/A/g;3d;/eta/s/^/> /", "in/text"),
    case("sed-n", "sed", "-n", "/^alpha/p", "in/text"),
    case("awk", "awk", "{ n += NF } END { print n, NR }", "in/text"),
    case("awk-fields", "awk", "-F,", "$2 > 500 { s += $2; print $1, $4 } END { print s }",
         "in/csv"),
    case("grep", "grep", "-n", "ab", "in/text"),
    case("grep-count", "grep", "-c", "-i", "ALPHA", "in/text"),
    case("grep-no-match", "grep", "zzzzzz", "in/text", status=1),
    case("grep-E-v", "grep", "-E", "-v", "^(alpha|beta)", "in/bigtext"),
    case("cut", "cut", "-d,", "-f1,3", "in/csv"),
    case("cut-c", "cut", "-c", "2-7", "in/text"),
    case("tr", "tr", "a-z", "A-Z", stdin="text"),
    case("tr-d", "tr", "-d", "aeiou\\n", stdin="bigtext"),
    case("head", "head", "-n", "7", "in/text"),
    case("head-c", "head", "-c", "100", "in/bin"),
    case("tail", "tail", "-n", "5", "in/text"),
    case("tail-c-big", "tail", "-c", "333", "in/big"),
    case("expand", "expand", "in/tabs"),
    case("expand-t", "expand", "-t", "3", "in/tabs"),
    case("unexpand", "unexpand", "-a", "in/spaced"),
    case("fold", "fold", "-w", "17", "in/text"),
    case("nl", "nl", "in/text"),
    case("rev", "rev", "in/text"),
    case("tac", "tac", "in/text"),
    case("cat-n", "cat", "-n", "in/text", "in/csv"),
    case("paste", "paste", "-d:", "in/numbers", "in/csv"),
    case("unix2dos", "unix2dos", stdin="text"),
    case("strings", "strings", "-n", "6", "in/big"),
    # encodings and binary views
    case("base64", "base64", "in/bin"),
    case("base64-d", "base64", "-d", "in/bin.b64"),
    case("od", "od", "-A", "x", "-t", "x1", "in/bin"),
    case("od-c", "od", "-c", "in/text"),
    case("xxd", "xxd", "in/bin"),
    case("xxd-p", "xxd", "-p", "in/big"),
    case("xxd-seek", "xxd", "-s", "40000", "-l", "64", "in/big"),
    case("od-skip", "od", "-j", "40000", "-N", "32", "-A", "d", "-t", "x1", "in/big"),
    case("hexdump-skip", "hexdump", "-n", "64", "-s", "1000", "in/big"),
    case("fold-b", "fold", "-b", "-w", "7", "in/csv"),
    case("hexdump-C", "hexdump", "-C", "in/bin"),
    case("dd", "dd", "if=in/big", "bs=1000", "skip=7", "count=5"),
    # compression
    case("gzip-c", "gzip", "-c", "in/bigtext"),
    case("gzip-c-stdin", "gzip", "-c", stdin="text"),
    case("gzip-9-big", "gzip", "-9", "-c", "in/big"),
    case("gunzip-c", "gunzip", "-c", "in/text.gz"),
    case("gunzip-c-big", "gunzip", "-c", "in/big.gz"),
    case("gunzip-bad", "gunzip", "-c", "in/text", status=1),
    case("unxz", "unxz", "-c", "in/text.xz"),
    case("bunzip2-c", "bunzip2", "-c", "in/text.bz2"),
    case("unzip-l", "unzip", "-l", "in/x.zip"),
    case("unzip-p", "unzip", "-p", "in/x.zip", "docs/text"),
    case("bzip2-c", "bzip2", "-c", "in/text"),
    case("uuencode", "uuencode", "in/bin", "name"),
    case("cal", "cal", "2", "2000"),
    case("bc", "bc", "-l", stdin="calc"),
    case("dc", "dc", "-e", "2 64 ^ 7 / p"),
    # archives
    case("tar-t", "tar", "-tf", "in/x.tar"),
    case("tar-tv", "tar", "-tvf", "in/x.tar"),
    case("tar-xO", "tar", "-xOf", "in/x.tar", "csv"),
    # comparing two files, equal and different
    case("cmp-same", "cmp", "in/text", "in/same"),
    case("cmp-differ", "cmp", "in/text", "in/other", status=1),
    case("cmp-l-differ", "cmp", "-l", "in/text", "in/other", status=1),
    case("cmp-missing", "cmp", "in/text", "in/nothing", status=2),
    case("diff-same", "diff", "in/text", "in/same"),
    case("diff-differ", "diff", "in/text", "in/edited", status=1),
    case("diff-u-differ", "diff", "-u", "in/text", "in/edited", status=1),
    # directories and shell built-ins
    case("ls", "ls", "in"),
    case("ls-a", "ls", "-a", "in"),
    case("ls-R", "ls", "-R", "in"),
    case("stat", "stat", "-c", "%n %s %F", "in/text", "in/big"),
    case("env", "env"),
    case("date", "date", "-u", "-d", "@1234567890"),
    case("sleep", "sleep", "0.05"),
    case("ls-missing", "ls", "in/nothing", status=1),
    case("sh-loop", "sh", "-c",
         "i=0; while [ $i -lt 5 ]; do echo line $i; i=$((i+1)); done; read x < in/csv; "
         "echo ${x%%,*}; exit 3", status=3),
    case("sh-builtins", "sh", "-c",
         "for w in a b c; do echo $w; done; echo $((6*7)); test -f in/text && echo file; "
         "[ -d in ] && echo dir; cd in && echo t* *.gz; exit 4", status=4),
    case("seq", "seq", "-s", ",", "3", "7", "100"),
    case("printf", "printf", "%05d|%-6s|%x\\n", "42", "ab", "255"),
    case("expr", "expr", "7", "*", "6"),
    case("factor", "factor", "1234567", "600851475143"),
    case("basename", "basename", "/in/some/file.txt", ".txt"),
    case("false", "false", status=1),
    # programs that write files into out/
    case("cp-out", "cp", "in/big", "out/copy"),
    case("tee-out", "tee", "out/one", "out/two", stdin="text"),
    case("dd-out", "dd", "if=in/big", "of=out/slice", "bs=4096", "skip=3", "count=7"),
    case("dd-seek-out", "dd", "if=in/bin", "of=out/gap", "bs=100", "seek=3", "count=2"),
    case("cp-r-out", "cp", "-r", "in", "out/copy"),
    case("sort-o-out", "sort", "-o", "out/sorted", "in/text"),
    case("uniq-out", "uniq", "in/repeated", "out/unique"),
    case("tee-a-out", "tee", "-a", "out/appended", stdin="csv"),
    case("truncate-out", "truncate", "-s", "100", "out/zeros"),
    case("mkdir-p-out", "mkdir", "-p", "out/a/b/c"),
    case("sh-redirect-out", "sh", "-c",
         "echo deep > out/deep; echo more >> out/deep; printf '%s\\n' x y > out/xy; echo done"),
    # tar sets the extracted files' times: the set file system keeps none and says EPERM,
    # which tar ignores, as it does natively when it may not
    case("tar-x-out", "tar", "-xvf", "in/x.tar", "-C", "out"),
)


QUIET = frozenset({"grep-no-match", "cmp-same", "cmp-missing", "diff-same", "ls-missing",
                   "gunzip-bad", "false", "sleep", "mkdir-p-out"})


@pytest.fixture(scope="module")
def busybox() -> bytes:
    return busybox_binary()


def native_tree(root: Path) -> None:
    """``root/in/NAME`` for every input (modification time 0) and an empty ``root/out/``."""
    (root / "in").mkdir()
    (root / "out").mkdir()
    for name, data in INPUTS.items():
        path = root / "in" / name
        path.write_bytes(data)
        path.chmod(0o444)  # inputs are read-only in the sandbox (uuencode prints the mode)
        mtime_zero(path)
    mtime_zero(root / "in")


def output_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def run_native(root: Path, item: Case) -> subprocess.CompletedProcess[bytes]:
    """The same argv natively: ``argv[0]`` is the applet, the binary is /bin/busybox."""
    stdin_path = root / "in" / item.stdin if item.stdin else root / "in" / "empty"
    with stdin_path.open("rb") as stdin:
        return subprocess.run(
            list(item.argv),
            executable=BUSYBOX,
            cwd=root,
            stdin=stdin,
            capture_output=True,
            env=native_environment(ENVIRON),
            timeout=30,
            check=False,
        )


def test_the_differential_suite_is_broad() -> None:
    applets = {item.argv[0] for item in CASES}
    assert len(applets) >= 25, sorted(applets)
    assert any(item.status == 1 for item in CASES if item.argv[0] == "cmp")
    assert any(item.status == 1 for item in CASES if item.argv[0] == "diff")


def _params() -> list[object]:
    return [
        pytest.param(item, id=item.id, marks=pytest.mark.xfail(
            strict=True, raises=ForbiddenSyscall, reason=item.engine_bug))
        if item.engine_bug else pytest.param(item, id=item.id)
        for item in CASES
    ]


@pytest.mark.parametrize("item", _params())
def test_applet_matches_native(item: Case, sandbox: Sandbox, busybox: bytes,
                               scratch: Path) -> None:
    native_tree(scratch)
    native = run_native(scratch, item)
    if item.status is not None:
        assert native.returncode == item.status, (
            f"the native run itself did not behave as the case expects: {native.stderr!r}")
    assert native.stdout or output_files(scratch / "out") or item.id in QUIET, (
        "the case shows nothing: no output natively")

    inside = sandbox.run(busybox, item.argv, INPUTS,
                         stdin=INPUTS[item.stdin] if item.stdin else None, environ=ENVIRON)

    assert inside.stdout == native.stdout, (
        f"stdout differs (native stderr {native.stderr[:400]!r}, "
        f"sandbox stderr {inside.stderr[:400]!r})")
    assert inside.exit_code == native.returncode, (
        f"exit status differs (native stderr {native.stderr[:400]!r}, "
        f"sandbox stderr {inside.stderr[:400]!r})")
    written = {written.name: written.data for written in inside.out}
    assert written == output_files(scratch / "out")
