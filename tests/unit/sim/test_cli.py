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


def daily(tmp_path: Path, days: int = 4) -> Path:
    """A model silent all day but for two minutes at 09:00, one request a second."""
    path = tmp_path / "daily.jsonl"
    rows = [{"model": "m", "t": d * 86400 + 9 * 3600 + i} for d in range(days) for i in range(120)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_simulate_learns_from_the_history_days_and_judges_only_the_days_after(tmp_path: Path):
    """Three days of history teach the predictive policy the 09:00 habit: on day 3 it is warm at 09:00;
    without the history the day's burst waits for a start."""
    trace, out = daily(tmp_path), tmp_path / "r.json"

    def run(*history: str) -> dict:
        assert main(["simulate", "--trace", str(trace), "--policy", "keepalive-300s,default", "--days", "3:4",
                     *history, "--json", str(out)]) == 0
        return json.loads(out.read_text())

    learned, fresh = run("--history-days", "0:3"), run()
    assert learned["history_days"] == [0.0, 3.0] and fresh["history_days"] is None
    for report in (learned, fresh):
        assert all(r["requests"] == 120 for r in report["policies"].values())  # day 3 only is judged
    assert learned["policies"]["default"]["cold_requests"] == 0
    assert learned["policies"]["default"]["starts"] == {"prediction": 1}
    assert fresh["policies"]["default"]["cold_requests"] == 30  # those in the first 30 s start
    # a fixed keep-alive learns nothing
    assert learned["policies"]["keepalive-300s"] == fresh["policies"]["keepalive-300s"]
    assert learned["frontier"]["policies"]["default"]["cold_fraction"] == 0.0


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
    (["--history-days", "0:2"], "also give the judged --days"),
    (["--history-days", "0:3", "--days", "2:4"], "must end by the first judged day"),
    (["--history-days", "x", "--days", "2:4"], "--history-days 'x': expected A:B"),
    (["--cold-start", "-4"], "--cold-start"),
    (["--set", "nonsense=1"], "unknown predictive setting"),
    (["--set", "slot=0"], "slot = 0: must be from 60 s to a day"),
    (["--set", "half_life=0"], "half_life = 0: must be above 0"),
    (["--schedule", "25:00-26:00"], "not a time of day"),
    (["--per-model", "nope"], "--per-model 'nope': not among the policies replayed"),
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


def test_simulate_per_model_shows_where_the_cold_requests_and_the_cost_are(jsonl: Path, tmp_path: Path, capsys):
    """Model a arrives every 90 s on average, b every 900 s: under a 300 s keep-alive b has the cold requests.
    Per model, the figures add up to the policy's totals, and the table puts the coldest model first."""
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(jsonl), "--format", "jsonl", "--policy", "keepalive-300s,default",
                 "--cold-start", "30", "--per-model", "keepalive-300s", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for result in report["policies"].values():
        per = result["per_model"]
        assert set(per) == {"a", "b"}
        assert sum(m["requests"] for m in per.values()) == result["requests"] == 600
        assert sum(m["cold_requests"] for m in per.values()) == result["cold_requests"]
        assert sum(m["starts"] for m in per.values()) == sum(result["starts"].values())
        assert sum(m["loaded_replica_s"] for m in per.values()) == pytest.approx(result["loaded_replica_s"])
        assert np.mean([m["total_cost_fraction"] for m in per.values()]) == pytest.approx(
            result["total_cost_fraction"])
    per = report["policies"]["keepalive-300s"]["per_model"]
    assert per["b"]["cold_requests"] > per["a"]["cold_requests"]
    text = capsys.readouterr().out
    lines = text[text.index("keepalive-300s: model"):].splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["b", "a"]
    assert lines[2].split()[2] == str(per["b"]["cold_requests"])


def test_bench_warming_judges_every_policy_against_the_frontier_after_learning_from_history(tmp_path: Path,
                                                                                           capsys):
    """Ten days of a client busy at 09:00-11:00 every day: the policies learn days 0-6, days 6-10 are judged,
    at each cold start, against the curve of the fixed keep-alives."""
    folder = tmp_path / "servegen-m-large"
    folder.mkdir()
    rows = [(0.05, "Gamma", 0.5, 10.0) if (i // 6) % 24 in (9, 10) else (0, "", 0, 0) for i in range(144 * 10)]
    servegen_file(folder, 7, rows)
    out = tmp_path / "bench.json"
    assert main(["bench", "warming", "--traces", str(tmp_path), "--only", "servegen-m-large", "--cold-starts",
                 "30,5", "--keepalives", "0,60,600,3600", "--json", str(out), "--plot", str(tmp_path / "f.png")]) == 0
    report = json.loads(out.read_text())
    assert [(r["name"], r["cold_start_s"], r["days"], r["history_days"]) for r in report["runs"]] == [
        ("servegen-m-large", 30.0, [6.0, 10.0], [0.0, 6.0]), ("servegen-m-large", 5.0, [6.0, 10.0], [0.0, 6.0])]
    for run in report["runs"]:
        assert [p["policy"] for p in run["frontier"]["curve"]] == [
            "keepalive-0s", "keepalive-60s", "keepalive-600s", "keepalive-3600s"]
        judged = run["frontier"]["policies"]["default"]
        assert set(run["target"]) == {"predictive", "default"}
        assert run["target"]["default"]["cold_vs_curve"] == judged["cold_vs_curve"]
        # days 6-10 only: 4 days x 2 hours x 0.05 req/s, about 1,440 requests
        assert 1000 < run["requests"] < 2000
        # the model was seen in the history: nothing forces a cold request on a policy that learns from it
        assert run["bounds"]["history_learning_floor"]["first_burst_requests"] == 0
        assert len(run["bounds"]["hindsight_keepalive_per_model"]) == 8
        # every model was seen: shown only the unseen models' judged days, the default replays as it did
        ins = run["bounds"]["in_sample"]
        assert ins["unseen_models"] == 0
        assert ins["unseen_models_only"]["cold_fraction"] == judged["cold_fraction"]
        assert ins["unseen_models_only"]["total_cost_fraction"] == judged["total_cost_fraction"]
        # the default again with faster RAM tiers, against the same curve: a faster tier keeps no more
        # requests waiting
        faster = run["bounds"]["faster_ram_tier"]
        assert [(f["speedup"], f["ram_cold_start_s"]) for f in faster] == [
            (s, run["cold_start_s"] / s) for s in (3.0, 5.0, 10.0)]
        for f in faster:
            assert f["cold_fraction"] <= judged["cold_fraction"]
            assert f["curve_cold_at_equal_cost"] is not None and f["above_curve"] is False
    assert (tmp_path / "f.png").stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "cold vs curve" in text and "servegen-m-large" in text
    assert "shown the judged days beforehand" in text
    assert "RAM tier faster than the assumed 1.9x" in text


def test_bench_unknown_name_is_one_line(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no benchmark named 'nope'" in err and "warming" in err and len(err.strip().splitlines()) == 1
