"""Assemble and run the server: config -> engines -> pool -> gateway -> uvicorn on a socket we bound."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from typing import TYPE_CHECKING

from warmstart.clock import SystemClock
from warmstart.config import Config
from warmstart.errors import WarmstartError

if TYPE_CHECKING:
    from types import FrameType

    from warmstart.clock import Clock
    from warmstart.cluster.placing import Cluster
    from warmstart.gateway.app import Gateway
    from warmstart.pool.pool import Pool
    from warmstart.store.model_store import ModelStore
    from warmstart.store.seal import Seals
    from warmstart.telemetry.metrics import Metrics

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


def build_app(config: Config) -> Gateway:
    from warmstart.engines.registry import create_engines
    from warmstart.gateway.app import create_app
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
    pool = Pool(config, create_engines(data_dir, config.models), clock, metrics, audit=audit)
    pool.attach_store(build_store(config, pool, clock, metrics, seals))
    if config.cluster.enabled:
        pool.attach_cluster(build_cluster(config, metrics))
    app = create_app(config, pool, metrics, clock)
    app.services.audit = audit
    return app


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


def run(config: Config) -> int:
    import uvicorn

    logging.basicConfig(level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = bind(config.server.host, config.server.port)
    app = build_app(config)
    host, port = sock.getsockname()[:2]
    names = ", ".join(m.name for m in config.models)
    print(f"warmstart serving http://{host}:{port}  models: {names}  data: {config.server.data_dir}",
          file=sys.stderr, flush=True)
    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after a graceful stop; for us that stop is a normal exit (0)
            self._captured_signals.clear()

    # forwarded headers only from configured proxies (uvicorn would otherwise believe any loopback peer)
    proxies = list(config.server.trusted_proxies)
    server = Server(uvicorn.Config(app, log_level=config.server.log_level, access_log=False,
                                   loop="uvloop", http="httptools", timeout_graceful_shutdown=5,
                                   proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None))

    async def main() -> None:
        pool = app.services.pool

        async def prepare_models() -> None:
            await pool.prepare()
            # hash the weights now, so the first start's audit record finds the digest cached
            if app.services.audit is not None:
                await app.services.audit.prime(pool.resolved_paths())

        if pool.cluster is not None:  # joined before the first request can be placed
            await pool.cluster.open()
        prepare = asyncio.create_task(prepare_models())
        await server.serve(sockets=[sock])
        prepare.cancel()

    import uvloop

    uvloop.run(main())
    return 0
