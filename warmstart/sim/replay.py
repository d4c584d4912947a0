"""Replay one model's arrivals on virtual time through the pool's rules and the warming controller.

The replay carries out the decisions of warmstart.pool.rules, as `Pool` does, on one simulated
`Replica` that goes through the pool's lifecycle: a request is served by a free warm replica or held
(`rules.admit`), and held requests start one (`rules.to_start`); an idle replica unloads at
`rules.unload_at` (its keep-alive, or the controller's warm-until); the controller's warm-until is
carried out with `rules.warm_until`, at the same moments the live warming runner applies its plan
(`plan.evaluate`): when a request arrives, when a planned span begins, and when the policy asked to be
asked again. Requests take no time once a replica is ready (a cold one is served the moment it is ready),
so each model needs one replica. tests/scenario/test_pool_replay.py replays a real trace through this
and through the live `Pool` and `WarmingRunner` and gets the same requests warm and the same seconds loaded.

The RAM tier follows warmstart.policy.tiering, as the model store does: a keep-alive unload holds the weights
in RAM until `rules.tier_on_stop` says (`ram_keep_alive` after the unload); a start before then reads RAM and
takes `ram_cold_start`, and the weights stay held while the replica is loaded (`on_ram_expiry`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warmstart.policy import tiering
from warmstart.policy.controller import Controller
from warmstart.policy.observation import Observation
from warmstart.policy.plan import IDLE, evaluate
from warmstart.policy.plan import ram_until as planned_ram_until
from warmstart.pool import rules
from warmstart.pool.replica import Replica
from warmstart.pool.states import ReplicaState

INF = math.inf
S = ReplicaState
WARM, STARTING = S.WARM, S.STARTING  # read once per request: plain globals, not enum lookups


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
                 ram_keep_alive: float = 0.0, ram_cold_start: float | None = None,
                 learned: tuple[Any, np.ndarray, float] | None = None,
                 ram_price_s: float | None = None, idle_since: float | None = None) -> ModelOutcome:
    """Replay `arrivals` (ascending wall seconds in [start, end)) for one model.

    `keep_alive` is the pool's own keep-alive for the model (with a controller that picks it: its floor).
    `ram_keep_alive` > 0 turns the RAM tier on (`ram_cold_start`: a start from RAM; default `cold_start`).
    Policies are still shown the disk cold start as the model's cold start.
    `learned`: what the controller learned before `start` (`policy.controller.learn`: its state, the arrivals
    it has not been shown yet, and the last arrival), as the server starts from its request history.
    `ram_price_s`: the controller picks the RAM tier itself (keep_alive "auto"): it is shown the RAM start and
    this price of a RAM second, and its plan's RAM horizon (`plan.ram_until`) replaces `ram_keep_alive`.
    `idle_since`: the model's last request before `start` (from the history): a server that ran through it
    still has a replica loaded at `start`, idle since then, unless its keep-alive (or plan) let it go."""
    c = float(cold_start)
    c_ram = c if ram_cold_start is None else float(ram_cold_start)
    arr = arrivals
    n = len(arr)
    waits = np.empty(n, dtype=np.float64)
    starts: Counter = Counter()
    start_log: list[tuple[float, str]] | None = [] if log_starts else None

    # the model's replicas, as the pool keeps them: at most one here (requests take no time)
    replicas: list[Replica] = []
    ready_at = 0.0  # when the replica that is starting will be warm
    expiry = INF  # when the warm replica unloads (`rules.unload_at`; the pool's expiry timer)
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
    unshown = np.empty(0)
    last: float | None = None
    if learned is not None and controller is not None:
        state, unshown, last = learned
    review = start if controller is not None else INF
    span_at = INF
    applied: tuple[float, str] = (-INF, "")
    recent = 0  # requests in the plan's recent window up to the last one
    recent_counts: dict[float, np.ndarray] = {}
    shown = 0  # arrivals [0, shown) have been shown to the policy

    def counts(window: float) -> np.ndarray:
        if window not in recent_counts:
            recent_counts[window] = np.arange(1, n + 1) - np.searchsorted(arr, arr - window, side="right")
        return recent_counts[window]

    def launch(t: float, trigger: str, keep: float | None) -> None:
        """Carry out a start (Pool._start_replica): the replica is warm one cold start from now."""
        nonlocal ready_at, held, ram_since, ram_s, ram_starts, from_ram
        from_ram = False
        if ram_since is not None:
            ram_s += min(t, ram_until) - ram_since
            from_ram = t < ram_until  # the promotion; past the deadline the weights went back to disk
            ram_since = None
        ram_starts += from_ram
        replica = Replica(id=f"{model}#{len(replicas) + sum(starts.values()) + 1}", model=model, trigger=trigger,
                          capacity=1, keep_alive=keep, created_at=t, created_wall=t)
        replica.move(S.STARTING)
        replicas.append(replica)
        ready_at, held = t + (c_ram if from_ram else c), 0
        starts[trigger] += 1
        if start_log is not None:
            start_log.append((t, trigger))

    def arm(t: float) -> None:
        """The replica's expiry timer (Pool._arm_expiry)."""
        nonlocal expiry
        at = rules.unload_at(replicas[0], replicas, t, configured=keep_alive, model=keep_alive,
                             warm_until=warm_until) if replicas else None
        expiry = INF if at is None else at

    def set_warm_until(t: float, until: float, trigger: str) -> None:
        """Carry out Pool.set_warm_until: what `rules.warm_until` decides."""
        nonlocal warm_until
        warm_until = until
        for decision in rules.warm_until(replicas, t, until, trigger, configured=keep_alive):
            if isinstance(decision, rules.Start):
                launch(t, decision.trigger, decision.keep_alive)
                continue
            if isinstance(decision, rules.Rewarm) and not decision.replica.rewarm(decision.keep_alive, t):
                continue
            arm(t)

    def apply(t: float) -> None:
        nonlocal applied, span_at
        target, span_at = evaluate(plan, last, t, recent)
        want = target if target is not None else (-INF, "")
        if want != applied:
            applied = want
            set_warm_until(t, want[0], want[1] or "keep-alive")

    def advance(t: float) -> None:
        """Everything that happens before an arrival at `t` (or up to the end when t is the end)."""
        nonlocal expiry, held, loaded_s, ram_since, ram_until
        while True:
            replica = replicas[0] if replicas else None
            if (replica is not None and replica.state is STARTING and ready_at <= t and ready_at <= review
                    and ready_at <= span_at):
                replica.move(WARM)
                held = 0  # the held requests are served and released at once
                replica.idle_since = ready_at
                arm(ready_at)
                continue
            if replica is not None and replica.state is WARM and expiry < t and expiry <= review \
                    and expiry <= span_at:
                loaded_s += expiry - replica.created_at
                replica.move(S.STOPPING)
                demotion = rules.tier_on_stop(replica, replicas, reason="keep-alive", ram_keep_alive=ram_keep_alive,
                                              now=expiry, planned=planned_ram_until(plan, last, recent)
                                              if ram_price_s is not None else None)
                if isinstance(demotion, tiering.HoldInRam):
                    ram_since, ram_until = expiry, demotion.until
                replica.move(S.COLD)
                replicas.clear()
                expiry = INF
                continue
            tn = review if review <= span_at else span_at
            if tn > t:
                return
            if tn == review:
                consult(tn)
            apply(tn)

    def consult(tn: float) -> None:
        """Show the controller the arrivals up to `tn` and take its new plan."""
        nonlocal plan, state, review, shown, unshown
        k = int(np.searchsorted(arr, tn, side="left")) if shown < n else n
        seen = arr[shown:k] if not len(unshown) else np.concatenate([unshown, arr[shown:k]])
        obs = Observation(model, seen, c) if ram_price_s is None else \
            Observation(model, seen, c, ram_cold_start_s=c_ram, ram_price_s=ram_price_s)
        shown, unshown = k, unshown[:0]
        assert controller is not None and state is not None
        plan, state = controller.decide(obs, state, tn)
        review = plan.review_at

    if idle_since is not None:  # the replica the history left loaded; unloaded at once if nothing keeps it
        replica = Replica(id=f"{model}#0", model=model, trigger="request", capacity=1, keep_alive=None,
                          created_at=start, created_wall=start)
        replica.move(S.STARTING)
        replica.move(WARM)
        replica.idle_since = idle_since
        replicas.append(replica)
        if learned is not None and controller is not None:
            # the plan the running server had: its keep-alive and RAM horizon judge the replica, not the floor
            consult(start)
            apply(start)
        arm(start)
    admit, unload_at, serve = rules.admit, rules.unload_at, rules.Serve  # once per request: no lookups
    for i in range(n):
        t = float(arr[i])
        advance(t)
        decision = admit(replicas, held, INF)
        if isinstance(decision, serve):
            # leased and released at once: the idle clock starts again now, and the expiry timer with it
            decision.replica.idle_since = t
            at = unload_at(decision.replica, replicas, t, configured=keep_alive, model=keep_alive,
                           warm_until=warm_until)
            expiry = INF if at is None else at
            waits[i] = -1.0
        else:
            if rules.to_start(replicas, held + 1, capacity=1, max_replicas=1):
                launch(t, "request", None)
            held += 1
            waits[i] = ready_at - t
            waited_on_ram[i] = from_ram
            cold += 1
        last = t
        if controller is not None:
            recent = int(counts(plan.recent_window)[i])
            apply(t)
    advance(end)
    if replicas:
        loaded_s += max(0.0, end - replicas[0].created_at)
    elif ram_since is not None:
        ram_s += max(0.0, min(end, ram_until) - ram_since)
    is_cold = waits >= 0
    cold_times = arr[is_cold] if log_starts else None
    return ModelOutcome(model, n, cold, waits[is_cold], loaded_s, starts, start_log, cold_times,
                        ram_s, ram_starts, waited_on_ram[is_cold])
