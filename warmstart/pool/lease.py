"""A request's lease on one slot of a warm replica, and the two things it may tell the pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warmstart.pool.replica import Replica


@dataclass(frozen=True)
class LeaseOwner:
    """What a lease may tell the pool that handed it out: its slot is free again, or its replica broke."""

    release: Callable[[Lease], None]
    broken: Callable[[Replica, str], None]


class Lease:
    """A request's claim on one slot of a warm replica; release it exactly once."""

    __slots__ = ("_owner", "_released", "_settle", "cold", "keep_alive", "replica", "waited_s")

    def __init__(self, owner: LeaseOwner, replica: Replica, cold: bool, waited_s: float,
                 keep_alive: float | None, settle: Callable[[], None] | None = None) -> None:
        self._owner, self.replica, self.cold = owner, replica, cold
        self.waited_s, self.keep_alive, self._released = waited_s, keep_alive, False
        self._settle = settle  # the pool's bookkeeping of the slot taken, when it was put off (Pool.try_acquire)

    @property
    def base_url(self) -> str:
        assert self.replica.process is not None
        return self.replica.process.base_url

    @property
    def start(self) -> str:
        return "cold" if self.cold else "warm"

    def settle(self) -> None:
        """Do the pool's bookkeeping of taking the slot now, if it was put off (`Pool.try_acquire(put_off=True)`);
        `release` does it first in any case."""
        settle, self._settle = self._settle, None
        if settle is not None:
            settle()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.settle()
            self._owner.release(self)

    def fail(self, reason: str) -> None:
        """The replica broke under this request (connection refused or cut): replace it."""
        self._owner.broken(self.replica, reason)
