"""The `warmstart` command. Errors are one line saying what is wrong and how to fix it.

Every command lives in this package: `base` (what they share, and serve, ps, warm, unload, hold) and one
module per area, each with `register(subparsers)` and handlers marked with `@command`. The domain packages
(store, sim, quant, ...) know nothing of the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from warmstart import __version__
from warmstart.cli import audit, base, bench, cluster, image, loadtest, quant, reload, sim, store
from warmstart.cli.base import COMMANDS, CLIError, Parser
from warmstart.errors import ConfigError, WarmstartError

__all__ = ["build_parser", "main"]
AREAS = (base, reload, bench, audit, sim, store, loadtest, quant, cluster, image)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="warmstart", description="Serve self-hosted LLMs warm, without keeping them loaded.")
    parser.add_argument("--version", action="version", version=f"warmstart {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
    except CLIError as exc:
        print(f"warmstart: error: {exc}", file=sys.stderr)
        return exc.status
    except ConfigError as exc:
        print(f"warmstart: error: {exc}", file=sys.stderr)
        return 2
    except WarmstartError as exc:
        print(f"warmstart: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
