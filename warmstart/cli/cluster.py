"""`warmstart nodes`: the cluster's nodes with their memory and the models each holds per tier."""

from __future__ import annotations

import argparse
import json
from typing import Any

from warmstart.cli.base import _client_flags, command, fetch
from warmstart.cli_format import columns


def register(sub: argparse._SubParsersAction) -> None:
    nodes = sub.add_parser("nodes", help="the cluster's nodes: memory, and models loaded, in RAM and on disk")
    _client_flags(nodes)
    nodes.add_argument("--json", action="store_true", help="print the raw JSON")


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / (1 << 30):.1f}G"


def nodes_table(nodes: list[dict[str, Any]]) -> str:
    rows = [("NODE", "HOST", "STATE", "MEMORY", "USED", "GPUS", "LOADED", "RAM", "DISK")]
    for n in nodes:
        tiers = n.get("tiers", {})

        def of(tier: str, tiers: dict[str, str] = tiers) -> str:
            return ",".join(sorted(m for m, t in tiers.items() if t == tier)) or "-"

        rows.append((n["name"] + (" (head)" if n.get("head") else ""), n.get("host", "?"),
                     "up" if n.get("alive") else "down", _gib(n.get("memory_bytes")), _gib(n.get("used_bytes")),
                     f"{n.get('gpus', 0):g}", of("loaded"), of("ram"), of("disk")))
    return "\n".join(columns(rows))


@command("nodes")
def _nodes(args: argparse.Namespace) -> int:
    payload = fetch(args, "GET", "/admin/nodes", timeout=10)
    if args.json:
        print(json.dumps(payload, indent=2))
    elif not payload.get("cluster"):
        print("this warmstart runs on one machine: no cluster (set [cluster] backend = \"ray\", see docs/cluster.md)")
    else:
        print(nodes_table(payload["nodes"]))
    return 0
