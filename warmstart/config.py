"""Settings: the frozen objects everything reads its settings from (`warmstart.config_loader` reads and
validates them, once, at start-up)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any


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
    # keep_alive = "auto" (or none given while predictive warming is on): the warming controller picks how
    # long the model stays loaded after a request (`keep_alive` applies only where no controller runs)
    keep_alive_auto: bool = False
    # after keep-alive unloads the last replica, hold the weights in RAM this long (0: straight to disk)
    ram_keep_alive: float = 0.0
    # ram_keep_alive = "auto" (or none given on a keep_alive = "auto" model): the warming controller picks how
    # long the weights stay in RAM after the model unloads, from its gaps, start times per tier and ram_price
    ram_keep_alive_auto: bool = False
    # start the model even when its manifest says it failed its accuracy gate or was quantized and never evaluated
    allow_unverified: bool = False


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("~/.local/share/warmstart").expanduser()  # noqa: RUF009 - a Path is immutable
    queue_size: int = 256
    queue_deadline: float = 120.0
    max_body_bytes: int = 4 * 1024 * 1024
    start_timeout: float = 600.0
    stop_timeout: float = 10.0
    log_level: str = "info"
    # a line per request on stderr: "text", "json" (one JSON object per line) or "off"
    access_log: str = "text"
    # addresses (or networks) of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed;
    # empty: none, so a client's address is always the socket's peer
    trusted_proxies: tuple[str, ...] = ()
    # a replica with a request in flight whose engine sends no byte for this long is probed; one that
    # does not answer its health check then is failed, killed and replaced
    engine_timeout: float = 60.0


@dataclass(frozen=True)
class AuditConfig:
    # refuse a model start whose audit record cannot be written (disk full, permissions)
    required: bool = True
    # None: <server.data_dir>/audit
    dir: Path | None = None
    # start a new file (the chain continues) when the current one would grow past this
    rotate_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class AuthConfig:
    # Bearer keys for the /v1 API (and /metrics); an admin key also opens /admin.
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    # None: required exactly when server.host is not a loopback address; true: on loopback too; false only
    # on loopback (beyond it a server never runs without keys)
    required: bool | None = None

    def __repr__(self) -> str:  # keys never reach a log line or a traceback
        return f"AuthConfig(api_keys=<{len(self.api_keys)}>, admin_keys=<{len(self.admin_keys)}>, " \
               f"required={self.required})"


@dataclass(frozen=True)
class ScheduleConfig:
    """Keep `model` warm during each window ("07:55-18:00 Mon-Fri", "03:00 for 10m"), in time zone `tz`."""

    model: str
    windows: tuple[str, ...]
    tz: str = "UTC"


@dataclass(frozen=True)
class HintConfig:
    enabled: bool = True
    # how long a hint keeps its model warm
    warm_for: float = 120.0
    # per client (IP address): hints per minute, and how many it may send at once
    per_client_per_minute: float = 6.0
    per_client_burst: int = 3
    # models a hint may warm; None: all
    models: tuple[str, ...] | None = None
    # replica-seconds hints may pay for per rolling hour, all models together
    budget_per_hour: float = 3600.0
    # origins allowed to send hints from a browser (CORS); "*" for any
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class WarmingConfig:
    """[warming]: the controller that warms models ahead of requests (schedule, hint, predictive)."""

    enabled: bool = True
    # learn each model's arrivals; pick keep-alives and pre-warm for models with keep_alive "auto"
    predictive: bool = True
    # how often the controller re-plans
    tick: float = 5.0
    # how long request arrival times are kept (SQLite in the data directory)
    history_retention: float = 28 * 86400.0
    # assumed cold start of a model before one was measured
    cold_start_estimate: float = 30.0
    # expert settings of the predictive policy (warmstart.policy.predictive_params.PredictiveParams), in seconds
    predictive_settings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    hint: HintConfig = field(default_factory=HintConfig)
    schedules: tuple[ScheduleConfig, ...] = ()


@dataclass(frozen=True)
class StoreConfig:
    """The model store and its RAM tier (warmstart/store)."""

    # the stat check (size, mtime, ctime, inode, device) against the manifest; a file whose stat changed is re-hashed
    verify_on_start: bool = True
    ram_method: str = "auto"  # auto | mlock | tmpfs
    ram_max: int | None = None  # bytes the RAM tier may hold in all; None: what memory allows
    ram_reserve: int = 2 << 30  # bytes left free for engines and everything else
    ram_price: float = 0.005  # cost per GiB-hour held in RAM (in the unit of your replica price)
    tmpfs_dir: Path | None = None
    # a seal file baked into an image (warmstart.store.seal): digests checked at build, trusted at start
    seals: Path | None = None
    # serve every model added to the store (`warmstart models add`, `pull`, `quantize`) under its store name,
    # beside the configured ones, from the moment it is added (a running server sees it without a restart)
    serve_added: bool = True


@dataclass(frozen=True)
class ClusterConfig:
    """Many machines (warmstart/cluster, docs/cluster.md): off unless `backend = "ray"`."""

    backend: str = "none"  # none | ray
    address: str = "auto"  # "auto" (a Ray cluster started on this machine) or HOST:PORT of its head
    node_dir: Path | None = None  # each node's model files and engine logs (default: DATA_DIR/nodes/NAME)
    head_engines: bool = True  # whether the head machine's own node runs engines (and serves its model files)
    watch_interval: float = 2.0  # seconds between two looks at the cluster's membership
    memory_reserve: int = 1 << 30  # bytes of each node's memory left to everything but engines
    # where engines listen ("": the node's address in the cluster); "127.0.0.1" when every node is this machine
    engine_host: str = ""

    @property
    def enabled(self) -> bool:
        return self.backend == "ray"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    models: tuple[ModelConfig, ...]
    source: Path | None = None
    audit: AuditConfig = field(default_factory=AuditConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    warming: WarmingConfig = field(default_factory=WarmingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # the [defaults] table as written: what a model added to the store later is served with
    model_defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.server.host)

    @property
    def auth_required(self) -> bool:
        return auth_required(self.server.host, self.auth.required)

    @property
    def audit_dir(self) -> Path:
        return self.audit.dir if self.audit.dir is not None else self.server.data_dir / "audit"


def auth_required(host: str, required: bool | None) -> bool:
    """Keys are required when `auth.required` says so, or, left unset, when the server binds beyond loopback."""
    return (not is_loopback(host)) if required is None else required


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
