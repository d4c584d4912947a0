"""`warmstart bench NAME [options]`: run one benchmark module from warmstart.bench."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import warmstart.bench
from warmstart.cli.base import CLIError, command


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
    module = importlib.import_module("warmstart.bench." + args.name.replace("-", "_"))
    return int(module.main(args.args) or 0)
