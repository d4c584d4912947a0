"""The replica lifecycle: one enum, one transition table, one function that refuses illegal moves."""

from __future__ import annotations

from enum import Enum


class ReplicaState(str, Enum):
    COLD = "cold"
    STARTING = "starting"
    WARM = "warm"
    SLEEPING = "sleeping"
    STOPPING = "stopping"
    FAILED = "failed"


S = ReplicaState
TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.COLD: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.WARM, S.STOPPING, S.FAILED}),
    S.WARM: frozenset({S.SLEEPING, S.STOPPING, S.FAILED}),
    S.SLEEPING: frozenset({S.WARM, S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.COLD, S.FAILED}),
    S.FAILED: frozenset({S.COLD}),
}

LIVE = frozenset({S.STARTING, S.WARM, S.SLEEPING, S.STOPPING})


class IllegalTransition(Exception):
    def __init__(self, current: ReplicaState, target: ReplicaState) -> None:
        super().__init__(f"replica cannot go from {current.value} to {target.value}")
        self.current, self.target = current, target


def transition(current: ReplicaState, target: ReplicaState) -> ReplicaState:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target


def model_state(states: list[ReplicaState]) -> ReplicaState:
    """A model's state is its best replica's: warm beats starting beats sleeping ... beats cold."""
    for candidate in (S.WARM, S.STARTING, S.SLEEPING, S.STOPPING, S.FAILED):
        if candidate in states:
            return candidate
    return S.COLD
