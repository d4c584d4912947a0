"""Where a model's weights go when its last replica stops: held in RAM for a while, or back to disk.

A pure policy: it is handed the stop's reason, the model's RAM keep-alive and the time.
Keep-alive expiry demotes to RAM (when the model has a RAM keep-alive); a manual unload or a
shutdown frees the memory. RAM residency then ends `ram_keep_alive` after the demotion, unless a
replica is loaded again by then (a start from RAM is the promotion), in which case it is extended.
A hold asked for by hand (`warmstart hold`) runs to its end (`held_until`) whatever the model's own
RAM keep-alive says; only an unload, a release or shutdown ends it sooner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from warmstart.policy import keepalive


@dataclass(frozen=True)
class HoldInRam:
    until: float  # math.inf: for ever


@dataclass(frozen=True)
class ToDisk:
    reason: str


def on_last_stop(*, reason: str, ram_keep_alive: float, now: float,
                 held_until: float = -math.inf) -> HoldInRam | ToDisk:
    if reason != "keep-alive":
        return ToDisk(f"{reason} unload frees the model's memory")
    if ram_keep_alive == 0:
        if held_until > now:
            return HoldInRam(held_until)
        return ToDisk("the model has no RAM keep-alive (ram_keep_alive = 0)")
    return HoldInRam(max(keepalive.expiry(now, ram_keep_alive), held_until))


def planned_keep_alive(until: float, now: float) -> float:
    """A RAM hold planned until `until` (wall time) as a RAM keep-alive from `now`: 0 (none) once it is past,
    math.inf for ever."""
    return max(0.0, until - now)


def on_ram_expiry(*, loaded: bool, ram_keep_alive: float, now: float,
                  held_until: float = -math.inf) -> HoldInRam | ToDisk:
    """The RAM keep-alive ran out: release, unless a replica is loaded from it (then hold on) or a hold
    asked for by hand has not ended."""
    if held_until > now:
        return HoldInRam(held_until)
    if loaded:
        return HoldInRam(keepalive.expiry(now, ram_keep_alive) if ram_keep_alive > 0 else math.inf)
    return ToDisk("RAM keep-alive expired")
