"""`warmstart bench NAME [ARGS...]`: run the benchmark module warmstart.bench.NAME."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import warmstart.bench
from warmstart.cli import CLIError, command


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(warmstart.bench.__path__)
                  if not m.name.startswith("_") and m.name != "cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark (e.g. `warmstart bench warming --json OUT`)",
                       description=f"Benchmarks: {', '.join(available()) or 'none'}. "
                                   "`warmstart bench NAME --help` shows a benchmark's options.")
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(available())}")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options")


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    names = available()
    if args.name not in names:
        raise CLIError(f"unknown benchmark {args.name!r}; available: {', '.join(names) or 'none'}", status=2)
    module = importlib.import_module(f"warmstart.bench.{args.name}")
    return int(module.main(list(args.args)) or 0)
