"""The RAM tier's pure parts: sizes, how much memory may be held, the policy of where weights go."""

from __future__ import annotations

import math

import pytest

from warmstart.policy.tiering import HoldInRam, ToDisk, on_last_stop, on_ram_expiry
from warmstart.store.tiers import CgroupMemory, GiB, RamTier, TierRefused, headroom, parse_meminfo, parse_size


def test_sizes_parse_like_people_write_them():
    assert parse_size("8GiB") == 8 * GiB
    assert parse_size("512 MiB") == 512 << 20
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size(4096) == 4096
    for bad in ("lots", "-1GiB", True, -5, "8 parsecs"):
        with pytest.raises(ValueError):
            parse_size(bad)


MEMINFO = """MemTotal:       24684084 kB
MemFree:         1000000 kB
MemAvailable:   10485760 kB
Cached:          9000000 kB
"""


def test_headroom_is_available_memory_less_the_reserve_or_the_cgroup_when_tighter():
    info = parse_meminfo(MEMINFO)
    assert info["MemAvailable"] == 10 * GiB
    room, why = headroom(info, None, reserve=2 * GiB)
    assert room == 8 * GiB and "MemAvailable 10.00 GiB less the 2.00 GiB reserve" in why
    cgroup = CgroupMemory(limit=6 * GiB, usage=5 * GiB, reclaimable=2 * GiB)  # 3 GiB free of it
    room, why = headroom(info, cgroup, reserve=1 * GiB)
    assert room == 2 * GiB and "cgroup memory limit 6.00 GiB" in why
    assert headroom(info, None, reserve=20 * GiB)[0] == 0


def test_a_hold_beyond_the_budget_or_memory_is_refused_before_taking_any(tmp_path):
    tier = RamTier(method="mlock", max_bytes=1 << 20)
    with pytest.raises(TierRefused, match=r"store.ram_max is 0.00 GiB .* raise store.ram_max"):
        tier.check_fits("big", 2 << 20, "mlock")
    greedy = RamTier(method="mlock", reserve_bytes=1 << 50)
    with pytest.raises(TierRefused, match=r"only 0\.00 GiB can be held .*reserve.*lower store\.ram_reserve"):
        greedy.check_fits("big", 1 << 20, "mlock")
    not_tmpfs = RamTier(method="tmpfs", tmpfs_dir=tmp_path / "copies")
    with pytest.raises(TierRefused, match="is not on a tmpfs"):
        not_tmpfs.check_fits("m", 10, "tmpfs")
    assert tier.held_bytes == 0


def test_keep_alive_demotes_to_ram_other_stops_free_the_memory():
    assert on_last_stop(reason="keep-alive", ram_keep_alive=600, now=100) == HoldInRam(700)
    assert on_last_stop(reason="keep-alive", ram_keep_alive=math.inf, now=100) == HoldInRam(math.inf)
    assert isinstance(on_last_stop(reason="keep-alive", ram_keep_alive=0, now=100), ToDisk)
    assert isinstance(on_last_stop(reason="manual", ram_keep_alive=600, now=100), ToDisk)
    assert isinstance(on_last_stop(reason="shutdown", ram_keep_alive=600, now=100), ToDisk)


def test_a_hold_asked_for_by_hand_runs_to_its_end_but_an_unload_still_frees_the_memory():
    # keep-alive stops neither cut it short (no RAM keep-alive of its own) nor shorten it (a shorter one)
    assert on_last_stop(reason="keep-alive", ram_keep_alive=0, now=100, held_until=500) == HoldInRam(500)
    assert on_last_stop(reason="keep-alive", ram_keep_alive=60, now=100, held_until=500) == HoldInRam(500)
    assert on_last_stop(reason="keep-alive", ram_keep_alive=600, now=100, held_until=500) == HoldInRam(700)
    assert isinstance(on_last_stop(reason="keep-alive", ram_keep_alive=0, now=600, held_until=500), ToDisk)
    assert isinstance(on_last_stop(reason="manual", ram_keep_alive=0, now=100, held_until=500), ToDisk)
    assert on_ram_expiry(loaded=False, ram_keep_alive=0, now=300, held_until=500) == HoldInRam(500)
    assert isinstance(on_ram_expiry(loaded=False, ram_keep_alive=0, now=500, held_until=500), ToDisk)


def test_ram_keep_alive_runs_out_unless_a_replica_is_loaded_from_it():
    assert isinstance(on_ram_expiry(loaded=False, ram_keep_alive=600, now=700), ToDisk)
    assert on_ram_expiry(loaded=True, ram_keep_alive=600, now=700) == HoldInRam(1300)
