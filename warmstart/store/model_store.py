"""The pool's side of the store: an integrity check before every start, the RAM tier between starts,
and the seconds each model spends in each tier (loaded, ram).

The pool calls four hooks (`before_start`, `before_stop`, `evict`, `replica_starting`) and
`add_loaded_seconds`/`account` for bookkeeping; the RAM tier's timers live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.clock import Clock
from warmstart.config import Config, ModelConfig
from warmstart.errors import StoreError, UnverifiedModel
from warmstart.policy import keepalive, tiering
from warmstart.store.manifest import ManifestStore, manifest_name
from warmstart.store.tiers import GiB, RamTier, gib
from warmstart.telemetry.metrics import Metrics

log = logging.getLogger("warmstart.store")
TIERS = ("loaded", "ram")
DEFAULT_HOLD_S = 3600.0  # a hold by hand of a model that has no RAM keep-alive of its own


@dataclass
class _Residency:
    config: ModelConfig
    until: float = -math.inf  # when the RAM keep-alive runs out (while not loaded)
    held_until: float = -math.inf  # the end of a hold asked for by hand (`warmstart hold`)
    accounted_to: float | None = None  # RAM seconds counted up to here
    timer: asyncio.Task | None = None
    seconds: dict[str, float] = field(default_factory=lambda: {t: 0.0 for t in TIERS})
    ram_gib_seconds: float = 0.0  # the basis of RAM cost
    last_refusal: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelStore:
    def __init__(self, config: Config, clock: Clock, metrics: Metrics, *,
                 live_replicas: Callable[[str], int], tier: RamTier | None = None,
                 manifests: ManifestStore | None = None) -> None:
        self.config = config
        self.settings = config.store
        self.clock = clock
        self.metrics = metrics
        self.live_replicas = live_replicas
        self.manifests = manifests or ManifestStore(config.server.data_dir)
        self.tier = tier or RamTier(method=self.settings.ram_method, max_bytes=self.settings.ram_max,
                                    reserve_bytes=self.settings.ram_reserve,
                                    tmpfs_dir=self.settings.tmpfs_dir or default_tmpfs_dir(config.server.data_dir))
        self.models = {m.name: _Residency(m) for m in config.models}
        self._check_locks: dict[str, asyncio.Lock] = {}
        # copies left by a warmstart that was killed: nothing holds them any more
        if self.tier.tmpfs_dir.is_dir() and self.settings.tmpfs_dir is None:
            shutil.rmtree(self.tier.tmpfs_dir, ignore_errors=True)

    def track(self, model: ModelConfig) -> None:
        """A model added to the pool while it runs, or one whose settings changed (a reload)."""
        state = self.models.get(model.name)
        if state is None:
            self.models[model.name] = _Residency(model)
        else:
            state.config = model

    async def forget(self, name: str) -> None:
        """A model no longer served: its RAM copy goes back to disk and its bookkeeping ends."""
        await self.evict(name, "no longer served")
        self.models.pop(name, None)

    # ---- integrity --------------------------------------------------------------------------------

    async def check(self, model: ModelConfig, path: Path) -> None:
        """The cheap integrity check (hashing only on first use or a changed stat); IntegrityError on a mismatch."""
        lock = self._check_locks.setdefault(model.name, asyncio.Lock())
        async with lock:  # one hash per model even when starts race
            await asyncio.to_thread(self.manifests.check, model.name, path, engine=model.engine, source=model.path)

    # ---- hooks the pool calls -----------------------------------------------------------------------

    def in_ram(self, name: str) -> bool:
        """Whether the model's weights are held in the RAM tier now (a start reads them from there)."""
        return self.tier.resident(name) is not None

    def replica_starting(self, name: str) -> None:
        """A replica is about to be added: close the RAM seconds counted so far (the model is loaded from now)."""
        self.account()

    async def before_start(self, model: ModelConfig, path: Path) -> Path:
        """Check integrity; return the path the engine should open (the RAM tier's copy when it has one)."""
        if self.settings.verify_on_start:
            await self.check(model, path)
        await asyncio.to_thread(self.gate, model)
        return self.tier.path_for(model.name, path)

    def gate(self, model: ModelConfig) -> None:
        """Refuse a model its manifest marks as failing its accuracy gate (or quantized, never evaluated)."""
        from warmstart.quant.gate import refusal

        manifest = self.manifests.get(manifest_name(model.name, model.path))
        if manifest is None:
            return
        why = refusal(manifest.name, manifest.quantization, manifest.accuracy, model.allow_unverified)
        if why is not None:
            raise UnverifiedModel(why)

    async def before_stop(self, model: ModelConfig, path: Path | None, reason: str, last: bool,
                          planned: float | None = None) -> None:
        """The replica is about to stop. The last one on keep-alive demotes the model to RAM (held
        before the engine exits, so its pages are still cached); a manual unload or shutdown frees it.
        `planned`: until when the warming controller wants the weights in RAM (the pool's `rules.tier_on_stop`
        decides the same way), in place of the model's ram_keep_alive."""
        state = self.models.get(model.name)
        if state is None or not last:
            return
        now = self.clock.now()
        ram_keep_alive = model.ram_keep_alive if planned is None else tiering.planned_keep_alive(planned, now)
        decision = tiering.on_last_stop(reason=reason, ram_keep_alive=ram_keep_alive, now=now,
                                        held_until=state.held_until)
        if isinstance(decision, tiering.ToDisk):
            await self.evict(model.name, decision.reason)
            return
        if path is None:
            return
        try:
            await self._hold(state, path, decision.until, "demoted to RAM")
        except (StoreError, OSError) as exc:  # refused, or the file went away: never block the stop
            log.warning("%s; the model goes cold", exc)

    async def hold(self, model: ModelConfig, path: Path, keep_alive: float | None = None) -> None:
        """Hold the model's weights in RAM now, for `keep_alive` seconds (None: the model's ram_keep_alive,
        or DEFAULT_HOLD_S when it has none; math.inf: until unloaded or released) whatever its own RAM
        keep-alive; 0 releases them. Raises TierRefused or StoreError, already counted as a refusal."""
        state = self.models[model.name]
        if keep_alive is None:
            keep_alive = model.ram_keep_alive if model.ram_keep_alive != 0 else DEFAULT_HOLD_S
        if keep_alive == 0:
            await self.evict(model.name, "released by hand")
            return
        state.held_until = keepalive.expiry(self.clock.now(), keep_alive)
        await self._hold(state, path, state.held_until, "held in RAM by hand")

    async def _hold(self, state: _Residency, path: Path, until: float, what: str) -> None:
        name = state.config.name
        async with state.lock:
            try:
                resident = await asyncio.to_thread(self.tier.hold, name, [path])
            except (StoreError, OSError) as exc:
                state.last_refusal = str(exc)
                self.metrics.ram_tier_refusals.labels(name).inc()
                raise
            state.last_refusal = None
            state.until = until
            self.account()  # RAM seconds of a hold already running count up to now; a new one starts now
            state.accounted_to = self.clock.now()
            self.metrics.ram_tier_bytes.labels(name).set(resident.bytes)
            log.info("model %s %s (%s, %s, held in %.2f s)", name, what, resident.method, gib(resident.bytes),
                     resident.seconds_to_hold)
            self._arm(state)

    async def evict(self, name: str, reason: str) -> bool:
        """Let the model's RAM residency go (back to disk)."""
        state = self.models.get(name)
        if state is None or self.tier.resident(name) is None:
            return False
        self.account()
        await asyncio.to_thread(self.tier.release, name)
        self._left_ram(name, state)
        log.info("model %s left RAM (%s)", name, reason)
        return True

    def _left_ram(self, name: str, state: _Residency) -> None:
        """The model's RAM residency was released: stop its expiry timer, its accounting and its gauge."""
        if state.timer is not None and state.timer is not asyncio.current_task():
            state.timer.cancel()
        state.timer = None
        state.accounted_to, state.until, state.held_until = None, -math.inf, -math.inf
        self.metrics.ram_tier_bytes.labels(name).set(0)

    def _arm(self, state: _Residency) -> None:
        if state.timer is not None:
            state.timer.cancel()
        state.timer = None
        if math.isinf(state.until):
            return
        state.timer = asyncio.get_running_loop().create_task(self._expire(state), name=f"ram {state.config.name}")

    async def _expire(self, state: _Residency) -> None:
        name = state.config.name
        while True:
            await self.clock.sleep(state.until - self.clock.now())
            decision = tiering.on_ram_expiry(loaded=self.live_replicas(name) > 0,
                                             ram_keep_alive=state.config.ram_keep_alive, now=self.clock.now(),
                                             held_until=state.held_until)
            if isinstance(decision, tiering.ToDisk):
                state.timer = None
                await self.evict(name, decision.reason)
                return
            state.until = decision.until
            if math.isinf(state.until):
                state.timer = None
                return

    # ---- bookkeeping ------------------------------------------------------------------------------

    def add_loaded_seconds(self, name: str, seconds: float) -> None:
        state = self.models.get(name)
        if state is not None and seconds > 0:
            state.seconds["loaded"] += seconds
            self.metrics.replica_tier_seconds.labels(name, "loaded").inc(seconds)

    def account(self) -> None:
        """Count RAM seconds up to now for every model held in RAM with no replica loaded."""
        now = self.clock.now()
        for name, state in self.models.items():
            if state.accounted_to is None:
                continue
            resident = self.tier.resident(name)
            if resident is not None and not resident.alive:  # the holder was killed: the pages are unpinned
                log.warning("the RAM tier's holder of model %s exited; the model is back on disk", name)
                self.tier.release(name)
                self._left_ram(name, state)
                continue
            if self.live_replicas(name) == 0 and resident is not None:
                seconds = max(0.0, now - state.accounted_to)
                state.seconds["ram"] += seconds
                state.ram_gib_seconds += seconds * resident.bytes / GiB
                self.metrics.replica_tier_seconds.labels(name, "ram").inc(seconds)
            state.accounted_to = now

    def view(self, name: str) -> dict[str, Any]:
        state = self.models[name]
        resident = self.tier.resident(name)
        now = self.clock.now()
        held = resident.to_dict() if resident is not None else None
        if held is not None:
            held["until_s"] = None if math.isinf(state.until) else round(max(0.0, state.until - now), 3)
        tier = "loaded" if self.live_replicas(name) > 0 else ("ram" if resident is not None else "disk")
        return {
            "tier": tier,
            "ram": held,
            "seconds": {k: round(v, 3) for k, v in state.seconds.items()},
            "ram_cost": round(state.ram_gib_seconds / 3600 * self.settings.ram_price, 6),
            "ram_price_per_gib_hour": self.settings.ram_price,
            "ram_keep_alive_s": None if math.isinf(state.config.ram_keep_alive) else state.config.ram_keep_alive,
            "held_by_hand": resident is not None and state.held_until > now,
            "last_refusal": state.last_refusal,
        }

    async def close(self) -> None:
        for state in self.models.values():
            if state.timer is not None:
                state.timer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await state.timer
        await asyncio.to_thread(self.tier.close)


def default_tmpfs_dir(data_dir: Path) -> Path:
    """A folder on /dev/shm of this user and data directory, so two servers never share copies."""
    tag = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]
    return Path("/dev/shm") / f"warmstart-{os.getuid()}-{tag}"
