"""Our own C program, built static with musl and with glibc, run unmodified in the linux engine.

The program uses what ordinary C programs use: ``argv``, ``getenv``,
``printf``, ``opendir``/``readdir``, ``fopen``/``fgetc``/``fseek``, ``stat``,
``mkdir`` and files written into ``/out/`` (one with the key suffix
``@7``). The expected output is computed here from the inputs, so every byte
is checked, for both C libraries.
"""

from __future__ import annotations

import errno
import random

import pytest

from pappus.model import Item
from tests.engines.linux.support import COMPILERS, Sandbox, build_with_each_compiler

SOURCE = r"""
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void try_open(const char *label, const char *path, const char *mode) {
    errno = 0;
    FILE *file = fopen(path, mode);
    printf("%s: %s errno=%d\n", label, file ? "opened" : "refused", errno);
    if (file) fclose(file);
}

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) printf("argv[%d]=[%s]\n", i, argv[i]);
    const char *greeting = getenv("GREETING"), *home = getenv("HOME");
    printf("GREETING=[%s] HOME=[%s]\n", greeting ? greeting : "(unset)",
           home ? home : "(unset)");

    DIR *dir = opendir("/in");
    if (!dir) { perror("opendir /in"); return 10; }
    char *names[64];
    int count = 0;
    for (struct dirent *entry; count < 64 && (entry = readdir(dir));) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
        char label[300];
        snprintf(label, sizeof label, "%s%s", entry->d_name, entry->d_type == DT_DIR ? "/" : "");
        names[count++] = strdup(label);
    }
    closedir(dir);
    qsort(names, count, sizeof *names, by_name);

    FILE *summary = fopen("/out/summary@7", "w");
    if (!summary) { perror("fopen /out/summary@7"); return 11; }
    for (int i = 0; i < count; i++) {
        size_t length = strlen(names[i]);
        if (names[i][length - 1] == '/') { printf("%s directory\n", names[i]); continue; }
        char path[512];
        snprintf(path, sizeof path, "/in/%s", names[i]);
        FILE *in = fopen(path, "rb");
        if (!in) { printf("%s: errno=%d\n", names[i], errno); continue; }
        unsigned long bytes = 0, lines = 0, sum = 0;
        for (int c; (c = fgetc(in)) != EOF;) {
            bytes++;
            lines += c == '\n';
            sum = sum * 31 + (unsigned char)c;
        }
        fclose(in);
        struct stat st;
        if (stat(path, &st) != 0) { perror("stat"); return 12; }
        printf("%s bytes=%lu lines=%lu sum=%lu size=%lld regular=%d\n", names[i], bytes, lines,
               sum, (long long)st.st_size, S_ISREG(st.st_mode));
        fprintf(summary, "%s %lu\n", names[i], bytes);
    }
    fclose(summary);

    if (mkdir("/out/upper", 0755) != 0) { perror("mkdir /out/upper"); return 13; }
    FILE *in = fopen("/in/text", "r"), *out = fopen("/out/upper/text", "w");
    if (!in || !out) { perror("upper"); return 14; }
    for (int c; (c = fgetc(in)) != EOF;) fputc(toupper(c), out);
    fclose(in);
    fclose(out);

    FILE *big = fopen("/in/big", "rb");
    if (!big || fseek(big, -8, SEEK_END) != 0) { perror("big"); return 15; }
    unsigned char tail[8];
    size_t got = fread(tail, 1, sizeof tail, big);
    printf("big tail:");
    for (size_t i = 0; i < got; i++) printf(" %02x", tail[i]);
    printf(" at %ld\n", ftell(big));
    fclose(big);

    try_open("missing", "/in/missing", "r");
    try_open("write input", "/in/text", "w");
    try_open("host file", "/etc/passwd", "r");
    try_open("outside the outputs", "/new-file", "w");
    fprintf(stderr, "done\n");
    return 3;
}
"""

ARGV = ("wc-like", "hello world", "x=1", "it's", "")
ENVIRON = ("GREETING=hi there", "LANG=C")


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The program built with ``musl-gcc -static`` and ``gcc -static``."""
    out = tmp_path_factory.mktemp("static-programs")
    return build_with_each_compiler(SOURCE, out, "files")


def _inputs() -> dict[str, bytes]:
    rng = random.Random(7)
    text = b"".join(
        b" ".join(rng.choice([b"cat", b"dog", b"Emu", b"gnu", b"yak"]) for _ in range(5)) + b"\n"
        for _ in range(50)
    )
    return {
        "text": text,
        "data.bin": rng.randbytes(3000),
        "big": rng.randbytes(100_000),  # served from a real memfd (the engine's fast path)
        "empty": b"",
        "sub/nested": b"inside a sub-directory\n",
    }


def _expected_stdout(inputs: dict[str, bytes]) -> bytes:
    lines = [f"argc={len(ARGV)}"]
    lines += [f"argv[{i}]=[{word}]" for i, word in enumerate(ARGV)]
    lines.append("GREETING=[hi there] HOME=[(unset)]")
    for name in sorted({name.split("/")[0] + ("/" if "/" in name else "") for name in inputs}):
        if name.endswith("/"):
            lines.append(f"{name} directory")
            continue
        data = inputs[name]
        checksum = 0
        for byte in data:
            checksum = (checksum * 31 + byte) % (1 << 64)
        newlines = data.count(b"\n")
        lines.append(f"{name} bytes={len(data)} lines={newlines} sum={checksum} "
                     f"size={len(data)} regular=1")
    lines.append("big tail: " + " ".join(f"{b:02x}" for b in inputs["big"][-8:])
                 + f" at {len(inputs['big'])}")
    lines.append(f"missing: refused errno={errno.ENOENT}")
    lines.append(f"write input: refused errno={errno.EROFS}")
    lines.append(f"host file: refused errno={errno.ENOENT}")
    lines.append(f"outside the outputs: refused errno={errno.EROFS}")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("compiler", COMPILERS)
def test_static_c_program_sees_the_file_convention(
    compiler: str, programs: dict[str, bytes], sandbox: Sandbox
) -> None:
    inputs = _inputs()
    run = sandbox.run(programs[compiler], ARGV, inputs, environ=ENVIRON)

    assert run.stdout.decode() == _expected_stdout(inputs).decode()
    assert run.stderr == b"done\n"
    assert run.exit_code == 3
    summary = "".join(
        f"{name} {len(data)}\n" for name, data in sorted(inputs.items()) if "/" not in name
    ).encode()
    assert run.out == (
        Item("summary", 7, summary),
        Item("upper/text", 0, inputs["text"].upper()),
    )


@pytest.mark.parametrize("compiler", COMPILERS)
def test_static_c_program_without_an_environ_item(
    compiler: str, programs: dict[str, bytes], sandbox: Sandbox
) -> None:
    """With no ``environ`` item the environment is empty; ``argv`` is still what was given."""
    run = sandbox.run(programs[compiler], ["solo"], _inputs())

    assert run.stdout.startswith(b"argc=1\nargv[0]=[solo]\nGREETING=[(unset)] HOME=[(unset)]\n")
    assert run.exit_code == 3


def test_programs_are_really_static_builds(programs: dict[str, bytes]) -> None:
    """Both builds are distinct static executables (no interpreter segment)."""
    from pappus.engines.linux.elf import check_static_executable

    assert programs["musl-gcc"] != programs["gcc"]
    for binary in programs.values():
        check_static_executable(binary)
