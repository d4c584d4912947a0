"""The pool's lifecycle, holding and keep-alive on virtual time (no process can run on a virtual clock,
so replicas come from the SimulatedEngine; the same behaviours are tested with llama.cpp in integration)."""

from __future__ import annotations

import asyncio
import math

import pytest

from warmstart.clock import VirtualClock
from warmstart.config_loader import parse_config
from warmstart.engines.simulated import SimulatedEngine
from warmstart.errors import DeadlineExceeded, ModelStartFailed, QueueFull
from warmstart.pool.pool import Pool
from warmstart.pool.states import ReplicaState as S
from warmstart.telemetry.metrics import Metrics

START = (("spawn", 1.0), ("load", 4.0), ("warmup", 1.0))  # 6 s in all


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    return path


async def make_pool(model_file, *, server=None, fail_with=None, **model):
    clock = VirtualClock()
    raw = {"server": {"data_dir": str(model_file.parent), **(server or {})},
           # one request per replica unless a test says otherwise (llama.cpp's default is 4 slots)
           "models": [{"name": "m", "engine": "llamacpp", "path": str(model_file), "max_concurrency": 1, **model}]}
    config = parse_config(raw, base_dir=model_file.parent)
    engine = SimulatedEngine(clock, START, fail_with=fail_with)
    pool = Pool(config, {"llamacpp": engine}, clock, Metrics())
    await pool.capabilities("m")
    return pool, clock, engine


def spawn(coro):
    return asyncio.get_running_loop().create_task(coro)


async def test_the_time_before_the_engine_spawns_is_a_phase_of_its_own(model_file):
    """Finding, fetching and checking the model's files takes time before any process runs: it is the
    `verify` phase, so a start's phases add up to its total (they fell short by that time before)."""
    pool, clock, _engine = await make_pool(model_file)
    files = pool._files
    resolve = files.resolve

    async def slow_resolve(entry):
        await clock.sleep(0.75)  # a fetch, a manifest check
        return await resolve(entry)

    files.resolve = slow_resolve
    task = spawn(pool.acquire("m"))
    await clock.advance(0.5)
    assert pool.snapshot()[0]["replicas"][0]["phase"] == "verify"
    await clock.advance(7)
    task.result().release()
    last = pool.snapshot()[0]["last_start"]
    assert last["phases"] == {"verify": 0.75, "spawn": 1.0, "load": 4.0, "warmup": 1.0}
    assert sum(last["phases"].values()) == pytest.approx(last["total_s"])


async def test_a_cold_request_is_held_until_the_start_ends_then_served_cold(model_file):
    pool, clock, _engine = await make_pool(model_file)
    assert pool.state_of("m") is S.COLD
    task = spawn(pool.acquire("m"))
    await clock.advance(0.5)
    assert pool.state_of("m") is S.STARTING and not task.done()
    assert pool.snapshot()[0]["replicas"][0]["phase"] == "spawn"
    await clock.advance(3)
    assert pool.snapshot()[0]["replicas"][0]["phase"] == "load"
    await clock.advance(2.5)
    lease = task.result()
    assert lease.cold and lease.waited_s == pytest.approx(6.0)
    assert pool.state_of("m") is S.WARM
    lease.release()
    second = await pool.acquire("m")
    assert not second.cold and second.waited_s == 0
    second.release()
    last = pool.snapshot()[0]["last_start"]
    assert last["phases"] == {"verify": 0.0, "spawn": 1.0, "load": 4.0, "warmup": 1.0}
    assert last["trigger"] == "request"
    await pool.shutdown()


async def test_twenty_concurrent_requests_to_a_cold_model_share_one_start(model_file):
    pool, clock, engine = await make_pool(model_file)
    tasks = [spawn(pool.acquire("m")) for _ in range(20)]
    await clock.advance(6)
    assert len(engine.started) == 1
    served = 0
    while served < 20:  # one slot: each request gets the replica after the previous one releases it
        done = [t for t in tasks if t.done()]
        assert len(done) == served + 1
        lease = done[-1].result() if served == 0 else next(t for t in done if not t.result()._released).result()
        assert lease.cold
        lease.release()
        served += 1
        await clock.settle()
    assert len(engine.started) == 1
    await pool.shutdown()


async def test_keep_alive_unloads_after_the_idle_time_and_frees_the_process(model_file):
    pool, clock, engine = await make_pool(model_file, keep_alive="5m")
    lease = spawn(pool.acquire("m"))
    await clock.advance(6)
    await clock.advance(100)  # busy for 100 s: the idle clock has not started
    assert pool.state_of("m") is S.WARM
    lease.result().release()
    await clock.advance(299)
    assert pool.state_of("m") is S.WARM
    assert pool.snapshot()[0]["replicas"][0]["expires_in_s"] == pytest.approx(1.0)
    await clock.advance(1)
    assert pool.state_of("m") is S.COLD
    assert engine.started[0].returncode == 0 and engine.started[0].stopped_by_request
    await pool.shutdown()


async def test_idle_clock_starts_when_the_last_in_flight_request_ends(model_file):
    pool, clock, _engine = await make_pool(model_file, keep_alive=60, max_concurrency=2)
    a, b = spawn(pool.acquire("m")), spawn(pool.acquire("m"))
    await clock.advance(6)
    a.result().release()
    await clock.advance(120)  # b still in flight: no expiry
    assert pool.state_of("m") is S.WARM
    b.result().release()
    await clock.advance(59)
    assert pool.state_of("m") is S.WARM
    await clock.advance(1)
    assert pool.state_of("m") is S.COLD
    await pool.shutdown()


async def test_request_keep_alive_zero_unloads_right_after_and_negative_never(model_file):
    pool, clock, _engine = await make_pool(model_file, keep_alive="5m")
    task = spawn(pool.acquire("m", keep_alive=0))
    await clock.advance(6)
    task.result().release()
    await clock.settle()
    assert pool.state_of("m") is S.COLD

    task = spawn(pool.acquire("m", keep_alive=math.inf))
    await clock.advance(6)
    task.result().release()
    await clock.advance(7 * 86400)
    assert pool.state_of("m") is S.WARM
    assert pool.snapshot()[0]["replicas"][0]["expires_in_s"] is None
    # a later request without keep_alive brings back the model's default (Ollama's semantics)
    lease = await pool.acquire("m")
    lease.release()
    await clock.advance(300)
    assert pool.state_of("m") is S.COLD
    await pool.shutdown()


async def test_full_queue_refuses_at_once_and_deadline_refuses_with_retry_after(model_file):
    pool, clock, _ = await make_pool(model_file, server={"queue_size": 2, "queue_deadline": 3})
    held = [spawn(pool.acquire("m")) for _ in range(2)]
    await clock.settle()
    with pytest.raises(QueueFull) as full:
        await pool.acquire("m")
    assert full.value.retry_after >= 1
    await clock.advance(3)
    for task in held:
        with pytest.raises(DeadlineExceeded) as late:
            task.result()
        assert late.value.retry_after >= 1 and "still starting after 3 s" in late.value.message
    await clock.advance(3)  # the start goes on and the replica becomes warm for later requests
    assert pool.state_of("m") is S.WARM
    # warm but busy: the refusal says so rather than "did not become ready"
    busy = await pool.acquire("m")
    waiting = spawn(pool.acquire("m"))
    await clock.advance(3)
    with pytest.raises(DeadlineExceeded) as late:
        waiting.result()
    assert "is warm, but all 1 request slot(s) of its 1 replica(s) stayed busy for 3 s" in late.value.message
    busy.release()
    await pool.shutdown()


async def test_requests_queued_behind_a_busy_replica_start_more_up_to_max_replicas(model_file):
    pool, clock, engine = await make_pool(model_file, max_replicas=3)
    tasks = [spawn(pool.acquire("m")) for _ in range(10)]
    await clock.settle()
    assert len(engine.started) == 0 and len(pool.replicas("m")) == 3  # capped at 3
    await clock.advance(6)
    assert sum(t.done() for t in tasks) == 3
    assert all(t.result().cold for t in tasks if t.done())
    await pool.shutdown()


async def test_failed_start_answers_every_held_request_and_the_next_request_tries_again(model_file):
    pool, clock, engine = await make_pool(model_file, fail_with="weights are corrupt")
    tasks = [spawn(pool.acquire("m")) for _ in range(3)]
    await clock.advance(6)
    for task in tasks:
        with pytest.raises(ModelStartFailed, match="weights are corrupt"):
            task.result()
    assert pool.state_of("m") is S.FAILED
    assert pool.snapshot()[0]["last_start"]["outcome"] == "failed"
    engine.fail_with = None
    task = spawn(pool.acquire("m"))
    await clock.advance(6)
    assert task.result().cold and pool.state_of("m") is S.WARM
    await pool.shutdown()


async def test_a_replica_that_dies_becomes_failed_and_is_replaced_on_the_next_request(model_file):
    pool, clock, engine = await make_pool(model_file)
    task = spawn(pool.acquire("m"))
    await clock.advance(6)
    task.result().release()
    engine.started[0].kill()
    await clock.settle()
    assert pool.state_of("m") is S.FAILED
    assert "exited unexpectedly" in pool.snapshot()[0]["last_failure"]
    task = spawn(pool.acquire("m"))
    await clock.advance(6)
    assert task.result().cold and len(engine.started) == 2
    await pool.shutdown()


async def test_unload_stops_idle_replicas_now_and_busy_ones_when_their_request_ends(model_file):
    pool, clock, _engine = await make_pool(model_file, max_replicas=2)
    a, b = spawn(pool.acquire("m")), spawn(pool.acquire("m"))
    await clock.advance(6)
    a.result().release()
    assert await pool.unload("m") == 1
    assert [r.state for r in pool.replicas("m")] == [S.WARM]
    b.result().release()
    await clock.settle()
    assert pool.state_of("m") is S.COLD
    await pool.shutdown()


async def test_warm_until_keeps_the_last_replica_past_its_keep_alive(model_file):
    pool, clock, engine = await make_pool(model_file, keep_alive=10)
    pool.set_warm_until("m", 100, "schedule")
    await clock.advance(6)
    assert pool.state_of("m") is S.WARM and engine.started
    assert pool.replicas("m")[0].trigger == "schedule"
    await clock.advance(90)
    assert pool.state_of("m") is S.WARM
    await clock.advance(5)
    assert pool.state_of("m") is S.COLD
    await pool.shutdown()


class SlowReadClock(VirtualClock):
    """A clock that moves 2 ms at every read, as the system clock does when another thread takes the GIL
    between two reads (the CI failure of issue 12: a warm answer said it waited 1.9 ms)."""

    def now(self) -> float:
        self._now += 0.002
        return self._now


async def test_a_request_served_by_a_free_warm_replica_waited_nothing_whatever_the_clock_does(model_file):
    pool, clock, _engine = await make_pool(model_file)
    first = spawn(pool.acquire("m"))
    await clock.advance(6)
    first.result().release()
    pool.clock = SlowReadClock(clock.now())
    fast = pool.try_acquire("m")  # the gateway's fast path
    assert fast is not None and not fast.cold and fast.waited_s == 0.0
    fast.release()
    held = await pool.acquire("m")  # the same, through the holding path: a free slot at once
    assert not held.cold and held.waited_s == 0.0
    held.release()
    await pool.shutdown()


async def test_a_lease_taken_from_a_callback_leaves_the_pools_bookkeeping_until_it_is_settled(model_file):
    """`try_acquire(put_off=True)` (a request sent to its engine from its connection's callback) takes the slot at
    once and nothing more: the replica's unload timer, its idle clock and the arrival told wait for
    `Lease.settle`, which the release does first if nobody did. Each is done once; a taken slot is never handed
    out twice meanwhile, and the replica still unloads on time after the last release."""
    pool, clock, _engine = await make_pool(model_file, keep_alive=60, max_concurrency=2)
    first = spawn(pool.acquire("m"))
    await clock.advance(6)
    first.result().release()
    arrivals: list[str] = []
    pool.subscribe_arrivals(lambda model, _wall: arrivals.append(model))

    lease = pool.try_acquire("m", put_off=True)
    other = pool.try_acquire("m", put_off=True)
    assert lease is not None and other is not None
    replica = lease.replica  # (the pool's own record: what it has not done yet shows there)
    armed = replica.expires_at
    assert armed is not None and replica.idle_since is not None  # still as when idle: its unload armed
    assert replica.in_flight == 2 and other.replica is replica
    assert pool.try_acquire("m", put_off=True) is None  # both slots taken before any bookkeeping
    await asyncio.sleep(0)
    assert arrivals == [] and replica.expires_at == armed
    shown = pool.view("m")["replicas"][0]  # what `ps` and /v1/models show: busy, not idle or about to unload
    assert shown["in_flight"] == 2 and shown["idle_s"] is None and shown["expires_in_s"] is None

    lease.settle()
    assert arrivals == ["m"] and replica.expires_at is None and replica.idle_since is None
    lease.settle()
    lease.release()
    assert arrivals == ["m"] and replica.in_flight == 1 and replica.expires_at is None
    other.release()  # never settled: its release does it first
    assert arrivals == ["m", "m"] and replica.in_flight == 0 and replica.expires_at is not None
    await clock.advance(59)
    assert pool.state_of("m") is S.WARM
    await clock.advance(2)
    assert pool.state_of("m") is S.COLD
    await pool.shutdown()
