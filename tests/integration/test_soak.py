"""A bounded soak: minutes of a real trace's traffic with replicas starting and unloading in between;
warmstart's memory and open files stay flat (a window after warm-up against the end)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import time

import pytest

from tests.faults import AZURE_CONV, SMOL, metric_sum, open_fds, rss_kib
from tests.support import smollm2
from warmstart.loadtest.plan import Limits, plan
from warmstart.loadtest.runner import replay
from warmstart.loadtest.trace import read_trace

pytestmark = pytest.mark.integration
CYCLES = 12
SLICE_S = 4.0  # seconds of the trace per cycle (the first 48 s of the conversation trace in all)
KEEP_ALIVE_S = 1.5


def abandon_stream(port: int) -> None:
    """A client that starts a stream and leaves after its first bytes."""
    body = (b'{"model": "%s", "prompt": "Count:", "max_tokens": 200, "stream": true}' % SMOL.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        sock.recv(1024)


@pytest.mark.slow
def test_soak_memory_and_open_files_do_not_grow(start_server):
    srv = start_server([smollm2(options={"n_ctx": 512}, keep_alive=f"{KEEP_ALIVE_S}s", max_replicas=2)])
    trace = read_trace(AZURE_CONV, "azure")
    pid = srv.proc.pid
    samples: list[tuple[int, int]] = []  # (RSS KiB, open fds) at each idle point
    requests = errors = 0
    started = time.monotonic()
    for cycle in range(CYCLES):
        the_plan = plan(trace, model=SMOL, speedup=1, start=cycle * SLICE_S, duration=SLICE_S, max_requests=40,
                        limits=Limits(context_length=512, max_prompt_tokens=64, max_output_tokens=12))
        outcomes, _ = asyncio.run(replay(the_plan, url=srv.url, timeout=60, drain=60,
                                         stream=bool(cycle % 2)))
        requests += len(outcomes)
        errors += sum(1 for o in outcomes if not o.ok)
        abandon_stream(srv.port)
        srv.post("/v1/completions", {"model": SMOL, "prompt": ""})  # a 400
        srv.request("GET", "/metrics")
        # idle until every replica has unloaded: the next cycle starts cold again
        srv.wait_for(lambda: srv.model(SMOL)["state"] == "cold", timeout=60, interval=0.2)
        samples.append((rss_kib(pid), open_fds(pid)))
    elapsed = time.monotonic() - started
    starts = int(metric_sum(srv, "warmstart_starts_total", model=SMOL, outcome="ok"))
    assert errors == 0 and requests > CYCLES * 5
    assert starts >= CYCLES  # every cycle began cold: the start and unload paths were soaked too

    early, late = samples[2:5], samples[-3:]  # after warm-up (allocator arenas, imports) against the end
    rss_early, rss_late = statistics.median(s[0] for s in early), statistics.median(s[0] for s in late)
    fds_early, fds_late = max(s[1] for s in early), max(s[1] for s in late)
    print(f"\n[reliability] soak {elapsed:.0f} s: {requests} trace requests + {CYCLES} abandoned streams + "
          f"{CYCLES} bad requests, {starts} replica starts and unloads; warmstart RSS "
          f"{rss_early / 1024:.1f} MiB -> {rss_late / 1024:.1f} MiB, open fds {fds_early} -> {fds_late}; "
          f"samples {samples}")
    assert fds_late <= fds_early + 2  # connections the server has not yet noticed closing come and go
    assert rss_late <= rss_early * 1.05 + 2048  # flat: within 5% + 2 MiB of the early window


def fd_kinds(pid: int) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kind = target.split(":")[0] if ":" in target else "file"
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


@pytest.mark.slow
def test_replica_starts_and_unloads_leave_no_file_descriptor_behind(start_server):
    srv = start_server([smollm2(options={"n_ctx": 256})])
    after = []
    for _ in range(4):
        assert srv.post(f"/admin/models/{SMOL}/warm", {"wait": True})[0] == 200
        assert srv.post("/v1/completions", {"model": SMOL, "prompt": "Hi", "max_tokens": 2})[0] == 200
        assert srv.post(f"/admin/models/{SMOL}/unload", {})[0] == 200
        after.append(fd_kinds(srv.proc.pid)["pipe"])
    # each start opens a report pipe from the engine; it must be closed, not left to the garbage collector
    assert after[1:] == [after[0]] * 3, after
