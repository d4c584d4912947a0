"""`warmstart simulate` and `warmstart bench warming` end to end on small traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.unit.sim.test_traces import servegen_file
from warmstart.cli import main

KEYS = {"requests", "warm_fraction", "cost_fraction", "wait_p50_s", "wait_p99_s"}
RAM_KEYS = {"loaded_replica_s", "ram_resident_s", "ram_cost_replica_s", "ram_cost_fraction", "total_cost_fraction",
            "starts_from_ram", "starts_from_disk", "cold_from_ram", "cold_from_disk", "wait_ram_p50_s",
            "wait_ram_p99_s", "wait_disk_p50_s", "wait_disk_p99_s"}


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "trace.jsonl"
    rows = [{"model": m, "t": float(t)} for m, scale in (("a", 90.0), ("b", 900.0))
            for t in np.cumsum(rng.exponential(scale, 300))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_simulate_writes_the_json_and_the_plot(jsonl: Path, tmp_path: Path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    status = main(["simulate", "--trace", str(jsonl), "--format", "jsonl", "--policy",
                   "keepalive-300s,predictive,default,schedule,oracle", "--cold-start", "30",
                   "--json", str(out), "--plot", str(png)])
    assert status == 0
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"keepalive-300s", "predictive", "default", "schedule", "oracle"}
    for result in [*report["policies"].values(), report["oracle"]]:
        assert set(result) >= KEYS
        assert result["requests"] == 600
    assert report["oracle"]["warm_fraction"] == 1.0
    assert report["oracle"]["cost_fraction"] < report["policies"]["keepalive-300s"]["cost_fraction"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "keepalive-300s" in table and "x oracle" in table


def test_simulate_with_the_ram_tier_reports_seconds_and_cost_per_tier(jsonl: Path, tmp_path: Path, capsys):
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(jsonl), "--policy", "keepalive-300s,oracle", "--cold-start", "30",
                 "--ram-keep-alive", "1h", "--ram-price", "0.01", "--model-gib", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ram_tier"] == {"keep_alive_s": 3600.0, "cold_start_s": pytest.approx(30 / 1.9),
                                  "price_per_gib_hour": 0.01, "model_gib": 8.0, "price_per_s": 0.08}
    r = report["policies"]["keepalive-300s"]
    assert set(r) >= RAM_KEYS
    assert r["starts_from_ram"] > 0 and r["ram_resident_s"] > 0
    assert r["wait_ram_p99_s"] == pytest.approx(30 / 1.9)
    assert r["total_cost_fraction"] == pytest.approx(r["cost_fraction"] + r["ram_cost_fraction"])
    assert report["policies"]["oracle"]["ram_resident_s"] == 0
    table = capsys.readouterr().out
    assert "RAM h" in table and "starts RAM/disk" in table


def test_simulate_without_the_ram_tier_prints_the_table_as_before(jsonl: Path, capsys):
    assert main(["simulate", "--trace", str(jsonl), "--policy", "keepalive-300s"]) == 0
    assert "RAM" not in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--trace", "/no/such/trace"], "no such file"),
    (["--ram-keep-alive", "soon"], "--ram-keep-alive"),
    (["--ram-cold-start", "40"], "at most the --cold-start"),
    (["--ram-cold-start", "0"], "--ram-cold-start"),
    (["--ram-price", "-1"], "--ram-price"),
    (["--model-gib", "0"], "--model-gib"),
    (["--policy", "keepalive-5m"], "unknown policy"),
    (["--days", "3:1"], "--days"),
    (["--cold-start", "-4"], "--cold-start"),
    (["--set", "nonsense=1"], "unknown predictive setting"),
    (["--schedule", "25:00-26:00"], "not a time of day"),
])
def test_simulate_bad_input_is_one_line(jsonl: Path, capsys, args, message):
    base = {"--trace": str(jsonl), "--format": "jsonl"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    status = main(["simulate", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    assert status in (1, 2)
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bench_warming_reports_every_policy_beside_fixed_keep_alives_and_the_oracle(tmp_path: Path, capsys):
    rows = [(0.2, "Gamma", 0.5, 10.0) if (i // 6) % 24 in (9, 10) else (0, "", 0, 0) for i in range(144 * 3)]
    servegen_file(tmp_path, 7, rows)
    out = tmp_path / "bench.json"
    assert main(["bench", "warming", "--trace", str(tmp_path), "--days", "0:3", "--max-rate", "1",
                 "--keepalives", "60,600", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"keepalive-60s", "keepalive-600s", "schedule", "predictive", "default"}
    assert set(report["oracle"]) >= KEYS
    target = report["target"]
    assert target["results"]["default"]["target_met"] in (True, False)
    assert 0 < target["causal_bound"]["max_warm_fraction"] < 1
    assert target["hindsight_keepalive"]["warm_fraction"] <= 1
    text = capsys.readouterr().out
    assert "default:" in text and "x the oracle" in text


def test_bench_unknown_name_is_one_line(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no benchmark named 'nope'" in err and "warming" in err and len(err.strip().splitlines()) == 1
