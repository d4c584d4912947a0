"""Assemble and run the server: config -> engines -> pool -> gateway -> uvicorn on a socket we bound."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from warmstart.clock import SystemClock
from warmstart.config import Config
from warmstart.errors import ConfigError, WarmstartError

if TYPE_CHECKING:
    from types import FrameType

    import uvicorn

    from warmstart.clock import Clock
    from warmstart.cluster.placing import Cluster
    from warmstart.gateway.app import Gateway
    from warmstart.pool.pool import Pool
    from warmstart.store.model_store import ModelStore
    from warmstart.store.seal import Seals
    from warmstart.telemetry.audit import AuditLog
    from warmstart.telemetry.metrics import Metrics
    from warmstart.warming.runner import WarmingRunner

log = logging.getLogger("warmstart")


class StartupError(WarmstartError):
    pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # inherited by every accepted connection: uvloop does not set it, and without it a response's
    # body waits for the client's delayed ACK of its headers (40 ms on Linux)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise StartupError(f"cannot listen on {host}:{port}: {why}; stop the other server or pass --port") from None
    sock.listen(2048)
    # never inheritable: uvloop ignores close_fds, so an engine process would hold the listening socket,
    # and after a crash of warmstart the kernel would accept connections that nobody answers and a
    # restarted warmstart could not bind its port until that engine was gone
    sock.set_inheritable(False)
    return sock


@dataclass
class Core:
    """What the server runs before its gateway exists: the pool (and the engines it starts), the audit log
    and the warming runner. Light to import (no web framework), so a model can start while the gateway is
    imported."""

    pool: Pool
    metrics: Metrics
    clock: SystemClock
    audit: AuditLog
    warming: WarmingRunner | None


def build_core(config: Config) -> Core:
    from warmstart.engines.registry import create_engines
    from warmstart.pool.pool import Pool
    from warmstart.store.digest import DigestCache
    from warmstart.store.manifest import ManifestStore
    from warmstart.telemetry.audit import AuditLog
    from warmstart.telemetry.metrics import Metrics

    data_dir = config.server.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data directory {data_dir}: {exc.strerror}; "
                           "set server.data_dir or WARMSTART_DATA_DIR") from None
    from warmstart.engines.ledger import ProcessLedger

    ProcessLedger(data_dir / "run" / "engines").sweep()  # engines an earlier, crashed warmstart left behind
    clock = SystemClock()
    metrics = Metrics(node_label=config.cluster.enabled)  # many machines: per-model metrics per node too
    seals = load_seals(config)
    digests = DigestCache(data_dir / "digests.json", seals)
    audit = AuditLog(config.audit_dir, clock=clock, metrics=metrics, digests=digests,
                     required=config.audit.required, rotate_bytes=config.audit.rotate_bytes,
                     manifests=ManifestStore(data_dir))
    # on a cluster every engine runs on a node (its agent's engines): the head keeps no pre-initialized vLLM
    # runtime or llama.cpp router of its own, which no start would take
    planned = () if config.cluster.enabled else config.models
    pool = Pool(config, create_engines(data_dir, planned), clock, metrics, audit=audit)
    pool.attach_store(build_store(config, pool, clock, metrics, seals))
    if config.cluster.enabled:
        pool.attach_cluster(build_cluster(config, metrics))
    warming = None
    if config.warming.enabled:
        from warmstart.warming.runner import new_runner

        warming = new_runner(config, pool, clock, metrics)
    return Core(pool, metrics, clock, audit, warming)


def build_gateway(config: Config, core: Core, load: Callable[[], Config] | None = None) -> Gateway:
    """The gateway over `core`; `load` reads the config again, as `serve` read it, for a reload."""
    from warmstart.gateway.app import create_app

    app = create_app(config, core.pool, core.metrics, core.clock, load, warming=core.warming)
    app.services.audit = core.audit
    if app.services.catalog is not None:
        app.services.catalog.audit = core.audit
    return app


def build_app(config: Config, load: Callable[[], Config] | None = None) -> Gateway:
    """The server's app; `load` reads the config again, as `serve` read it, for a reload."""
    return build_gateway(config, build_core(config), load)


def load_seals(config: Config) -> Seals | None:
    """The image's seal file (`[store] seals`), or None; a damaged or writable one refuses the start."""
    from warmstart.errors import StoreError
    from warmstart.store.seal import Seals

    if config.store.seals is None:
        return None
    try:
        return Seals.load(config.store.seals)
    except StoreError as exc:
        raise StartupError(f"{exc} (config: store.seals)") from None


def build_store(config: Config, pool: Pool, clock: Clock, metrics: Metrics,
                seals: Seals | None = None) -> ModelStore:
    """Integrity checks and the RAM tier for the pool's models (warmstart.store); `seals` trusts an image's model."""
    from warmstart.store.digest import DigestCache
    from warmstart.store.manifest import ManifestStore
    from warmstart.store.model_store import ModelStore

    manifests = None
    if seals is not None:
        digests = DigestCache(config.server.data_dir / "store" / "digests.json", seals)
        manifests = ManifestStore(config.server.data_dir, digests)
    return ModelStore(config, clock, metrics, live_replicas=pool.live_replicas, manifests=manifests)


def build_cluster(config: Config, metrics: Metrics) -> Cluster:
    """Many machines on Ray (warmstart.cluster); Ray is imported here and nowhere without the switch."""
    try:
        from warmstart.cluster.ray_nodes import RayNodes
    except ImportError as exc:
        raise StartupError(f"[cluster] backend = \"ray\" needs Ray ({exc.name} is missing): install it with "
                           "`pip install 'warmstart[cluster]'`") from None
    from warmstart.cluster.placing import Cluster
    from warmstart.store.digest import DigestCache
    from warmstart.store.sources import resolve_model_path

    seed = {}
    for m in config.models:  # the head machine's own files, served by its node (when it runs engines)
        try:
            seed[m.name] = str(resolve_model_path(m.path, config.server.data_dir))
        except WarmstartError:  # a model that cannot be resolved is refused later, by name
            continue
    nodes = RayNodes(config.cluster, config.server.data_dir, seed)
    return Cluster(nodes, metrics, DigestCache(config.server.data_dir / "digests.json"))


def run(config: Config, load: Callable[[], Config] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; SIGHUP reads the config again (`load`) and applies it."""
    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = bind(config.server.host, config.server.port)
    core = build_core(config)
    host, port = sock.getsockname()[:2]
    names = ", ".join(m.name for m in config.models)
    print(f"warmstart serving http://{host}:{port}  models: {names}  data: {config.server.data_dir}",
          file=sys.stderr, flush=True)

    async def main() -> None:
        pool = core.pool

        async def prepare_models() -> None:
            await pool.prepare()
            # hash the weights now, so the first start's audit record finds the digest cached
            await core.audit.prime(pool.resolved_paths())

        if pool.cluster is not None:  # joined before the first request can be placed
            await pool.cluster.open()
        prepare = asyncio.create_task(prepare_models())
        try:
            # the models the warming plan wants warm start now; their engines load while the gateway (the web
            # framework: most of the server's own start) is imported beside the event loop
            if core.warming is not None:
                await core.warming.start()
            server, app = await asyncio.to_thread(_server, config, core, load)
        except BaseException:
            prepare.cancel()
            if core.warming is not None:
                await core.warming.stop()
            await pool.shutdown()
            raise
        reloads: set[asyncio.Task[None]] = set()

        def on_hangup() -> None:  # like nginx and Prometheus: SIGHUP reloads the config, never ends the server
            task = asyncio.create_task(reload_quietly())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        async def reload_quietly() -> None:
            catalog = app.services.catalog
            if catalog is not None:
                with contextlib.suppress(ConfigError):  # logged by the catalog; the config in force serves on
                    await catalog.reload()

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_hangup)
        await server.serve(sockets=[sock])
        prepare.cancel()

    import uvloop

    uvloop.run(main())
    return 0


def _server(config: Config, core: Core, load: Callable[[], Config] | None) -> tuple[uvicorn.Server, Gateway]:
    """The gateway and its uvicorn server (run in a thread: the import is most of it)."""
    import uvicorn

    from warmstart.gateway.front import front_protocol

    app = build_gateway(config, core, load)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after a graceful stop; for us that stop is a normal exit (0)
            self._captured_signals.clear()

    # forwarded headers only from configured proxies (uvicorn would otherwise believe any loopback peer)
    proxies = list(config.server.trusted_proxies)
    # the generation routes straight from uvicorn's protocol, unless forwarded headers must be read first
    http = "httptools" if proxies else front_protocol(app)
    return Server(uvicorn.Config(app, log_level=config.server.log_level, access_log=False,
                                 loop="uvloop", http=http, ws="none", timeout_graceful_shutdown=5,
                                 proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)), app
