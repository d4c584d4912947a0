"""Replay one model's arrivals on virtual time through the pool's rules and the warming controller.

The simulated pool mirrors warmstart.pool.pool for one model with one replica: a request that finds no
ready replica is cold (also while a start is under way) and starts one (`replicas_to_start`); an idle
replica unloads at `keepalive.unload_deadline` (its keep-alive, or the controller's warm-until);
the controller's plan is applied with `plan.evaluate`, at the same moments the live controller
applies it: when a request arrives, when a planned span begins, and when the policy asked to be asked
again. Requests take no time once a replica is ready (a cold one is served the moment it is ready), so
each model needs one replica.

The RAM tier follows warmstart.policy.tiering, as the model store does: a keep-alive unload holds the weights
in RAM until `on_last_stop` says (`ram_keep_alive` after the unload); a start before then reads RAM and
takes `ram_cold_start`, and the weights stay held while the replica is loaded (`on_ram_expiry`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from warmstart.policy import tiering
from warmstart.policy.controller import Controller
from warmstart.policy.keepalive import unload_deadline
from warmstart.policy.observation import Observation
from warmstart.policy.plan import IDLE, evaluate
from warmstart.pool.scaling import replicas_to_start

INF = math.inf


@dataclass
class ModelOutcome:
    model: str
    requests: int
    cold: int
    # how long each cold request waited, seconds
    waits: np.ndarray
    loaded_s: float
    starts: Counter = field(default_factory=Counter)
    # (time, trigger) of every start, when asked for
    start_log: list[tuple[float, str]] | None = None
    # arrival times of the cold requests, when starts are logged
    cold_times: np.ndarray | None = None
    # seconds the weights were held in RAM with no replica loaded
    ram_s: float = 0.0
    # starts that read the weights from RAM (the others read disk)
    ram_starts: int = 0
    # per cold request (aligned with `waits`): whether it waited for a start from RAM
    waited_on_ram: np.ndarray | None = None


def replay_model(model: str, arrivals: np.ndarray, *, start: float, end: float, cold_start: float,
                 keep_alive: float, controller: Controller | None = None, log_starts: bool = False,
                 ram_keep_alive: float = 0.0, ram_cold_start: float | None = None) -> ModelOutcome:
    """Replay `arrivals` (ascending wall seconds in [start, end)) for one model.

    `ram_keep_alive` > 0 turns the RAM tier on (`ram_cold_start`: a start from RAM; default `cold_start`).
    Policies are still shown the disk cold start as the model's cold start."""
    c = float(cold_start)
    c_ram = c if ram_cold_start is None else float(ram_cold_start)
    arr = arrivals
    n = len(arr)
    waits = np.empty(n, dtype=np.float64)
    starts: Counter = Counter()
    start_log: list[tuple[float, str]] | None = [] if log_starts else None

    # the one replica: loaded (starting or ready) or not
    loaded = ready = False
    start_at = ready_at = 0.0
    idle_since = 0.0
    expiry = INF
    warm_until = -INF
    loaded_s = 0.0
    cold = 0
    held = 0  # requests waiting for the replica that is starting
    # the RAM tier: held since `ram_since` (None: not held, or held under a loaded replica) until `ram_until`
    ram_since: float | None = None
    ram_until = -INF
    ram_s = 0.0
    ram_starts = 0
    from_ram = False  # the replica loaded last started from RAM
    waited_on_ram = np.zeros(n, dtype=bool)

    plan = IDLE
    state = controller.initial_state() if controller is not None else None
    review = start if controller is not None else INF
    span_at = INF
    applied: tuple[float, str] = (-INF, "")
    last: float | None = None
    recent = 0  # requests in the plan's recent window up to the last one
    recent_counts: dict[float, np.ndarray] = {}
    shown = 0  # arrivals [0, shown) have been shown to the policy

    def counts(window: float) -> np.ndarray:
        if window not in recent_counts:
            recent_counts[window] = np.arange(1, n + 1) - np.searchsorted(arr, arr - window, side="right")
        return recent_counts[window]

    def launch(t: float, trigger: str) -> None:
        nonlocal loaded, ready, start_at, ready_at, held, ram_since, ram_s, ram_starts, from_ram
        from_ram = False
        if ram_since is not None:
            ram_s += min(t, ram_until) - ram_since
            from_ram = t < ram_until  # the promotion; past the deadline the weights went back to disk
            ram_since = None
        ram_starts += from_ram
        loaded, ready, start_at, ready_at, held = True, False, t, t + (c_ram if from_ram else c), 0
        starts[trigger] += 1
        if start_log is not None:
            start_log.append((t, trigger))

    def set_warm_until(t: float, until: float, trigger: str) -> None:
        # pool.set_warm_until: keep one replica loaded until `until`, starting one if none is live
        nonlocal warm_until, idle_since, expiry
        warm_until = until
        if until > t:
            if not loaded:
                launch(t, trigger)
            elif ready:
                idle_since = t  # ensure_warm restarts an idle replica's idle clock
        if loaded and ready:
            expiry = max(t, unload_deadline(idle_since, keep_alive, warm_until))

    def apply(t: float) -> None:
        nonlocal applied, span_at
        target, span_at = evaluate(plan, last, t, recent)
        want = target if target is not None else (-INF, "")
        if want != applied:
            applied = want
            set_warm_until(t, want[0], want[1])

    def advance(t: float) -> None:
        """Everything that happens before an arrival at `t` (or up to the end when t is the end)."""
        nonlocal loaded, ready, idle_since, expiry, loaded_s, plan, state, review, shown, ram_since, ram_until
        while True:
            if loaded and not ready and ready_at <= t and ready_at <= review and ready_at <= span_at:
                ready = True
                idle_since = ready_at  # the held requests are served and released at once
                expiry = max(ready_at, unload_deadline(ready_at, keep_alive, warm_until))
                continue
            if loaded and ready and expiry < t and expiry <= review and expiry <= span_at:
                loaded_s += expiry - start_at
                loaded = ready = False
                demotion = tiering.on_last_stop(reason="keep-alive", ram_keep_alive=ram_keep_alive, now=expiry)
                if isinstance(demotion, tiering.HoldInRam):
                    ram_since, ram_until = expiry, demotion.until
                continue
            tn = review if review <= span_at else span_at
            if tn > t:
                return
            if tn == review:
                k = int(np.searchsorted(arr, tn, side="left")) if shown < n else n
                obs = Observation(model, arr[shown:k], c)
                shown = k
                assert controller is not None
                plan, state = controller.decide(obs, state, tn)
                review = plan.review_at
            apply(tn)

    for i in range(n):
        t = float(arr[i])
        advance(t)
        if loaded and ready:
            waits[i] = -1.0
        else:
            if replicas_to_start(waiting=held + 1, free_warm_slots=0, starting=int(loaded), live=int(loaded),
                                 capacity=1, max_replicas=1):
                launch(t, "request")
            held += 1
            waits[i] = ready_at - t
            waited_on_ram[i] = from_ram
            cold += 1
        last = t
        if controller is not None:
            recent = int(counts(plan.recent_window)[i])
            apply(t)
        if ready:
            idle_since = t
            expiry = max(t, unload_deadline(t, keep_alive, warm_until))
    advance(end)
    if loaded:
        loaded_s += max(0.0, end - start_at)
    elif ram_since is not None:
        ram_s += max(0.0, min(end, ram_until) - ram_since)
    is_cold = waits >= 0
    cold_times = arr[is_cold] if log_starts else None
    return ModelOutcome(model, n, cold, waits[is_cold], loaded_s, starts, start_log, cold_times,
                        ram_s, ram_starts, waited_on_ram[is_cold])
