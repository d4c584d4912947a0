"""Long commands (`simulate`, `bench`) say what they are doing on stderr, and stdout stays machine-readable:
the table alone, or with `--json -` the JSON alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.unit.sim.test_cli import jsonl  # noqa: F401 (a fixture: a small trace)
from warmstart.cli import main

ENV = {**os.environ, "WARMSTART_PROGRESS": "always"}  # every step, however quick the run


def simulate(*args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warmstart", "simulate", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_simulate_says_its_steps_on_stderr_and_prints_only_the_table_or_the_json_on_stdout(jsonl: Path):  # noqa: F811
    base = ["--trace", str(jsonl), "--format", "jsonl", "--policy", "keepalive-300s,default", "--cold-start", "30"]
    done = simulate(*base, "--json", "-")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the JSON and nothing else
    assert set(report["policies"]) == {"keepalive-300s", "default"}
    err = done.stderr.splitlines()
    assert any(line.startswith("simulate: reading the trace trace.jsonl") for line in err), err
    assert any(line.startswith("simulate: policy 2/2 default, models") for line in err), err
    assert any(line.startswith("trace trace.jsonl: 600 requests, 2 models") for line in err), err
    assert "policy" in done.stderr.split("simulate: policy 2/2")[-1]  # the table went to stderr meanwhile

    table = simulate(*base)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["policy", "requests", "warm"], table.stdout
    assert "simulate:" not in table.stdout and "simulate: policy 1/2" in table.stderr

    quiet = simulate(*base, env={**os.environ, "WARMSTART_PROGRESS": "off"})
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == table.stdout


def test_bench_opens_the_progress_display_and_gives_json_dash_the_stdout(monkeypatch, capsys, tmp_path):
    """A benchmark module as `warmstart bench` runs one: it prints its table, reports steps, writes --json OUT."""
    from warmstart.cli import bench
    from warmstart.progress import step

    def run(argv: list[str]) -> int:
        path = argv[argv.index("--json") + 1]
        step("the only step", 1, 2)
        print("a table")
        Path(path).write_text(json.dumps({"result": 1}))
        return 0

    monkeypatch.setenv("WARMSTART_PROGRESS", "always")
    monkeypatch.setattr(bench, "available", lambda: ["tiny"])
    monkeypatch.setitem(sys.modules, "warmstart.bench.tiny", types.SimpleNamespace(main=run))
    assert main(["bench", "tiny", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"result": 1}
    assert "bench tiny: the only step 1/2 (50%)" in err and "a table" in err

    written = tmp_path / "r.json"
    assert main(["bench", "tiny", "--json", str(written)]) == 0
    out, err = capsys.readouterr()
    assert out == "a table\n" and json.loads(written.read_text()) == {"result": 1}
    assert "bench tiny: the only step" in err


@pytest.mark.parametrize("argv", [["--json", "-"], []])
def test_bench_arguments_without_json_pass_unchanged(argv):
    from warmstart.cli.bench import json_argument

    assert json_argument(argv) == (1 if argv else None)


def test_models_add_and_verify_say_how_far_the_hashing_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("WARMSTART_PROGRESS", "always")
    model = tmp_path / "m.gguf"
    model.write_bytes(os.urandom(20 << 20))
    assert main(["models", "add", str(model), "--data-dir", str(tmp_path / "data")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("added m: gguf") and "hashing" not in out  # stdout: the result alone
    assert "models add: hashing m.gguf: MB 8.4/21.0 (40%)" in err, err
    assert main(["models", "verify", "--data-dir", str(tmp_path / "data")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("m: ok") and "models verify m: hashing m.gguf: MB" in err, err
