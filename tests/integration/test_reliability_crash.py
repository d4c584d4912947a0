"""kill -9 under load: of an engine (the others and a new replica take over), and of warmstart itself
(a restart finds the audit chain and the request history whole and no engine left behind, even one
that could not die)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

import pytest

from tests.faults import SMOL, audit_verify, ledger_pids, metric_sum, workers_of
from tests.support import Server, chat, pid_alive, smollm2
from warmstart.loadtest.plan import Limits, plan
from warmstart.loadtest.runner import replay
from warmstart.loadtest.trace import TraceRequest

pytestmark = pytest.mark.integration
EXPECTED_UNDER_FAULT = {"stream_interrupted"}  # a stream cut after its first bytes: said so, in the stream


def history(data_dir) -> tuple[int, float, str]:
    """Rows and latest arrival in the request history (SQLite), and its integrity check."""
    path = data_dir / "history.sqlite3"
    if not path.exists():
        return 0, 0.0, "missing"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows, last = db.execute("SELECT count(*), coalesce(max(t), 0) FROM arrivals").fetchone()
        return rows, last, db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0, 0.0, "missing"
    finally:
        db.close()


def steady_plan(rate: float, seconds: float, prompt: int = 24, output: int = 24):
    trace = [TraceRequest(i / rate, prompt, output) for i in range(int(rate * seconds))]
    return plan(trace, model=SMOL, speedup=1, start=0, duration=seconds, max_requests=10_000,
                limits=Limits(context_length=2048))


@pytest.mark.slow
def test_kill_9_of_an_engine_under_load_loses_no_request(start_server):
    srv = start_server([smollm2(max_replicas=2, keep_alive=-1)])
    the_plan = steady_plan(rate=4, seconds=16)
    killed: list[int] = []

    def kill_a_busy_engine() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = [r for r in srv.model(SMOL)["replicas"] if r["state"] == "warm" and r["in_flight"] > 0]
            if busy and len([r for r in srv.model(SMOL)["replicas"] if r["state"] == "warm"]) == 2:
                os.kill(busy[0]["pid"], signal.SIGKILL)
                killed.append(busy[0]["pid"])
                state["killed_at"] = time.monotonic() - state["began"]
                return
            time.sleep(0.05)

    state: dict[str, float] = {}

    async def run():
        state["began"] = time.monotonic()  # the replay's own start is no earlier
        load = asyncio.create_task(replay(the_plan, url=srv.url, timeout=120, drain=120))
        await asyncio.sleep(5)  # let the load scale the model to two replicas
        await asyncio.to_thread(kill_a_busy_engine)
        return await load

    outcomes, _ = asyncio.run(run())
    assert killed, "no moment with two busy warm replicas to kill one of"
    kinds = {o.error for o in outcomes if o.error}
    assert kinds <= EXPECTED_UNDER_FAULT, [o for o in outcomes if o.error not in (None, *EXPECTED_UNDER_FAULT)]
    assert len(outcomes) == len(the_plan.requests) and all(o.status is not None for o in outcomes)
    # recovered: every request sent after the kill was served (by the other replica, or retried), however
    # long the kill took to find its moment on this machine
    after = [o for o in outcomes if o.sent is not None and o.sent > state["killed_at"]]
    assert after and all(o.ok for o in after), [o for o in after if not o.ok]
    model = srv.model(SMOL)
    assert not pid_alive(killed[0]) and killed[0] not in [r["pid"] for r in model["replicas"]]
    assert [s["outcome"] for s in model["starts"]].count("ok") >= 3  # two, then a replacement
    assert metric_sum(srv, "warmstart_requests_total", model=SMOL) == len(outcomes)
    assert metric_sum(srv, "warmstart_replica_failures_total", model=SMOL, stage="running") == 1
    retried = metric_sum(srv, "warmstart_request_retries_total", model=SMOL)
    interrupted = sum(1 for o in outcomes if o.error == "stream_interrupted")
    print(f"\n[reliability] engine kill -9 under load ({len(outcomes)} requests at 4/s, 2 replicas): "
          f"{sum(o.ok for o in outcomes)} ok, {interrupted} streams ended with stream_interrupted, "
          f"{retried:g} retried on another replica, 0 lost or hung")
    assert interrupted + retried >= 1  # the killed engine had a request in flight


@pytest.mark.slow
def test_kill_9_of_warmstart_under_load_then_restart(start_server, tmp_path, request):
    data_dir = tmp_path / "data"
    warming = {"warming": {"tick": "1s"}}  # request history is flushed to SQLite every second
    # one request per replica: the second replica starts at the second request in flight, and answers
    # finish one by one before the crash (with four slots sharing 2 CPUs the first four finish together)
    srv = start_server([smollm2(max_replicas=2, keep_alive=-1, max_concurrency=1)], data_dir=data_dir,
                       sections=warming)
    the_plan = steady_plan(rate=4, seconds=30)
    state = {}

    async def run():
        load = asyncio.create_task(replay(the_plan, url=srv.url, timeout=60, drain=30))

        def crash() -> None:
            srv.wait_for(lambda: len([r for r in srv.model(SMOL)["replicas"] if r["state"] == "warm"]) == 2,
                         timeout=60, interval=0.1)
            pids = [r["pid"] for r in srv.model(SMOL)["replicas"]]
            # one engine hangs (SIGSTOP): it cannot act on the SIGTERM its parent's death sends it,
            # so it outlives warmstart, as a wedged engine or its own child processes would
            os.kill(pids[0], signal.SIGSTOP)
            time.sleep(1)
            srv.wait_for(lambda: history(data_dir)[0] >= 8, timeout=30)
            state["history"] = history(data_dir)  # what was written before the crash
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(10)
            state["pids"], state["stuck"] = pids, pids[0]

        await asyncio.to_thread(crash)
        return await load

    outcomes, _ = asyncio.run(run())
    # every request got an answer or a clear failure at once: none hangs (the port is closed, not
    # silently accepting connections in an engine that inherited it)
    assert {o.error for o in outcomes} <= {None, "connection_lost", "connection_refused"}
    assert all(o.status is not None or o.error in ("connection_lost", "connection_refused") for o in outcomes), \
        [o for o in outcomes if o.status is None and o.error not in ("connection_lost", "connection_refused")]
    assert "unfinished" not in {o.error for o in outcomes}
    sent_before_crash = [o for o in outcomes if o.ok]
    assert sent_before_crash
    pids, stuck = state["pids"], state["stuck"]
    srv.wait_for(lambda: not pid_alive(pids[1]), timeout=15)  # the other engine died with warmstart
    assert pid_alive(stuck) and stuck in ledger_pids(data_dir)  # the wedged one is an orphan now

    # restarted on the same port, which the wedged engine must not be holding
    restarted = Server(config_path=srv.config_path, data_dir=data_dir, port=srv.port)
    request.addfinalizer(restarted.stop)
    restarted.start()
    assert not pid_alive(stuck)  # the restarted warmstart ended what its crashed predecessor left behind
    assert workers_of(data_dir) == [] or set(workers_of(data_dir)).isdisjoint(pids)
    # the request history survived whole: the database is sound and holds what was written before
    rows, last, check = history(data_dir)
    before_rows, before_last, _ = state["history"]
    assert check == "ok" and rows >= before_rows and last >= before_last
    verified = audit_verify(data_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("audit log OK: ")
    status, headers, _ = restarted.post("/v1/chat/completions", chat(max_tokens=4))
    assert (status, headers["x-warmstart-start"]) == (200, "cold")
    assert "ended engine process group" in restarted.log()
    restarted.wait_for(lambda: history(data_dir)[0] > rows, timeout=15)  # and it goes on recording
    print(f"\n[reliability] warmstart kill -9 under load: {len(sent_before_crash)} answered before the crash, "
          f"the rest failed fast ({sorted({o.error for o in outcomes if o.error})}); 1 wedged engine ended "
          f"by the restart; request history {before_rows} rows before the crash, {rows} after (integrity {check}); "
          f"audit verify: {verified.stdout.splitlines()[0][:40]}")
