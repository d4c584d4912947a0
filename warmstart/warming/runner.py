"""The warming task: it asks every model's controller for a plan and hands the pool the desired warm set
(`pool.set_warm_until`) each tick, and also at the moment a plan asked to be asked again or a planned span
begins (the moments the simulator's replay applies plans); requests and hints re-apply the plan at once.

It owns the controllers' states, the hint limiter's state and the request history; everything runs on the
event loop, so no two changes interleave. The decisions come from warmstart.policy, the same code the
simulator replays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warmstart.clock import Clock
from warmstart.config import Config, ModelConfig
from warmstart.policy import defaults
from warmstart.policy import hint as hints
from warmstart.policy.controller import Controller, learn
from warmstart.policy.defaults import AUTO_KEEP_ALIVE_FLOOR
from warmstart.policy.hint import HintDecision, HintLimits, HintRequest, HintState
from warmstart.policy.observation import Observation
from warmstart.policy.plan import IDLE, Plan, evaluate, ram_until
from warmstart.pool.changes import ModelChanges
from warmstart.pool.pool import Pool
from warmstart.pool.states import ReplicaState
from warmstart.stats import percentile
from warmstart.telemetry.metrics import Metrics
from warmstart.warming.history import ArrivalHistory

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("warmstart.warming")
PRUNE_EVERY = 3600.0


@dataclass
class ModelWarming:
    name: str
    controller: Controller
    state: Any
    plan: Plan = IDLE
    pending: list[float] = field(default_factory=list)  # arrivals not yet shown to the controller
    hints: list[tuple[float, float]] = field(default_factory=list)
    last: float | None = None
    recent: deque[float] = field(default_factory=deque)
    applied: tuple[float, str] = (-math.inf, "")
    span_at: float = math.inf  # when a span of the plan begins next (wall time)
    ram_auto: bool = False  # the controller picks the model's time in RAM (ram_keep_alive "auto")
    ram_applied: float | None = None  # the RAM horizon last handed to the pool (wall time)


def build_controller(config: Config, model: ModelConfig) -> Controller:
    """The policies the server runs for one model: its schedules, hints, and the predictive policy when
    it picks the model's keep-alive. The tick is added to every lead time (a margin: plans apply when a span
    begins, and at least every tick)."""
    warming = config.warming
    return defaults.controller(
        schedules=[(s.windows, s.tz) for s in warming.schedules if s.model == model.name],
        hints=warming.hint.enabled,
        predictive=(defaults.predictive_params(warming.predictive_settings)
                    if warming.predictive and model.keep_alive_auto else None),
        lead=warming.tick)


def hint_limits(config: Config) -> HintLimits:
    h = config.warming.hint
    return HintLimits(warm_for=h.warm_for, client_rate=h.per_client_per_minute / 60.0,
                      client_burst=float(h.per_client_burst),
                      models=frozenset(h.models) if h.models is not None else None,
                      budget_per_hour=h.budget_per_hour)


class WarmingRunner:
    def __init__(self, config: Config, pool: Pool, clock: Clock, metrics: Metrics,
                 history: ArrivalHistory | None = None) -> None:
        self.config = config
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        self.history = history
        self.tick = config.warming.tick
        self.models: dict[str, ModelWarming] = {}
        for model in config.models:
            controller = build_controller(config, model)
            self.models[model.name] = ModelWarming(model.name, controller, controller.initial_state(),
                                                   ram_auto=model.ram_keep_alive_auto and config.warming.predictive)
        self.limits = hint_limits(config)
        self.hint_state = HintState()
        self._task: asyncio.Task | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        # the next step (wall time), and the event that wakes the task sooner when a plan moves it earlier
        self._step_at = math.inf
        self._wake = asyncio.Event()
        self._last_flush = -math.inf
        self._last_prune = -math.inf
        self._started = False

    def reconfigure(self, config: Config, changes: ModelChanges) -> None:
        """The models served or the config changed while the server runs (warmstart.catalog): plan for the
        models added, no longer for the removed ones, and afresh for those whose settings or schedules changed
        (their predictions then learn again from new arrivals)."""
        old, self.config = self.config, config
        self.limits = hint_limits(config)
        for name in changes.removed:
            self.models.pop(name, None)
        renewed = {m.name for m in (*changes.added, *changes.restarted, *changes.updated)}
        renewed |= {s.model for s in set(old.warming.schedules) ^ set(config.warming.schedules)}
        hints_changed = old.warming.hint.enabled != config.warming.hint.enabled
        for model in self.pool.configs():
            prior = self.models.get(model.name)
            if prior is not None and model.name not in renewed and not hints_changed:
                continue
            controller = build_controller(config, model)
            mw = ModelWarming(model.name, controller, controller.initial_state(),
                              ram_auto=model.ram_keep_alive_auto and config.warming.predictive)
            if prior is not None:
                mw.last, mw.recent = prior.last, prior.recent
            self.models[model.name] = mw
            auto = model.keep_alive_auto and config.warming.predictive
            self.pool.set_keep_alive_floor(model.name, AUTO_KEEP_ALIVE_FLOOR if auto else None)
        if self._started:
            self.step()

    # ---- life ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the history and apply the first plans (a scheduled model starts now); a second call does nothing
        (the server starts the runner before its gateway exists, the gateway's lifespan asks again)."""
        if self._started:
            return
        self._started = True
        for model in self.pool.configs():
            if model.keep_alive_auto and self.config.warming.predictive:
                self.pool.set_keep_alive_floor(model.name, AUTO_KEEP_ALIVE_FLOOR)
        if self.history is not None:
            try:
                await asyncio.to_thread(self.history.open)
            except (sqlite3.Error, OSError) as exc:
                log.warning("request history unavailable (%s): %s; predictions start from scratch",
                            self.history.path, exc)
                self.history = None
        if self.history is not None:
            now = self.clock.wall()
            past = await asyncio.to_thread(self.history.load, now - self.config.warming.history_retention)
            for name, arrivals in past.items():
                if name in self.models:
                    self._replay(self.models[name], arrivals, now)
        self._unsubscribe = self.pool.subscribe_arrivals(self.on_arrival)
        self.step()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="warming")

    async def stop(self) -> None:
        self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.history is not None:
            await asyncio.to_thread(self.history.close)

    def _replay(self, mw: ModelWarming, arrivals: np.ndarray, now: float) -> None:
        """Teach the controller the history it missed while the server was down, an hour at a time."""
        if not len(arrivals):
            return
        mw.state, rest = learn(mw.controller, mw.state, mw.name, arrivals, now, self._cold_start(mw.name))
        mw.pending = [float(x) for x in rest]
        mw.last = float(arrivals[-1])
        mw.plan = IDLE  # decided afresh at the first step, on the present

    def _until_next_step(self) -> float:
        """Seconds to the next step: a tick, or sooner when a plan asked to be asked again or a planned span
        begins, so a plan applies at the moment it says (as the simulator's replay applies it)."""
        due = min((min(mw.plan.review_at, mw.span_at) for mw in self.models.values()), default=math.inf)
        return max(0.0, min(self.tick, due - self.clock.wall()))

    async def _run(self) -> None:
        while True:
            delay = self._until_next_step()
            self._step_at = self.clock.wall() + delay
            self._wake.clear()
            timer = asyncio.ensure_future(self.clock.sleep(delay))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({timer, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                due = timer.done() and not timer.cancelled()
                timer.cancel()
                woken.cancel()
            if not due:  # a plan's next span moved earlier: sleep again, to it
                continue
            try:
                self.step()
                now = self.clock.wall()
                if self.history is not None and now - self._last_flush >= self.tick:
                    self._last_flush = now
                    await asyncio.to_thread(self.history.flush)
                    if now - self._last_prune >= PRUNE_EVERY:
                        self._last_prune = now
                        await asyncio.to_thread(self.history.prune, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("warming step failed; trying again next tick")

    # ---- deciding and applying -----------------------------------------------------------------------

    def step(self) -> None:
        """One tick: re-plan the models whose plan asked for it, then apply every plan to the pool."""
        now = self.clock.wall()
        for mw in self.models.values():
            if now >= mw.plan.review_at or mw.plan is IDLE or mw.hints:
                self._decide(mw, now)
            self._apply(mw)

    def _decide(self, mw: ModelWarming, now: float) -> None:
        cold_start = self._cold_start(mw.name)
        ram_start, ram_price = self._ram_tier(mw, cold_start)
        # a tuple: numpy is imported by the policies that learn from arrivals, not by every server's first step
        obs = Observation(mw.name, tuple(sorted(mw.pending)), cold_start, ram_start, ram_price, tuple(mw.hints))
        mw.pending, mw.hints = [], []
        mw.plan, mw.state = mw.controller.decide(obs, mw.state, now)

    def _apply(self, mw: ModelWarming) -> None:
        now_wall, now = self.clock.wall(), self.clock.now()
        target, mw.span_at = evaluate(mw.plan, mw.last, now_wall, len(mw.recent))
        if min(mw.span_at, mw.plan.review_at) < self._step_at:
            self._wake.set()
        want = target if target is not None else (-math.inf, "")
        if mw.ram_auto:
            ram = ram_until(mw.plan, mw.last, len(mw.recent))
            if ram != mw.ram_applied:
                mw.ram_applied = ram
                self.pool.set_ram_until(mw.name, ram if ram is None or math.isinf(ram) else now + (ram - now_wall))
        if want == mw.applied:
            return
        mw.applied = want
        until = want[0] if math.isinf(want[0]) else now + (want[0] - now_wall)
        self.pool.set_warm_until(mw.name, until, want[1] or "keep-alive")

    def on_arrival(self, model: str, wall: float) -> None:
        """The pool saw a request: record it and re-apply the plan once the request has its lease or start
        (so a start it needs is counted as the request's, not the controller's)."""
        mw = self.models.get(model)
        if mw is None:
            return
        mw.pending.append(wall)
        mw.last = wall
        mw.recent.append(wall)
        window = mw.plan.recent_window
        while mw.recent and mw.recent[0] <= wall - window:
            mw.recent.popleft()
        if self.history is not None:
            self.history.add(model, wall)
        asyncio.get_running_loop().call_soon(self._apply, mw)

    def _stays(self, model: str, cold_start: float) -> tuple[float, float, bool]:
        """How long the model's last replica stays once idle (its keep-alive), when the model would unload
        as things stand (wall time; inf while a replica is busy or never unloads), and whether a warm
        replica is idle (a hint restarts its idle clock)."""
        stays = self.pool.outlook(model, cold_start)
        return stays.keep_alive, self.clock.wall() + stays.unload_in, stays.idle

    def _ram_tier(self, mw: ModelWarming, cold_start: float) -> tuple[float | None, float]:
        """For a model whose RAM tier the controller picks: how long a start from RAM takes (p95 of its
        measured RAM starts, else the disk estimate over the speed-up measured in docs/store.md) and what a
        second in RAM costs in loaded replica-seconds; (None, 0) otherwise."""
        price = self.pool.ram_price_s(mw.name) if mw.ram_auto else None
        if price is None:
            return None, 0.0
        from warmstart.policy.tiers import MEASURED_RAM_SPEEDUP  # the RAM tier's policies import numpy anyway

        measured = percentile(self.pool.start_seconds(mw.name, 20, tier="ram"), 95)
        ram_start = cold_start / MEASURED_RAM_SPEEDUP if measured is None else measured
        return min(round(ram_start, 3), cold_start), price  # to the millisecond, as starts are measured

    def _cold_start(self, model: str) -> float:
        """p95 of the model's recent successful starts from disk (a RAM start is shorter: the tier choice is
        shown those apart), or the configured estimate before there are any."""
        measured = percentile(self.pool.start_seconds(model, 20, tier="disk"), 95)
        return self.config.warming.cold_start_estimate if measured is None else measured

    # ---- hints ---------------------------------------------------------------------------------------

    def hint(self, model: str, client: str) -> HintDecision:
        """A warm hint from `client`: decided by the limiter; an accepted one warms the model at once."""
        now = self.clock.wall()
        mw = self.models.get(model)
        known = mw is not None
        loaded = known and self.pool.state_of(model) in (ReplicaState.STARTING, ReplicaState.WARM)
        warm_until = mw.applied[0] if mw is not None else -math.inf
        cold_start = self._cold_start(model) if known else 0.0
        keep_alive, loaded_until, idle = self._stays(model, cold_start) if known else (0.0, -math.inf, False)
        req = HintRequest(model=model, client=client, known=known, loaded=loaded, warm_until=warm_until,
                          cold_start_s=cold_start, keep_alive_s=keep_alive, loaded_until=loaded_until, idle=idle)
        decision, self.hint_state = hints.decide(req, self.hint_state, now, self.limits)
        self.metrics.hints.labels(model if known else "", decision.outcome).inc()
        if decision.charge > 0:
            self.metrics.hint_charged_seconds.labels(model).inc(decision.charge)
        if decision.accepted and mw is not None:
            mw.hints.append((now, self.limits.warm_for))
            self._decide(mw, now)
            if not loaded:  # the hint starts it (whatever span of the plan it then falls under)
                self.pool.ensure_warm(model, "hint")
            # applied afresh: a plan applied before an unload by hand would otherwise count as still in force
            mw.applied = (-math.inf, "")
            self._apply(mw)
        return decision


def new_runner(config: Config, pool: Pool, clock: Clock, metrics: Metrics) -> WarmingRunner:
    """The runner the server uses, with its request history in the data directory."""
    history = ArrivalHistory(config.server.data_dir / "history.sqlite3", config.warming.history_retention)
    return WarmingRunner(config, pool, clock, metrics, history)
