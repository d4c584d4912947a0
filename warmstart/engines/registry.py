"""Engine kinds by name, and the options each accepts in config (validated, never passed to a shell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warmstart.engines.options import BY_KIND, CHECKS, OptionTypes
from warmstart.errors import ConfigError

ENGINES = ("llamacpp", "vllm", "command")
# requests one replica serves at once unless a model says otherwise (llama.cpp's server: its slots)
DEFAULT_CONCURRENCY = {"llamacpp": 4, "vllm": 64, "command": 8}


def option_types(kind: str) -> OptionTypes:
    return BY_KIND.get(kind, {})


def validate_options(kind: str, options: dict[str, Any], where: str) -> dict[str, Any]:
    types = option_types(kind)
    for key, value in options.items():
        if key not in types:
            known = ", ".join(sorted(types)) or "none"
            raise ConfigError(f"{where}.{key}", value, f"unknown option for engine {kind}; known: {known}")
        expected = types[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            name = expected.__name__ if isinstance(expected, type) else "/".join(t.__name__ for t in expected)
            raise ConfigError(f"{where}.{key}", value, f"must be of type {name}")
    if options.get("memory_bytes", 1) < 1:
        raise ConfigError(f"{where}.memory_bytes", options["memory_bytes"], "must be a positive number of bytes")
    check = CHECKS.get(kind)
    if check is not None:
        check(options, where)
    return options


def create_engines(data_dir: Path, models: tuple[Any, ...] = ()) -> dict[str, Any]:
    """One engine object per kind; `models` (the configured ones) size the pre-initialized runtimes."""
    from warmstart.engines.command import CommandEngine
    from warmstart.engines.llamacpp import LlamaCppEngine
    from warmstart.engines.vllm import VllmEngine

    return {"llamacpp": LlamaCppEngine(data_dir, models=tuple(models)), "vllm": VllmEngine(data_dir, tuple(models)),
            "command": CommandEngine(data_dir)}
