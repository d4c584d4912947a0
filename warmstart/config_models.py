"""The `[[models]]` and `[warming]` sections of the config: each model's entry (its engine told from its path
when not given) and the warming settings that name models."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.config import (
    Config,
    HintConfig,
    ModelConfig,
    ScheduleConfig,
    WarmingConfig,
)
from warmstart.config_checks import expect, only_keys, read_bool, read_duration, read_int, read_positive
from warmstart.engines.gguf import holds_gguf
from warmstart.engines.registry import DEFAULT_CONCURRENCY, ENGINES, validate_options
from warmstart.errors import ConfigError
from warmstart.names import MODEL_NAME, MODEL_NAME_RULE


def store_model(config: Config, manifest: Any) -> ModelConfig:
    """How a model added to the store (its manifest) is served when no configured model names it: under its
    store name, from `store:NAME`, with the config's [defaults]; ConfigError when it cannot be (an engine
    that needs settings of its own, such as "command")."""
    w = config.warming
    return parse_model({"name": manifest.name, "path": f"store:{manifest.name}", "engine": manifest.engine},
                        0, config.model_defaults, Path.cwd(), config.server.data_dir, w.enabled and w.predictive)


def infer_engine(path: Any, base_dir: Path, data_dir: Path) -> str | None:
    """The engine for a model whose entry names none, told from its path: a GGUF file is llama.cpp's, so is a
    folder holding GGUF files (even with a config.json beside them, as many GGUF repositories on the Hugging
    Face Hub have: the store's format rule, `detect_format`, also puts GGUF first), a folder with a Hugging
    Face config.json vLLM's, a store model the one its manifest records."""
    if not isinstance(path, str) or not path:
        return None
    if path.startswith("store:"):
        from warmstart.store.manifest import ManifestStore

        try:
            manifest = ManifestStore(data_dir).get(path[len("store:"):])
        except Exception:  # an unreadable store: the engine must then be given
            return None
        if manifest is None:
            return None
        if manifest.engine:
            return manifest.engine
        path = str(manifest.root)
    if path.lower().endswith(".gguf"):
        return "llamacpp"
    local = Path(path).expanduser()
    local = local if local.is_absolute() or ":" in path.split("/")[0] else base_dir / local
    if holds_gguf(local):
        return "llamacpp"  # a folder holding GGUF files (a Hugging Face snapshot of a GGUF repository)
    if (local / "config.json").is_file():
        return "vllm"
    return None


def parse_model(raw: Any, i: int, defaults: Mapping[str, Any], base_dir: Path, data_dir: Path,
                 predictive: bool = False) -> ModelConfig:
    where = f"models[{i}]"
    expect(isinstance(raw, Mapping), where, raw, "must be a table")
    only_keys(raw, where, set(ModelConfig.__dataclass_fields__) - {"keep_alive_auto", "ram_keep_alive_auto"})
    for key in ("name", "path"):
        expect(key in raw, f"{where}.{key}", None, "is required")
    name = raw["name"]
    expect(isinstance(name, str) and bool(MODEL_NAME.match(name)), f"{where}.name", name, f"must be {MODEL_NAME_RULE}")
    engine = raw.get("engine") or infer_engine(raw["path"], base_dir, data_dir)
    expect(engine is not None, f"{where}.engine", None,
            "is required: it cannot be told from the path; set engine = \"llamacpp\" (a GGUF file), \"vllm\" "
            "(a Hugging Face model folder) or \"command\" (your own OpenAI-compatible server)")
    expect(engine in ENGINES, f"{where}.engine", engine, f"must be one of {', '.join(ENGINES)}")
    assert isinstance(engine, str)
    path = raw["path"]
    expect(isinstance(path, str) and bool(path), f"{where}.path", path, "must be a non-empty string")
    if ":" not in path.split("/")[0] and not Path(path).expanduser().is_absolute():
        path = str((base_dir / Path(path)).resolve())
    merged = {**defaults, **raw}
    auto = merged.get("keep_alive") == "auto" or ("keep_alive" not in merged and predictive)
    expect(not auto or predictive, f"{where}.keep_alive", "auto",
            "needs predictive warming ([warming] predictive = true); or give a duration such as '5m'")
    ram_auto = auto and merged.get("ram_keep_alive", "auto") == "auto"
    expect(merged.get("ram_keep_alive") != "auto" or auto, f"{where}.ram_keep_alive", "auto",
            "needs keep_alive = \"auto\" (the controller that picks it); or give a duration such as '1h'")
    if merged.get("ram_keep_alive") == "auto":
        merged["ram_keep_alive"] = 0.0
    if auto:
        # the fixed keep-alive a server without its warming controller would use
        merged["keep_alive"] = 300.0
    options = raw.get("options", {})
    expect(isinstance(options, Mapping), f"{where}.options", options, "must be a table")
    options = validate_options(engine, dict(options), f"{where}.options")
    default_conc = DEFAULT_CONCURRENCY[engine]
    chat = raw.get("chat")
    expect(chat is None or isinstance(chat, bool), f"{where}.chat", chat, "must be true or false")
    return ModelConfig(
        name=name,
        engine=engine,
        path=path,
        keep_alive=read_duration(merged, "keep_alive", 300.0, where),
        max_replicas=read_int(merged, "max_replicas", 1, where, lo=1, hi=1024),
        max_concurrency=read_int(raw, "max_concurrency", default_conc, where, lo=1, hi=100_000),
        options=MappingProxyType(options),
        chat=chat,
        keep_alive_auto=auto,
        ram_keep_alive=read_duration(merged, "ram_keep_alive", 0.0, where),
        ram_keep_alive_auto=ram_auto,
        allow_unverified=read_bool(raw, "allow_unverified", False, where),
    )


def parse_warming(raw: Mapping[str, Any], models: set[str]) -> WarmingConfig:
    d = WarmingConfig()
    only_keys(raw, "warming", {"enabled", "predictive", "tick", "history_retention", "cold_start_estimate",
                                "settings", "hint", "schedule"})
    settings = raw.get("settings", {})
    expect(isinstance(settings, Mapping), "warming.settings", settings, "must be a table")
    if settings:
        from dataclasses import fields

        from warmstart.policy.predictive_params import PredictiveParams

        only_keys(settings, "warming.settings", {f.name for f in fields(PredictiveParams)})
    parsed_settings = {k: read_duration(settings, k, 0.0, "warming.settings", finite=True) for k in settings}
    if parsed_settings:
        from warmstart.policy.defaults import predictive_params
        from warmstart.policy.predictive_params import SettingError

        try:
            predictive_params(parsed_settings)
        except SettingError as exc:
            raise ConfigError(f"warming.settings.{exc.name}", settings[exc.name], exc.reason) from None
    hint_raw = raw.get("hint", {})
    expect(isinstance(hint_raw, Mapping), "warming.hint", hint_raw, "must be a table")
    only_keys(hint_raw, "warming.hint", set(HintConfig.__dataclass_fields__))
    h = HintConfig()
    allow = hint_raw.get("models")
    if allow is not None:
        expect(isinstance(allow, list) and all(isinstance(m, str) for m in allow), "warming.hint.models", allow,
                "must be a list of model names")
        for m in allow:
            expect(m in models, "warming.hint.models", m, f"is not a model served here ({', '.join(sorted(models))})")
    origins = hint_raw.get("cors_origins", [])
    expect(isinstance(origins, list) and all(isinstance(o, str) and (o == "*" or re.match(r"^https?://[^/]+$", o))
                                              for o in origins),
            "warming.hint.cors_origins", origins, "must be a list of origins such as 'https://example.com', or ['*']")
    per_minute = hint_raw.get("per_client_per_minute", h.per_client_per_minute)
    expect(isinstance(per_minute, (int, float)) and not isinstance(per_minute, bool) and 0 < per_minute <= 10_000,
            "warming.hint.per_client_per_minute", per_minute, "must be a number above 0")
    hint = HintConfig(
        enabled=read_bool(hint_raw, "enabled", h.enabled, "warming.hint"),
        warm_for=read_positive(hint_raw, "warm_for", h.warm_for, "warming.hint"),
        per_client_per_minute=float(per_minute),
        per_client_burst=read_int(hint_raw, "per_client_burst", h.per_client_burst, "warming.hint", lo=1, hi=10_000),
        models=tuple(allow) if allow is not None else None,
        budget_per_hour=read_duration(hint_raw, "budget_per_hour", h.budget_per_hour, "warming.hint", finite=True),
        cors_origins=tuple(origins),
    )
    schedules_raw = raw.get("schedule", [])
    expect(isinstance(schedules_raw, list), "warming.schedule", schedules_raw,
            "must be an array of tables ([[warming.schedule]])")
    schedules = tuple(parse_schedule(s, i, models) for i, s in enumerate(schedules_raw))
    return WarmingConfig(
        enabled=read_bool(raw, "enabled", d.enabled, "warming"),
        predictive=read_bool(raw, "predictive", d.predictive, "warming"),
        tick=read_positive(raw, "tick", d.tick, "warming"),
        history_retention=read_positive(raw, "history_retention", d.history_retention, "warming"),
        cold_start_estimate=read_positive(raw, "cold_start_estimate", d.cold_start_estimate, "warming"),
        predictive_settings=MappingProxyType(parsed_settings),
        hint=hint,
        schedules=schedules,
    )


def parse_schedule(raw: Any, i: int, models: set[str]) -> ScheduleConfig:
    from warmstart.policy.schedule import parse_window, zone

    where = f"warming.schedule[{i}]"
    expect(isinstance(raw, Mapping), where, raw, "must be a table")
    only_keys(raw, where, {"model", "when", "tz"})
    model = raw.get("model")
    expect(isinstance(model, str) and model in models, f"{where}.model", model,
            f"must name a model served here ({', '.join(sorted(models))})")
    when = raw.get("when")
    windows = [when] if isinstance(when, str) else when
    expect(isinstance(windows, list) and bool(windows) and all(isinstance(w, str) for w in windows),
            f"{where}.when", when, "must be a window such as '07:55-18:00 Mon-Fri' or '03:00 for 10m', or a list")
    for w in windows:
        try:
            parse_window(w)
        except ValueError as exc:
            raise ConfigError(f"{where}.when", w, str(exc)) from None
    tz = raw.get("tz", "UTC")
    try:
        zone(str(tz))
    except ValueError as exc:
        raise ConfigError(f"{where}.tz", tz, str(exc)) from None
    return ScheduleConfig(model=model, windows=tuple(windows), tz=str(tz))
