"""`warmstart bench NAME [ARGS...]`: runs the benchmark module warmstart.bench.NAME (its `main(argv)`)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re

import warmstart.bench
from warmstart.cli import CLIError, command


def available() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(warmstart.bench.__path__):
        if not info.name.startswith("_"):  # private modules are parts, not benchmarks
            names.append(info.name)
    return sorted(names)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark, e.g. `warmstart bench load --json out.json`")
    p.add_argument("name", help="which benchmark (a module of warmstart.bench)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help)")


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    name = args.name
    module = None
    if re.fullmatch(r"[a-z][a-z0-9_]*", name):
        try:
            module = importlib.import_module(f"warmstart.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"warmstart.bench.{name}":
                raise CLIError(f"benchmark {name} needs {exc.name}, which is not installed; "
                               "install the bench extra: pip install -e '.[bench]'") from None
    if module is None or not hasattr(module, "main"):
        raise CLIError(f"no benchmark named {name!r}; available: {', '.join(available()) or 'none'}", status=2)
    return int(module.main(list(args.args)) or 0)
