"""The [cluster] switch: validated config, and Ray never imported without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from warmstart.cli.cluster import nodes_table
from warmstart.config_loader import load_config, parse_config
from warmstart.errors import ConfigError


def test_off_by_default_and_an_address_switches_it_on() -> None:
    assert parse_config({}, Path(".")).cluster.enabled is False
    c = load_config(None, env={}, flags={"cluster.address": "10.8.0.1:6379"}).cluster  # serve --cluster
    assert c.enabled and c.backend == "ray" and c.address == "10.8.0.1:6379"
    assert parse_config({"cluster": {"backend": "ray"}}, Path(".")).cluster.address == "auto"


@pytest.mark.parametrize(("raw", "field"), [
    ({"backend": "kubernetes"}, "cluster.backend"),
    ({"address": "10.8.0.1"}, "cluster.address"),
    ({"address": "ray://x y:1"}, "cluster.address"),
    ({"memory_reserve": "lots"}, "cluster.memory_reserve"),
    ({"engine_host": "a b"}, "cluster.engine_host"),
    ({"watch_interval": "0s"}, "cluster.watch_interval"),
    ({"nodes": 3}, "cluster.nodes"),
])
def test_a_bad_cluster_setting_names_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"cluster": raw}, Path("."))
    assert str(err.value).startswith(f"config: {field} = ")


def test_ray_is_not_imported_without_the_switch(tmp_path: Path) -> None:
    code = ("import sys; from warmstart.config_loader import load_config; from warmstart.serve import build_app; "
            f"build_app(load_config(None, env={{}}, flags={{'server.data_dir': {str(tmp_path)!r}}})); "
            "import warmstart.cli, warmstart.cli.cluster, warmstart.pool.pool; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_nodes_table_shows_memory_and_models_per_tier() -> None:
    text = nodes_table([
        {"name": "a", "head": True, "host": "10.0.0.1", "alive": True, "memory_bytes": 8 << 30, "used_bytes": 1 << 30,
         "gpus": 2.0,
         "tiers": {"m": "loaded", "k": "ram", "x": "disk", "y": "disk"}},
        {"name": "b", "host": "10.0.0.2", "alive": False, "memory_bytes": 4 << 30, "used_bytes": 0, "tiers": {}},
    ])
    lines = text.splitlines()
    assert lines[0].split() == ["NODE", "HOST", "STATE", "MEMORY", "USED", "GPUS", "LOADED", "RAM", "DISK"]
    assert lines[1].split() == ["a", "(head)", "10.0.0.1", "up", "8.0G", "1.0G", "2", "m", "k", "x,y"]
    assert lines[2].split() == ["b", "10.0.0.2", "down", "4.0G", "0.0G", "0", "-", "-", "-"]
