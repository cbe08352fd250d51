"""Differential test of the emulated file calls: one static C program, natively and sandboxed.

The program exercises the Linux file calls the supervisor emulates
(``open``/``openat`` flags, ``read``/``write``/``pread``/``pwrite``/
``readv``/``writev``, ``lseek``, ``ftruncate``, ``dup``/``dup2``/``dup3``/
``fcntl``, ``getdents64`` through ``readdir``/``rewinddir``/``seekdir``,
``mkdir``/``rmdir``/``unlink``/``rename``, ``chdir``/``fchdir``/``getcwd``,
``sendfile``, ``stat``) and prints every result and errno. ``argv[1]`` is the
root its paths start from: a temporary directory holding ``in/`` and
``out/`` natively, empty in the sandbox (where ``/in`` and ``/out`` are the
sets). Stdout, the exit status and the files left in ``out/`` must be
identical. The program avoids what differs by design: permissions (the
native run is root), link counts, times and descriptor numbers of large
inputs (which the engine serves from descriptors 512 and up).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from tests.engines.linux.support import COMPILERS, Sandbox, build_with_each_compiler

SOURCE = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static char root[1024];
static char paths[8][4096];
static int next_path;

/* The program's path for a sandbox path: under argv[1] natively. */
static const char *P(const char *path) {
    char *slot = paths[next_path++ % 8];
    snprintf(slot, 4096, "%s%s", root, path);
    return slot;
}

static long show(const char *label, long result) {
    printf("%s = %ld errno=%d\n", label, result, result < 0 ? errno : 0);
    return result;
}
#define CALL(label, expr) (errno = 0, show(label, (long)(expr)))

/* An open whose descriptor number is not printed (it may differ), only success. */
static int opened(const char *label, int fd) {
    printf("%s = %s errno=%d\n", label, fd >= 0 ? "fd" : "-1", fd < 0 ? errno : 0);
    return fd;
}
#define OPEN(label, expr) (errno = 0, opened(label, (expr)))

static void dump(const char *label, const char *data, long length) {
    printf("%s [", label);
    for (long i = 0; i < length; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 32 && c < 127) putchar(c); else printf("\\x%02x", c);
    }
    printf("]\n");
}

static long file_size(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (long)st.st_size : -1;
}

static int count_entries(DIR *dir) {
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    return n;
}

static void basics(void) {
    char buffer[64];
    CALL("mkdir out/d", mkdir(P("/out/d"), 0755));
    CALL("mkdir out/d again", mkdir(P("/out/d"), 0755));
    int fd = OPEN("open out/d/a", open(P("/out/d/a"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                                        0644));
    CALL("F_GETFD cloexec", fcntl(fd, F_GETFD));
    CALL("F_GETFL", fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND));
    CALL("write", write(fd, "hello world", 11));
    CALL("write nothing", write(fd, "", 0));
    CALL("lseek end+5", lseek(fd, 5, SEEK_END));
    CALL("write after a gap", write(fd, "X", 1));
    CALL("pwrite at 0", pwrite(fd, "HE", 2, 0));
    CALL("lseek cur", lseek(fd, 0, SEEK_CUR));
    long got = CALL("pread", pread(fd, buffer, sizeof buffer, 0));
    dump("pread data", buffer, got);
    CALL("lseek cur after pread", lseek(fd, 0, SEEK_CUR));
    CALL("ftruncate shrink", ftruncate(fd, 8));
    CALL("size", file_size(fd));
    CALL("ftruncate grow", ftruncate(fd, 12));
    CALL("size", file_size(fd));
    CALL("read past the end", read(fd, buffer, 10));
    CALL("lseek before the start", lseek(fd, -100, SEEK_CUR));
    CALL("lseek set 6", lseek(fd, 6, SEEK_SET));
    got = CALL("read nothing", read(fd, buffer, 0));
    got = CALL("read rest", read(fd, buffer, sizeof buffer));
    dump("rest", buffer, got);
    CALL("fsync", fsync(fd));
    CALL("fdatasync", fdatasync(fd));

    int twin = dup(fd);
    CALL("lseek via one", lseek(fd, 3, SEEK_SET));
    CALL("offset seen via the dup", lseek(twin, 0, SEEK_CUR));
    CALL("F_GETFD dup", fcntl(twin, F_GETFD));
    CALL("F_DUPFD_CLOEXEC 100", fcntl(fd, F_DUPFD_CLOEXEC, 100));
    CALL("F_GETFD 100", fcntl(100, F_GETFD));
    CALL("F_SETFD 100 off", fcntl(100, F_SETFD, 0));
    CALL("F_GETFD 100 again", fcntl(100, F_GETFD));
    CALL("dup2 onto 101", dup2(twin, 101));
    CALL("dup2 onto itself", dup2(101, 101));
    CALL("dup3 onto itself", dup3(101, 101, 0));
    CALL("dup3 bad flags", dup3(101, 102, 12345));
    CALL("close 100", close(100));
    CALL("close 100 again", close(100));
    CALL("close 101", close(101));
    CALL("fcntl on a closed descriptor", fcntl(101, F_GETFD));
    CALL("read a closed descriptor", read(101, buffer, 1));
    close(twin);
    close(fd);

    fd = OPEN("open read-only", open(P("/out/d/a"), O_RDONLY));
    CALL("write to read-only", write(fd, "x", 1));
    CALL("ftruncate read-only", ftruncate(fd, 0));
    CALL("F_GETFL read-only", fcntl(fd, F_GETFL) & O_ACCMODE);
    close(fd);
    fd = OPEN("open write-only", open(P("/out/d/a"), O_WRONLY));
    CALL("read from write-only", read(fd, buffer, 1));
    close(fd);

    fd = OPEN("open append", open(P("/out/d/log"), O_WRONLY | O_CREAT | O_APPEND, 0644));
    CALL("append one", write(fd, "one\n", 4));
    CALL("pwrite in append mode (Linux appends)", pwrite(fd, "1\n", 2, 0));
    CALL("offset after that pwrite", lseek(fd, 0, SEEK_CUR));
    CALL("lseek 0 in append mode", lseek(fd, 0, SEEK_SET));
    CALL("append two", write(fd, "two\n", 4));
    CALL("F_GETFL append", fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND));
    CALL("F_SETFL no append", fcntl(fd, F_SETFL, 0));
    CALL("lseek 0 again", lseek(fd, 0, SEEK_SET));
    CALL("overwrite", write(fd, "ONE", 3));
    close(fd);
    fd = OPEN("open truncating", open(P("/out/d/trunc"), O_WRONLY | O_CREAT, 0644));
    write(fd, "0123456789", 10);
    close(fd);
    fd = OPEN("reopen O_TRUNC", open(P("/out/d/trunc"), O_RDWR | O_TRUNC));
    CALL("size after O_TRUNC", file_size(fd));
    write(fd, "short", 5);
    close(fd);
}

static void vectors(void) {
    char a[4], b[6], c[32];
    int fd = OPEN("open vectors", open(P("/out/vectors"), O_RDWR | O_CREAT, 0644));
    struct iovec out[3] = {{"abc", 3}, {"", 0}, {"defghijklmnop", 13}};
    CALL("writev", writev(fd, out, 3));
    lseek(fd, 0, SEEK_SET);
    struct iovec in[2] = {{a, sizeof a}, {b, sizeof b}};
    CALL("readv", readv(fd, in, 2));
    dump("readv a", a, sizeof a);
    dump("readv b", b, sizeof b);
    struct iovec wild_first[2] = {{(void *)16, 4}, {c, 4}};
    CALL("readv with a bad first buffer", readv(fd, wild_first, 2));
    CALL("offset after it", lseek(fd, 0, SEEK_CUR));
    struct iovec wild_second[2] = {{c, 2}, {(void *)16, 4}};
    CALL("readv with a bad second buffer", readv(fd, wild_second, 2));
    dump("readv partial", c, 2);
    CALL("offset after the partial readv", lseek(fd, 0, SEEK_CUR));
    long got = CALL("read the rest", read(fd, c, sizeof c));
    dump("rest", c, got);
    static volatile int too_many = 100000;
    CALL("readv too many", readv(fd, in, too_many));
    close(fd);
}

static void directories(int files) {
    char name[300];
    CALL("mkdir out/many", mkdir(P("/out/many"), 0755));
    for (int i = 0; i < files; i++) {
        snprintf(name, sizeof name, "/out/many/file-number-%d", i);
        int fd = open(P(name), O_WRONLY | O_CREAT, 0644);
        if (fd < 0 || close(fd) != 0) { printf("create %s errno=%d\n", name, errno); return; }
    }
    DIR *dir = opendir(P("/out/many"));
    printf("entries %d\n", count_entries(dir));
    rewinddir(dir);
    printf("entries after rewinddir %d\n", count_entries(dir));
    rewinddir(dir);
    for (int i = 0; i < 5; i++) readdir(dir);
    long mark = telldir(dir);
    struct dirent *entry = readdir(dir);
    snprintf(name, sizeof name, "%s", entry ? entry->d_name : "(none)");
    seekdir(dir, mark);
    entry = readdir(dir);
    printf("seekdir returns to the same entry: %d\n", entry && !strcmp(entry->d_name, name));
    closedir(dir);

    /* rm -r: remove entries while reading the directory */
    dir = opendir(P("/out/many"));
    int removed = 0;
    for (struct dirent *e; (e = readdir(dir));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(name, sizeof name, "/out/many/%s", e->d_name);
        if (unlink(P(name)) == 0) removed++;
    }
    closedir(dir);
    printf("removed while reading %d\n", removed);
    CALL("rmdir the emptied directory", rmdir(P("/out/many")));

    int fd = OPEN("open a directory", open(P("/in"), O_RDONLY | O_DIRECTORY));
    char small[8];
    CALL("read a directory", read(fd, small, sizeof small));
    CALL("write a directory", write(fd, small, sizeof small));
    CALL("ftruncate a directory", ftruncate(fd, 0));
    CALL("getdents64 into a tiny buffer", syscall(SYS_getdents64, fd, small, sizeof small));
    CALL("lseek a directory to 0", lseek(fd, 0, SEEK_SET));
    close(fd);
    fd = OPEN("open a file", open(P("/in/text"), O_RDONLY));
    char big[256];
    CALL("getdents64 on a file", syscall(SYS_getdents64, fd, big, sizeof big));
    close(fd);
}

static void tree(void) {
    char buffer[64];
    struct stat st;
    OPEN("open through a file", open(P("/in/text/x"), O_RDONLY));
    OPEN("open a file with a trailing slash", open(P("/in/text/"), O_RDONLY));
    OPEN("open a missing file", open(P("/in/nothing"), O_RDONLY));
    OPEN("open an empty path", open("", O_RDONLY));
    OPEN("open a directory for writing", open(P("/out"), O_WRONLY));
    OPEN("open a directory with O_CREAT", open(P("/out"), O_RDONLY | O_CREAT, 0644));
    OPEN("open a file as a directory", open(P("/in/text"), O_RDONLY | O_DIRECTORY));
    OPEN("create in a missing directory", open(P("/out/no/file"), O_WRONLY | O_CREAT, 0644));
    OPEN("exclusive create of an existing file",
         open(P("/out/d/a"), O_WRONLY | O_CREAT | O_EXCL, 0644));
    char long_path[400] = "/out/";
    memset(long_path + 5, 'n', 300);
    long_path[305] = 0;
    OPEN("create a 300-byte name", open(P(long_path), O_WRONLY | O_CREAT, 0644));
    OPEN("dot-dot inside", open(P("/in/../in/./text"), O_RDONLY));
    CALL("mkdir with a missing parent", mkdir(P("/out/x/y"), 0755));
    CALL("stat a missing file", stat(P("/in/nothing"), &st));
    CALL("stat in", stat(P("/in"), &st));
    printf("in is a directory %d\n", S_ISDIR(st.st_mode));
    CALL("stat in/text", stat(P("/in/text"), &st));
    printf("text is regular %d size %ld\n", S_ISREG(st.st_mode), (long)st.st_size);
    CALL("stat in/big", stat(P("/in/big"), &st));
    printf("big size %ld\n", (long)st.st_size);
    ino_t text_inode = 0;
    if (stat(P("/in/text"), &st) == 0) text_inode = st.st_ino;
    int fd = open(P("/in/text"), O_RDONLY);
    fstat(fd, &st);
    printf("fstat and stat agree on the inode %d\n", st.st_ino == text_inode);
    close(fd);
    CALL("access in/text", access(P("/in/text"), R_OK));
    CALL("access a missing file", access(P("/in/nothing"), F_OK));
    CALL("readlink a regular file", readlink(P("/in/text"), buffer, sizeof buffer));

    fd = open(P("/out/d/b"), O_WRONLY | O_CREAT, 0644);
    write(fd, "bbb", 3);
    close(fd);
    CALL("rename over an existing file", rename(P("/out/d/log"), P("/out/d/b")));
    CALL("the old name is gone", stat(P("/out/d/log"), &st));
    CALL("mkdir out/d/sub", mkdir(P("/out/d/sub"), 0755));
    CALL("rename a directory into itself", rename(P("/out/d"), P("/out/d/sub/d")));
    CALL("rmdir a non-empty directory", rmdir(P("/out/d")));
    CALL("unlink a directory", unlink(P("/out/d/sub")));
    CALL("rmdir a file", rmdir(P("/out/d/b")));
    CALL("rename a directory", rename(P("/out/d/sub"), P("/out/d/moved")));
    CALL("rename a file into it", rename(P("/out/d/trunc"), P("/out/d/moved/trunc")));
    CALL("unlink a missing file", unlink(P("/out/d/nothing")));

    fd = OPEN("open then unlink", open(P("/out/d/tmp"), O_RDWR | O_CREAT, 0644));
    write(fd, "still here", 10);
    CALL("unlink it", unlink(P("/out/d/tmp")));
    lseek(fd, 0, SEEK_SET);
    long got = CALL("read the unlinked file", read(fd, buffer, sizeof buffer));
    dump("unlinked data", buffer, got);
    close(fd);

    int one = open(P("/out/d/shared"), O_RDWR | O_CREAT, 0644);
    int two = open(P("/out/d/shared"), O_RDONLY);
    write(one, "seen by both", 12);
    got = CALL("read via a second open", read(two, buffer, sizeof buffer));
    dump("second open", buffer, got);
    close(one);
    close(two);
}

static void places(void) {
    char cwd[4096];
    CALL("chdir out/d", chdir(P("/out/d")));
    if (getcwd(cwd, sizeof cwd)) printf("cwd [%s]\n", cwd + strlen(root));
    int fd = OPEN("open relative", open("moved/trunc", O_RDONLY));
    char buffer[16];
    long got = read(fd, buffer, sizeof buffer);
    dump("relative data", buffer, got);
    close(fd);
    CALL("chdir ..", chdir(".."));
    if (getcwd(cwd, sizeof cwd)) printf("cwd [%s]\n", cwd + strlen(root));
    CALL("chdir into a file", chdir(P("/in/text")));
    CALL("chdir to a missing directory", chdir(P("/in/nothing")));
    int dir = open(P("/in"), O_RDONLY | O_DIRECTORY);
    fd = OPEN("openat a directory descriptor", openat(dir, "text", O_RDONLY));
    close(fd);
    CALL("fchdir", fchdir(dir));
    if (getcwd(cwd, sizeof cwd)) printf("cwd [%s]\n", cwd + strlen(root));
    close(dir);
    char small[4];
    CALL("getcwd too small", getcwd(small, 3) ? 0 : -1);
    fd = open(P("/in/text"), O_RDONLY);
    OPEN("openat relative to a file", openat(fd, "x", O_RDONLY));
    close(fd);
    CALL("chdir back", chdir(P("/")));
}

static void transfers(void) {
    int in = open(P("/in/text"), O_RDONLY);
    int out = open(P("/out/sent"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    off_t offset = 5;
    CALL("sendfile with an offset", sendfile(out, in, &offset, 20));
    printf("offset now %ld\n", (long)offset);
    CALL("input offset unchanged", lseek(in, 0, SEEK_CUR));
    CALL("sendfile from the position", sendfile(out, in, NULL, 7));
    CALL("input offset moved", lseek(in, 0, SEEK_CUR));
    int reader = open(P("/out/sent"), O_RDONLY);
    CALL("sendfile to a read-only descriptor", sendfile(reader, in, NULL, 5));
    CALL("sendfile from a write-only descriptor", sendfile(reader, out, NULL, 5));
    CALL("input offset after the failed sendfiles", lseek(in, 0, SEEK_CUR));
    offset = 0;
    CALL("sendfile with an offset to a read-only descriptor", sendfile(reader, in, &offset, 5));
    printf("offset still %ld\n", (long)offset);
    CALL("SEEK_DATA", lseek(reader, 3, SEEK_DATA));
    CALL("SEEK_HOLE", lseek(reader, 3, SEEK_HOLE));
    CALL("SEEK_DATA past the end", lseek(reader, 1000, SEEK_DATA));
    close(reader);
    close(in);
    close(out);

    int big = open(P("/in/big"), O_RDONLY);
    unsigned char bytes[8];
    CALL("pread big", pread(big, bytes, 8, 40000));
    printf("big at 40000: %02x %02x %02x\n", bytes[0], bytes[1], bytes[7]);
    CALL("lseek big end", lseek(big, -3, SEEK_END));
    CALL("read big tail", read(big, bytes, 8));
    printf("big tail: %02x %02x %02x\n", bytes[0], bytes[1], bytes[2]);
    CALL("write big", write(big, "x", 1));
    CALL("ftruncate big", ftruncate(big, 0));
    int copy = dup(big);
    CALL("lseek with a wide whence", syscall(SYS_lseek, copy, 5, (1L << 32) | SEEK_SET));
    CALL("lseek with a bad whence", lseek(copy, 0, 99));
    CALL("lseek big to 10", lseek(big, 10, SEEK_SET));
    CALL("offset seen via its dup", lseek(copy, 0, SEEK_CUR));
    CALL("read via the dup", read(copy, bytes, 2));
    CALL("offset after reading the dup", lseek(big, 0, SEEK_CUR));
    CALL("close big", close(big));
    CALL("read the dup after closing big", read(copy, bytes, 1));
    printf("byte 12 of big: %02x\n", bytes[0]);
    close(copy);

    /* what a shell does for `cmd < in/big`: the input on descriptor 0 */
    big = open(P("/in/big"), O_RDONLY);
    int saved = fcntl(0, F_DUPFD_CLOEXEC, 10);
    CALL("dup2 onto 0", dup2(big, 0));
    close(big);
    CALL("read stdin", read(0, bytes, 4));
    printf("stdin now starts %02x %02x %02x %02x\n", bytes[0], bytes[1], bytes[2], bytes[3]);
    dup2(saved, 0);
    close(saved);
    CALL("umask 077", umask(077));
    CALL("umask 022", umask(022));
}

#ifndef SYS_faccessat2
#define SYS_faccessat2 439
#endif

/* Argument errors the kernel reports before it looks the path up: also for a path that
 * does not exist (which the supervisor's fast path answers itself when the rest is plain). */
static void argument_checks(void) {
    char buffer[256];
    const char *absent = "/pappus-nothing-here";
    CALL("readlink bufsiz 0", syscall(SYS_readlink, P("/in/text"), buffer, 0));
    CALL("readlink missing, bufsiz 0", syscall(SYS_readlink, absent, buffer, 0));
    CALL("readlink missing, bufsiz -1", syscall(SYS_readlink, absent, buffer, -1));
    CALL("readlinkat missing, bufsiz 0", syscall(SYS_readlinkat, AT_FDCWD, absent, buffer, 0));
    CALL("readlink missing", syscall(SYS_readlink, absent, buffer, sizeof buffer));
    CALL("access missing, bad mode", syscall(SYS_access, absent, 8));
    CALL("access file, bad mode", syscall(SYS_access, P("/in/text"), 0x10));
    CALL("faccessat missing, bad mode", syscall(SYS_faccessat, AT_FDCWD, absent, 8));
    CALL("faccessat2 missing, bad flags",
         syscall(SYS_faccessat2, AT_FDCWD, absent, R_OK, 0x4));
    CALL("faccessat2 file, bad flags",
         syscall(SYS_faccessat2, AT_FDCWD, P("/in/text"), R_OK, 0x4));
    CALL("faccessat2 missing", syscall(SYS_faccessat2, AT_FDCWD, absent, R_OK, 0));
    CALL("newfstatat missing, bad flags",
         syscall(SYS_newfstatat, AT_FDCWD, absent, buffer, 0x1));
    CALL("newfstatat file, bad flags",
         syscall(SYS_newfstatat, AT_FDCWD, P("/in/text"), buffer, 0x1));
    CALL("statx missing, both sync flags",
         syscall(SYS_statx, AT_FDCWD, absent, 0x6000, 0x7ff, buffer));
    CALL("statx missing, reserved mask",
         syscall(SYS_statx, AT_FDCWD, absent, 0, 0x80000000u, buffer));
    CALL("statx missing, bad flags", syscall(SYS_statx, AT_FDCWD, absent, 0x1, 0x7ff, buffer));
    CALL("statx file, bad flags",
         syscall(SYS_statx, AT_FDCWD, P("/in/text"), 0x1, 0x7ff, buffer));
    CALL("statx missing", syscall(SYS_statx, AT_FDCWD, absent, 0, 0x7ff, buffer));
}

int main(int argc, char **argv) {
    snprintf(root, sizeof root, "%s", argc > 1 ? argv[1] : "");
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    basics();
    vectors();
    directories(argc > 2 ? atoi(argv[2]) : 3000);
    tree();
    places();
    transfers();
    argument_checks();
    return 7;
}
"""

FILES_IN_A_DIRECTORY = 3000  # beyond one getdents64 buffer of glibc (32 KiB) and musl (2 KiB)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("file-calls")
    return build_with_each_compiler(SOURCE, out, "file-calls")


def _inputs() -> dict[str, bytes]:
    rng = random.Random(3)
    return {
        "text": b"".join(f"line {i} {rng.random():.6f}\n".encode() for i in range(40)),
        "big": rng.randbytes(64 << 10),  # a real memfd in the sandbox
    }


def _native(binary: bytes, root: Path) -> subprocess.CompletedProcess[bytes]:
    (root / "in").mkdir()
    (root / "out").mkdir()
    for name, data in _inputs().items():
        (root / "in" / name).write_bytes(data)
    program = root.parent / f"{root.name}-program"
    program.write_bytes(binary)
    program.chmod(0o755)
    return subprocess.run([str(program), str(root), str(FILES_IN_A_DIRECTORY)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                          check=False, env={})


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("compiler", COMPILERS)
def test_file_calls_match_native(compiler: str, programs: dict[str, bytes], sandbox: Sandbox,
                                 scratch: Path) -> None:
    root = scratch / "root"
    root.mkdir()
    native = _native(programs[compiler], root)
    assert native.returncode == 7, native.stderr
    assert b"entries 3000" in native.stdout  # the native run itself did what it should

    run = sandbox.run(programs[compiler], ["file-calls", "", str(FILES_IN_A_DIRECTORY)],
                      _inputs())

    native_lines = native.stdout.decode().splitlines()
    sandbox_lines = run.stdout.decode().splitlines()
    differing = [f"native  {a!r}\nsandbox {b!r}"
                 for a, b in zip(native_lines, sandbox_lines, strict=False) if a != b]
    assert not differing and len(native_lines) == len(sandbox_lines), (
        "\n".join(differing) or f"{len(native_lines)} lines natively, {len(sandbox_lines)}")
    assert run.exit_code == native.returncode
    assert {item.name: item.data for item in run.out} == _files(root / "out")
