"""The pool's decisions as pure rules: handed the time and the replicas, they return decisions as data.

`Pool` carries them out on engine processes and the simulator's replay (warmstart.sim.replay) on its
simulated replica, so what the simulator predicts is what the server does; the scenario test
tests/scenario/test_pool_replay.py replays one real trace through both and compares request by request.

A rule reads replicas (anything shaped like `warmstart.pool.replica.Replica`) and never changes them:
no I/O, no clock reads, no logging.

- `admit`: a request is served by a free warm replica (`Serve`), held (`Hold`), or refused (`Refuse`).
- `free_replica`: which warm replica serves next (the least busy one with a free slot).
- `to_start`: how many replicas to start for the requests that wait (scale up).
- `unload_at`: when an idle replica unloads (keep-alive expiry, or the warming controller's warm-until).
- `ensure_warm` / `warm_until`: what a command, a hint or the warming controller asks for, as `Start`,
  `Rewarm` and `Rearm` decisions.
- `on_unload`: a manual unload (`Stop` now, or `StopWhenIdle`).
- `outlook`: how long the model stays loaded as things stand (`Outlook`; what a warm hint is charged).
- `tier_on_stop`: where the weights go when a replica stops (RAM or disk; None while another stays).
Placement across nodes (many machines) is a rule of the same kind, in warmstart.pool.placement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from warmstart.policy import keepalive, tiering
from warmstart.pool.scaling import replicas_to_start
from warmstart.pool.states import LIVE, ReplicaState

S = ReplicaState
WARM, STARTING = S.WARM, S.STARTING  # read once per request by the replay: plain globals, not enum lookups
# a replica that may be started, serving or sleeping: one that keeps a model from being cold
RUNNING = frozenset({S.STARTING, S.WARM, S.SLEEPING})


class ReplicaFacts(Protocol):
    """What the rules read of a replica."""

    state: ReplicaState
    capacity: int
    in_flight: int
    idle_since: float | None
    keep_alive: float | None
    keep_alive_by_request: bool
    unload_when_idle: bool

    @property
    def free_slots(self) -> int: ...


R = TypeVar("R", bound=ReplicaFacts)


# ---- decisions ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Serve(Generic[R]):
    """Lease a slot of this replica now (the request waits nothing)."""

    replica: R


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold the request until a replica has a free slot; `cold`: no replica is warm, it waits for a start."""

    cold: bool


@dataclass(frozen=True, slots=True)
class Refuse:
    """The model's queue is full: refuse at once."""

    waiting: int


@dataclass(frozen=True, slots=True)
class Start:
    """Start a replica for `trigger`; `keep_alive` (None: the model's own) once it is idle."""

    trigger: str
    keep_alive: float | None = None


@dataclass(frozen=True, slots=True)
class Rewarm(Generic[R]):
    """Keep this live replica: cancel a pending unload-when-idle, set its keep-alive (None: leave it) and,
    when it is warm and idle, restart its idle clock now (then re-arm its expiry)."""

    replica: R
    keep_alive: float | None


@dataclass(frozen=True, slots=True)
class Rearm(Generic[R]):
    """The model's warm-until moved: compute this idle replica's unload time again (`unload_at`)."""

    replica: R


@dataclass(frozen=True, slots=True)
class Stop(Generic[R]):
    replica: R


@dataclass(frozen=True, slots=True)
class StopWhenIdle(Generic[R]):
    replica: R


# ---- requests ----------------------------------------------------------------------------------------

def free_replica(replicas: Sequence[R]) -> R | None:
    """The warm replica with a free slot and the fewest requests in flight (the first on a tie); None if
    every slot is taken. A replica to be unloaded when idle takes no more requests."""
    best = None
    for replica in replicas:  # free_slots > 0, spelled out: the replay calls this once per request
        if replica.state is WARM and replica.in_flight < replica.capacity and not replica.unload_when_idle and (
                best is None or replica.in_flight < best.in_flight):
            best = replica
    return best


def admit(replicas: Sequence[R], waiting: int, queue_size: float) -> Serve[R] | Hold | Refuse:
    """A request arrives while `waiting` others are held: served at once if nobody waits and a slot is free
    (first come, first served), else held, unless `queue_size` are held already."""
    if not waiting:
        replica = free_replica(replicas)
        if replica is not None:
            return Serve(replica)
    if waiting >= queue_size:
        return Refuse(waiting)
    return Hold(cold=not any(r.state is WARM for r in replicas))


def to_start(replicas: Sequence[ReplicaFacts], waiting: int, *, capacity: int, max_replicas: int) -> int:
    """How many replicas to start for `waiting` held requests (scale up): those not covered by free warm
    slots or by replicas already starting, within `max_replicas` live ones."""
    if waiting <= 0:
        return 0
    free = starting = live = 0
    for r in replicas:
        free += r.free_slots
        starting += r.state is STARTING
        live += r.state in LIVE
    return replicas_to_start(waiting=waiting, free_warm_slots=free, starting=starting, live=live,
                             capacity=capacity, max_replicas=max_replicas)


# ---- keep-alive --------------------------------------------------------------------------------------

def unload_at(replica: ReplicaFacts, replicas: Sequence[ReplicaFacts], now: float, *, configured: float,
              model: float, warm_until: float) -> float | None:
    """When `replica` unloads: None while it is not warm and idle, math.inf for never, and never before
    `now` (a deadline already past unloads at once). Its keep-alive after its idle clock started, or the
    warming controller's `warm_until` when it is the model's only warm replica.

    The keep-alive is the request's if it set one (and then the controller's `warm_until` does not extend
    it, as in Ollama a request's keep_alive 0 unloads at once), else the model's: `model` is the keep-alive the warming
    controller leaves the pool (keep_alive "auto": its floor) and governs the model's last replica; extra
    replicas scale down after the `configured` keep-alive, as they would without the controller."""
    if replica.state is not WARM or replica.in_flight > 0 or replica.idle_since is None:
        return None
    others = False
    for r in replicas:  # a loop, not any(): the replay calls this once per request
        if r is not replica and r.state is WARM:
            others = True
            break
    ka = replica.keep_alive if replica.keep_alive is not None else configured if others else model
    # a request's own keep-alive is what its client asked for: no warm-until of the controller's overrides it
    deadline = keepalive.unload_deadline(replica.idle_since, ka, warm_until if not replica.keep_alive_by_request
                                         else -math.inf, sole_replica=not others,
                                         unload_when_idle=replica.unload_when_idle)
    return max(deadline, now)


# ---- commands: warm, warm until, unload ----------------------------------------------------------------

def ensure_warm(replicas: Sequence[R], trigger: str, keep_alive: float | None = None, *, configured: float
                ) -> list[Start | Rewarm[R]]:
    """Keep the model loaded: start a replica unless one is running, else keep every running one (its idle
    clock restarts). `keep_alive`: the keep-alive to give them (None: leave theirs; when a person asked,
    trigger "manual", the `configured` one, even where the warming controller picks it otherwise)."""
    if keep_alive is None and trigger == "manual":
        keep_alive = configured
    running = [r for r in replicas if r.state in RUNNING]
    if not running:
        return [Start(trigger, keep_alive)]
    return [Rewarm(r, keep_alive) for r in running]


def warm_until(replicas: Sequence[R], now: float, until: float, trigger: str, *, configured: float
               ) -> list[Start | Rewarm[R] | Rearm[R]]:
    """The warming controller wants the model loaded until `until`: warm it if that is still ahead (a
    `Rewarm` re-arms an idle replica's unload time), else re-arm every idle warm replica's unload time
    (`until` may have moved either way)."""
    if until > now:
        return list(ensure_warm(replicas, trigger, configured=configured))
    return [Rearm(r) for r in replicas if r.state is WARM and r.in_flight == 0 and r.idle_since is not None]


def on_unload(replicas: Sequence[R]) -> list[Stop[R] | StopWhenIdle[R]]:
    """A manual unload: idle and starting replicas stop now, busy ones when their last request ends."""
    decisions: list[Stop[R] | StopWhenIdle[R]] = []
    for r in replicas:
        if r.state is STARTING or (r.state is WARM and r.in_flight == 0):
            decisions.append(Stop(r))
        elif r.state is WARM:
            decisions.append(StopWhenIdle(r))
    return decisions


# ---- stops -------------------------------------------------------------------------------------------

def last_running(replica: ReplicaFacts, replicas: Sequence[ReplicaFacts]) -> bool:
    """Whether `replica` is the model's last one starting, serving or sleeping (its stop frees the model)."""
    return not any(r is not replica and r.state in RUNNING for r in replicas)


def tier_on_stop(replica: ReplicaFacts, replicas: Sequence[ReplicaFacts], *, reason: str, ram_keep_alive: float,
                 now: float, held_until: float = -math.inf, planned: float | None = None
                 ) -> tiering.HoldInRam | tiering.ToDisk | None:
    """Where the model's weights go when `replica` stops: None while another replica keeps the model
    loaded; else `tiering.on_last_stop` (a keep-alive unload holds them in RAM when the model has a RAM
    keep-alive). `planned`: until when the warming controller wants them in RAM (`plan.ram_until`, for
    keep_alive "auto"; -inf: not at all), which replaces the model's RAM keep-alive."""
    if not last_running(replica, replicas):
        return None
    if planned is not None:
        ram_keep_alive = tiering.planned_keep_alive(planned, now)
    return tiering.on_last_stop(reason=reason, ram_keep_alive=ram_keep_alive, now=now, held_until=held_until)


# ---- views -------------------------------------------------------------------------------------------

class Expiring(ReplicaFacts, Protocol):
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Outlook:
    """How long a model stays loaded as things stand: the keep-alive its last replica gets once idle,
    in how many seconds it would unload (math.inf while a replica is busy or never unloads, -math.inf
    when none is loaded), and whether a warm replica is idle (a warm hint restarts its idle clock)."""

    keep_alive: float
    unload_in: float
    idle: bool


def outlook(replicas: Sequence[Expiring], *, model: float, cold_start: float, now: float) -> Outlook:
    """A starting replica stays `cold_start` + the `model` keep-alive; a warm idle one until its expiry
    (`expires_at`, None: never)."""
    unload_in, idle = -math.inf, False
    for r in replicas:
        if r.state is WARM:
            if r.in_flight > 0 or r.expires_at is None:
                unload_in = math.inf
            else:
                idle = True
                unload_in = max(unload_in, r.expires_at - now)
        elif r.state is STARTING:
            unload_in = max(unload_in, cold_start + model)
    return Outlook(model, unload_in, idle)
