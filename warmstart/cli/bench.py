"""`warmstart bench NAME [options]`: run one benchmark module from warmstart.bench."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import warmstart.bench
from warmstart.cli.base import CLIError, command, json_on_stdout


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(warmstart.bench.__path__)
                  if not m.name.startswith("_"))


def register(sub: argparse._SubParsersAction) -> None:
    names = ", ".join(available())
    p = sub.add_parser("bench", help="run a benchmark (prints a table, writes JSON with --json)",
                       description="Benchmarks: " + names)
    p.add_argument("name", help="one of: " + names)
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark (see NAME --help)")


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    names = available()
    if args.name not in names:
        raise CLIError(f"no benchmark named {args.name!r}; choose one of: {', '.join(names)}", status=2)
    from warmstart.progress import Progress

    module = importlib.import_module("warmstart.bench." + args.name.replace("-", "_"))
    argv, at = list(args.args), json_argument(args.args)
    with json_on_stdout(argv[at] if at is not None else None) as path, Progress(f"bench {args.name}") as progress:
        if at is not None and path is not None:
            argv[at] = path
        progress.update("running")  # until the benchmark says which step it is in
        return int(module.main(argv) or 0)


def json_argument(argv: list[str]) -> int | None:
    """Where the value of a benchmark's `--json OUT` is in its arguments (None: not given)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--json":
            return i + 1
    return None
