"""The `[cluster]` table, validated into a frozen ClusterConfig (read by the config loader; no Ray here)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from warmstart.config import ClusterConfig
from warmstart.config_checks import expect
from warmstart.durations import parse_duration
from warmstart.errors import ConfigError

_ADDRESS = re.compile(r"[\w.\-\[\]:]+:\d{1,5}")
_HOST = re.compile(r"[\w.\-:]+")


def parse_cluster(raw: Any, base_dir: Path) -> ClusterConfig:
    from warmstart.store.tiers import parse_size

    expect(isinstance(raw, Mapping), "cluster", raw, "must be a table")
    known = set(ClusterConfig.__dataclass_fields__)
    for key in raw:
        expect(key in known, f"cluster.{key}", raw[key], f"unknown setting; known here: {', '.join(sorted(known))}")
    d = ClusterConfig()
    backend = raw.get("backend", "ray" if "address" in raw else d.backend)
    expect(backend in ("none", "ray"), "cluster.backend", backend, 'must be "none" or "ray"')
    address = raw.get("address", d.address)
    expect(isinstance(address, str) and (address == "auto" or _ADDRESS.fullmatch(address) is not None),
            "cluster.address", address, 'must be "auto" or HOST:PORT of the Ray head (as `ray start --head` prints it)')
    node_dir = raw.get("node_dir")
    expect(node_dir is None or isinstance(node_dir, str), "cluster.node_dir", node_dir, "must be a path")
    try:
        reserve = parse_size(raw.get("memory_reserve", d.memory_reserve))
    except ValueError as exc:
        raise ConfigError("cluster.memory_reserve", raw.get("memory_reserve"), str(exc)) from None
    head_engines = raw.get("head_engines", d.head_engines)
    expect(isinstance(head_engines, bool), "cluster.head_engines", head_engines, "must be true or false")
    interval = raw.get("watch_interval", d.watch_interval)
    try:
        seconds = parse_duration(interval)
    except ValueError as exc:
        raise ConfigError("cluster.watch_interval", interval, str(exc)) from None
    expect(0 < seconds < math.inf, "cluster.watch_interval", interval, "must be a positive duration")
    host = raw.get("engine_host", d.engine_host)
    expect(isinstance(host, str) and (host == "" or _HOST.fullmatch(host) is not None), "cluster.engine_host", host,
            'must be an address (or "" for each node\'s own)')
    return ClusterConfig(backend=backend, address=address,
                         node_dir=(base_dir / Path(node_dir).expanduser()) if node_dir else None,
                         head_engines=head_engines, watch_interval=seconds, memory_reserve=reserve, engine_host=host)
