"""Where a model's weights go when its last replica stops: held in RAM for a while, or back to disk.

A pure policy: it is handed the stop's reason, the model's RAM keep-alive and the time.
Keep-alive expiry demotes to RAM (when the model has a RAM keep-alive); a manual unload or a
shutdown frees the memory. RAM residency then ends `ram_keep_alive` after the demotion, unless a
replica is loaded again by then (a start from RAM is the promotion), in which case it is extended.
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


def on_last_stop(*, reason: str, ram_keep_alive: float, now: float) -> HoldInRam | ToDisk:
    if reason != "keep-alive":
        return ToDisk(f"{reason} unload frees the model's memory")
    if ram_keep_alive == 0:
        return ToDisk("the model has no RAM keep-alive (ram_keep_alive = 0)")
    return HoldInRam(keepalive.expiry(now, ram_keep_alive))


def on_ram_expiry(*, loaded: bool, ram_keep_alive: float, now: float) -> HoldInRam | ToDisk:
    """The RAM keep-alive ran out: release, unless a replica is loaded from it (then hold on)."""
    if loaded:
        return HoldInRam(keepalive.expiry(now, ram_keep_alive) if ram_keep_alive > 0 else math.inf)
    return ToDisk("RAM keep-alive expired")
