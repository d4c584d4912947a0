"""Trace readers: ServeGen windows drawn reproducibly at the right rate; Azure and JSON lines read as given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from warmstart.sim.traces import EPOCH, TraceError, read_azure, read_jsonl, read_servegen


def servegen_file(folder: Path, client: int, rows: list[tuple]) -> None:
    lines = []
    for i, (rate, dist, shape, scale) in enumerate(rows):
        lines.append(f"{i * 600},{rate},1.0,{dist},{shape},{scale}" if rate else f"{i * 600},0,0,,0,0")
    (folder / f"chunk-{client}-trace.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def servegen(tmp_path: Path) -> Path:
    day = 144
    servegen_file(tmp_path, 1, [(2.0, "Gamma", 0.5, 7.0)] * 3 + [(0, "", 0, 0)] * (2 * day - 3))
    servegen_file(tmp_path, 2, [(0.05, "Weibull", 0.6, 3.0) if i % 10 == 0 else (0, "", 0, 0) for i in range(2 * day)])
    servegen_file(tmp_path, 3, [(0, "", 0, 0)] * (2 * day))
    return tmp_path


def test_servegen_draws_each_window_at_its_rate_within_the_window(servegen: Path):
    trace = read_servegen(servegen)
    a = trace.arrivals["client-1"]
    # three windows at 2 req/s: about 3600 requests (the fitted shape only sets the burstiness)
    assert 3000 < len(a) < 4200
    assert np.all(np.diff(a) >= 0)
    assert a[0] >= EPOCH and a[-1] < EPOCH + 1800
    assert "client-3" not in trace.arrivals  # no traffic: no model
    assert trace.end - trace.start == pytest.approx(2 * 86400)


def test_servegen_arrivals_are_the_same_for_any_subset(servegen: Path):
    full = read_servegen(servegen, seed=5)
    day1 = read_servegen(servegen, days=(1, 2), seed=5)
    only = read_servegen(servegen / "chunk-2-trace.csv", seed=5)
    a = full.arrivals["client-2"]
    assert np.array_equal(only.arrivals["client-2"], a)
    assert np.array_equal(day1.arrivals["client-2"], a[a >= EPOCH + 86400])
    assert not np.array_equal(read_servegen(servegen, seed=6).arrivals["client-2"], a)


def test_servegen_max_rate_keeps_the_clients_below_it(servegen: Path):
    trace = read_servegen(servegen, max_rate=0.03)  # client-1 averages 3*2/288 = 0.021, client-2 0.005
    assert set(trace.arrivals) == {"client-1", "client-2"}
    assert set(read_servegen(servegen, max_rate=0.01).arrivals) == {"client-2"}


def test_servegen_errors_name_the_file(tmp_path: Path):
    (tmp_path / "chunk-9-trace.csv").write_text("0,abc,1,Gamma,1,1\n")
    with pytest.raises(TraceError, match=r"chunk-9-trace\.csv:1"):
        read_servegen(tmp_path)
    with pytest.raises(TraceError, match="no ServeGen"):
        read_servegen(tmp_path / "empty-dir-that-is-not-there")


def test_azure_and_jsonl(tmp_path: Path):
    azure = tmp_path / "code.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n"
                     "2023-11-16 18:17:04.0319600,3180,8\n")
    trace = read_azure(azure)
    assert list(trace.arrivals) == ["code"]
    assert np.diff(trace.arrivals["code"])[0] == pytest.approx(0.052)
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"model": "a", "t": 5}, {"model": "b", "t": 1.5},
                                                        {"model": "a", "t": 2}]) + "\n")
    trace = read_jsonl(jsonl)
    assert trace.arrivals["a"].tolist() == [EPOCH + 2, EPOCH + 5]
    jsonl.write_text('{"model": "a"}\n')
    with pytest.raises(TraceError, match=r"t\.jsonl:1"):
        read_jsonl(jsonl)
