"""The ``pappus`` command line: serve a worker, manage it, invoke, run locally, build.

Exit codes: 0 success; 1 the worker or the function reported an error (its
type and message are printed); 2 usage or local input error; 3 the worker
could not be reached. Client commands talk to ``--url`` (default
``$PAPPUS_URL`` or http://127.0.0.1:8080) through :class:`pappus.Client` only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pappus.client import DEFAULT_URL, Client, InvokeResult, WorkerUnreachable
from pappus.config import ConfigError, load_settings
from pappus.errors import PappusError
from pappus.model import DataSet, Item

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

err = Console(stderr=True, highlight=False)


class UsageError(Exception):
    """A command-line argument or local file is wrong (exit code 2)."""


# -- input sets from the command line ------------------------------------------


def _read_value(value: str) -> list[tuple[str, bytes]]:
    """``@PATH`` → file contents (a directory gives every file, by relative path)."""
    if not value.startswith("@"):
        return [("", value.encode())]
    path = Path(value[1:])
    if path.is_dir():
        return [
            (str(p.relative_to(path)), p.read_bytes())
            for p in sorted(path.rglob("*")) if p.is_file()
        ]
    try:
        return [(path.name, path.read_bytes())]
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def parse_set_arguments(arguments: Sequence[str]) -> list[DataSet]:
    """``SET[/ITEM][@KEY]=(@PATH|TEXT)`` arguments → input sets, in first-seen order.

    Without ``/ITEM`` the item is named after the file (or the set, for text).
    """
    sets: dict[str, list[Item]] = {}
    for argument in arguments:
        target, sep, value = argument.partition("=")
        if not sep or not target:
            raise UsageError(f"--set {argument!r}: expected SET[/ITEM][@KEY]=@FILE or =TEXT")
        key = 0
        if "@" in target:
            target, _, key_text = target.rpartition("@")
            if not key_text.isdigit() or int(key_text) >= 2**32:
                raise UsageError(f"--set {argument!r}: key {key_text!r} is not a u32")
            key = int(key_text)
        set_name, _, item_name = target.partition("/")
        values = _read_value(value)
        for found_name, data in values:
            if item_name:
                name = item_name if len(values) == 1 else f"{item_name}/{found_name}"
            else:
                name = found_name or set_name
            sets.setdefault(set_name, []).append(Item(name, key, data))
    return [DataSet(name, tuple(items)) for name, items in sets.items()]


def _split_names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


# -- output ---------------------------------------------------------------------


def write_outputs(result_sets: Sequence[DataSet], out_dir: Path | None, as_json: bool,
                  timings: dict[str, float]) -> None:
    """Write outputs to ``out_dir/<set>/<item>``, as JSON, or readably to stdout."""
    if as_json:
        import base64

        payload = {
            "sets": [
                {"name": s.name, "items": [
                    {"name": i.name, "key": i.key, "data": base64.b64encode(i.data).decode()}
                    for i in s.items]}
                for s in result_sets
            ],
            "timings": timings,
        }
        print(json.dumps(payload, indent=2))
        return
    if out_dir is not None:
        for data_set in result_sets:
            for item in data_set.items:
                name = item.name or "item"
                if item.key:
                    name = f"{name}@{item.key}"
                target = (out_dir / data_set.name / name).resolve()
                if not target.is_relative_to(out_dir.resolve()):
                    raise UsageError(f"output item name {item.name!r} escapes {out_dir}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.data)
        count = sum(len(s.items) for s in result_sets)
        err.print(f"wrote {count} item(s) to {out_dir}")
        return
    stdout = sys.stdout.buffer
    for data_set in result_sets:
        for item in data_set.items:
            if data_set.name == "stdio" and item.name in ("stdout", "stderr"):
                (stdout if item.name == "stdout" else sys.stderr.buffer).write(item.data)
                continue
            header = f"== {data_set.name}/{item.name} (key {item.key}, {len(item.data)} bytes) =="
            stdout.write(header.encode() + b"\n" + item.data)
            if not item.data.endswith(b"\n"):
                stdout.write(b"\n")
    stdout.flush()


def _print_records(records: list[dict[str, Any]], kind: str) -> None:
    table = Table(title=f"{len(records)} {kind}(s)")
    for column in ("name", "engine" if kind == "function" else "dependencies", "inputs",
                   "outputs"):
        table.add_column(column)
    for r in records:
        second = r.get("engine", "") if kind == "function" else ", ".join(r["dependencies"])
        table.add_row(r["name"], second, ", ".join(r["input_sets"]), ", ".join(r["output_sets"]))
    Console().print(table)


# -- commands -------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from pappus.server.app import serve

    cli = {
        "port": args.port, "host": args.host, "data_dir": args.data_dir,
        "total_cores": args.total_cores, "processes": args.processes,
        "queue_size": args.queue_size,
        "inline_budget_us": args.inline_budget_us,
        "demo": True if args.demo else None, "log_level": args.log_level,
        "egress_allow": args.egress_allow, "io_concurrency": args.io_concurrency,
        "bin_preload_path": args.bin_preload_path, "http2": True if args.http2 else None,
    }
    settings = load_settings(cli, config_file=Path(args.config) if args.config else None)
    if settings.bin_preload_path is not None:
        from pappus.preload import read_preload

        read_preload(settings.bin_preload_path)  # a broken file stops start-up, with its reason
    serve(settings)
    return EXIT_OK


def cmd_function(args: argparse.Namespace, client: Client) -> int:
    if args.action == "add":
        try:
            binary = Path(args.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
        static = {s.name: s.items for s in parse_set_arguments(args.static or [])}
        record = client.add_function(
            args.name, binary, engine=args.engine, input_sets=_split_names(args.input_sets),
            output_sets=_split_names(args.output_sets), static_sets=static or None,
            timeout_ms=args.timeout_ms, memory_bytes=args.memory_bytes,
            context_size=args.context_size,
        )
        err.print(f"registered function [bold]{record['name']}[/] ({record['engine']}, "
                  f"sha256 {record['sha256'][:12]}…)", highlight=False)
    elif args.action == "list":
        _print_records(client.functions(), "function")
    else:
        client.remove_function(args.name)
        err.print(f"removed function {args.name}")
    return EXIT_OK


def cmd_composition(args: argparse.Namespace, client: Client) -> int:
    if args.action == "add":
        try:
            source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
        names = client.add_compositions(source)
        err.print(f"registered composition(s): {', '.join(names)}")
    elif args.action == "list":
        _print_records(client.compositions(), "composition")
    else:
        client.remove_composition(args.name)
        err.print(f"removed composition {args.name}")
    return EXIT_OK


def cmd_invoke(args: argparse.Namespace, client: Client) -> int:
    result: InvokeResult = client.invoke(
        args.name, parse_set_arguments(args.set or []), timeout_ms=args.timeout_ms
    )
    write_outputs(result.sets, Path(args.out) if args.out else None, args.json, result.timings)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """One-shot local run: prepare and invoke in this process, no server."""
    import hashlib

    from pappus.config import Settings
    from pappus.engines import create_engines
    from pappus.engines.base import FunctionSpec, Limits

    try:
        binary = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
    inputs = parse_set_arguments(args.set or [])
    input_names = _split_names(args.input_sets) or tuple(s.name for s in inputs)
    output_names = _split_names(args.output_sets) or ("stdio",)
    by_name = {s.name: s for s in inputs}
    unknown = set(by_name) - set(input_names)
    if unknown:
        raise UsageError(f"--set names {sorted(unknown)} are not in --input-sets")
    settings = Settings()
    engines = create_engines(settings)
    engine = engines.get(args.engine)
    if engine is None:
        raise UsageError(f"engine {args.engine!r} is not available here")
    try:
        spec = FunctionSpec(
            name=Path(args.file).stem, engine=args.engine, binary=binary,
            sha256=hashlib.sha256(binary).hexdigest(), input_sets=input_names,
            output_sets=output_names,
        )
        artifact = engine.prepare(spec, None)
        limits = Limits.from_timeout(args.timeout_ms / 1000, args.memory_bytes,
                                     settings.max_output_bytes)
        result = engine.invoke(artifact, [by_name.get(n) for n in input_names], limits)
    finally:
        for each in engines.values():
            each.close()
    write_outputs(result.outputs, Path(args.out) if args.out else None, args.json,
                  dict(result.timings_us))
    if result.exit_code != 0:
        err.print(f"[red]function exited with code {result.exit_code}[/]")
        return EXIT_ERROR
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from pappus.toolchain import ToolchainError, build_wasm

    output = Path(args.output) if args.output else Path(args.source).with_suffix(".wasm")
    try:
        build_wasm(Path(args.source), output)
    except ToolchainError as exc:
        raise UsageError(str(exc)) from exc
    err.print(f"built {output}")
    return EXIT_OK


def cmd_sdk(args: argparse.Namespace) -> int:
    from pappus import sdk
    from pappus.toolchain import ToolchainError

    if args.action == "path":
        print(sdk.sdk_root())
        return EXIT_OK
    sources = [Path(source) for source in args.sources]
    output = Path(args.output) if args.output else sources[0].with_suffix("")
    try:
        sdk.build_function(sources, output, target=args.target)
    except ToolchainError as exc:
        raise UsageError(str(exc)) from exc
    err.print(f"built {output} ({args.target} engine: pappus function add NAME {output} "
              f"--engine {args.target})")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="pappus",
        description="pappus: a serverless worker node running untrusted functions in a "
                    "fresh sandbox per invocation.",
    )
    parser.add_argument("--url", default=os.environ.get("PAPPUS_URL", DEFAULT_URL),
                        help="worker URL for client commands (default: $PAPPUS_URL or %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start a worker (HTTP API)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080; 0 picks a free one)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--data-dir", help="registry directory (default ~/.local/share/pappus)")
    serve.add_argument("--config", help="JSON config file")
    serve.add_argument("--demo", action="store_true", help="preload demo functions")
    serve.add_argument("--total-cores", type=int, help="compute slots (default: CPU cores)")
    serve.add_argument("--processes", type=int, metavar="N",
                       help="server processes sharing the port, to use several cores for "
                            "the request path (default 1)")
    serve.add_argument("--queue-size", type=int, help="max waiting jobs (default 4096)")
    serve.add_argument("--inline-budget-us", type=int, metavar="US",
                       help="run short wasm functions on the event loop for up to US "
                            "microseconds before moving them to a slot (default 1000; 0: off)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--egress-allow", metavar="RULES",
                       help="comma-separated hosts, addresses, CIDRs (optionally :port) the HTTP "
                            "function may reach (default: none; --demo: loopback)")
    serve.add_argument("--io-concurrency", type=int, help="concurrent HTTP requests (default 15)")
    serve.add_argument("--http2", action="store_true",
                       help="also serve HTTP/2 (cleartext h2c), with Hypercorn instead of uvicorn")
    serve.add_argument("--bin-preload-path", metavar="FILE",
                       help="Dandelion preload file: functions and compositions to register")

    function = commands.add_parser("function", help="add, list or remove functions")
    f_actions = function.add_subparsers(dest="action", required=True, metavar="ACTION")
    f_add = f_actions.add_parser("add", help="register a function binary")
    f_add.add_argument("name")
    f_add.add_argument("file", help="binary (e.g. a .wasm module)")
    f_add.add_argument("--engine", default="wasm", choices=["wasm", "process", "linux", "kvm"])
    f_add.add_argument("--input-sets", help="comma-separated input set names")
    f_add.add_argument("--output-sets", help="comma-separated output set names")
    f_add.add_argument("--static", action="append", metavar="SET[/ITEM]=@FILE",
                       help="static input item (repeatable)")
    f_add.add_argument("--timeout-ms", type=int)
    f_add.add_argument("--memory-bytes", type=int)
    f_add.add_argument("--context-size", type=int)
    f_actions.add_parser("list", help="list functions")
    f_rm = f_actions.add_parser("rm", help="remove a function")
    f_rm.add_argument("name")

    composition = commands.add_parser("composition", help="add, list or remove compositions")
    c_actions = composition.add_subparsers(dest="action", required=True, metavar="ACTION")
    c_add = c_actions.add_parser("add", help="register compositions from a source file")
    c_add.add_argument("file", help="composition source ('-' for stdin)")
    c_actions.add_parser("list", help="list compositions")
    c_rm = c_actions.add_parser("rm", help="remove a composition")
    c_rm.add_argument("name")

    set_help = "input item: SET[/ITEM][@KEY]=@FILE, =@DIR or =TEXT (repeatable)"
    invoke = commands.add_parser("invoke", help="invoke a function or composition")
    invoke.add_argument("name")
    invoke.add_argument("--set", action="append", metavar="SET=@FILE", help=set_help)
    invoke.add_argument("--timeout-ms", type=int)
    invoke.add_argument("--out", metavar="DIR", help="write outputs to DIR/<set>/<item>")
    invoke.add_argument("--json", action="store_true", help="print the raw JSON result")

    run = commands.add_parser("run", help="run a function file once, locally, no server")
    run.add_argument("file")
    run.add_argument("--engine", default="wasm")
    run.add_argument("--set", action="append", metavar="SET=@FILE", help=set_help)
    run.add_argument("--input-sets", help="declared input sets (default: the --set names)")
    run.add_argument("--output-sets", help="declared output sets (default: stdio)")
    run.add_argument("--timeout-ms", type=int, default=10_000)
    run.add_argument("--memory-bytes", type=int, default=128 * 1024 * 1024)
    run.add_argument("--out", metavar="DIR")
    run.add_argument("--json", action="store_true")

    build = commands.add_parser("build", help="compile a C file to a wasm function (clang)")
    build.add_argument("source")
    build.add_argument("-o", "--output")

    sdk = commands.add_parser("sdk", help="the process engine's function SDK")
    sdk_actions = sdk.add_subparsers(dest="action", required=True, metavar="ACTION")
    sdk_build = sdk_actions.add_parser(
        "build", help="compile C files into a process-engine function (system C compiler)")
    sdk_build.add_argument("sources", nargs="+", metavar="SOURCE")
    sdk_build.add_argument("-o", "--output", help="output file (default: first source minus .c)")
    sdk_build.add_argument("--target", choices=["process", "kvm"], default="process",
                           help="the engine to build for (default: %(default)s)")
    sdk_actions.add_parser("path", help="print the SDK directory (headers, runtime, examples)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pappus`` command."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "build":
            return cmd_build(args)
        if args.command == "sdk":
            return cmd_sdk(args)
        with Client(args.url) as client:
            handler = {"function": cmd_function, "composition": cmd_composition,
                       "invoke": cmd_invoke}[args.command]
            return handler(args, client)
    except (UsageError, ConfigError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return EXIT_USAGE
    except WorkerUnreachable as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}")
        return EXIT_UNREACHABLE
    except PappusError as exc:
        err.print(f"[red]{exc.type}:[/] {escape(exc.message)}")
        for key, value in exc.detail.items():
            if key not in ("excerpt",):
                err.print(f"  {key}: {value}", markup=False)
        if "excerpt" in exc.detail:
            err.print(str(exc.detail["excerpt"]), markup=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
