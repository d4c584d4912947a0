"""`warmstart audit verify | show | export` on real log files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from warmstart.cli import main
from warmstart.telemetry.audit import AuditWriter
from warmstart.telemetry.audit_format import segments

DAY = 86400.0
T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def make_log(data_dir: Path) -> Path:
    directory = data_dir / "audit"
    writer = AuditWriter(directory)
    phases = [{"phase": "spawn", "seconds": 0.05}, {"phase": "load", "seconds": 0.5}]
    writer.append({"event": "start", "model": "a", "trigger": "request", "outcome": "ok", "seconds": 0.6,
                   "phases": phases, "sha256": "ab" * 32, "options": {"n_ctx": 2048}}, T0)
    writer.append({"event": "unload", "model": "a", "trigger": "request", "outcome": "ok", "reason": "keep-alive",
                   "seconds": 300.0, "phases": []}, T0 + 300)
    writer.append({"event": "start", "model": "b", "trigger": "hint", "outcome": "failed", "seconds": 1.5,
                   "error": "engine exited", "phases": [{"phase": "spawn", "seconds": 0.04},
                                                         {"phase": "import", "seconds": 0.3}]}, T0 + DAY)
    return directory


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_says_ok_or_names_the_first_bad_line(tmp_path, capsys):
    directory = make_log(tmp_path)
    code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path))
    assert code == 0 and out.startswith("audit log OK: 3 records (seq 1-3) in 1 file")
    [seg] = segments(directory)
    lines = seg.read_bytes().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    seg.write_bytes(b"\n".join(lines) + b"\n")
    code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path))
    assert code == 1
    assert out.splitlines()[0] == ("audit log BROKEN at audit-000001.jsonl line 2: record seq 3 comes before "
                                   "seq 2: records were reordered")
    code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path), "--json")
    assert code == 1 and json.loads(out)["problem"] == {
        "file": "audit-000001.jsonl", "line": 2, "kind": "reordered",
        "message": "record seq 3 comes before seq 2: records were reordered"}


def test_verify_names_a_malformed_line_and_exits_1_without_a_traceback(tmp_path, capsys):
    directory = make_log(tmp_path)
    [seg] = segments(directory)
    good = seg.read_bytes().splitlines()
    forged = b'"sha256":"' + b"cd" * 32 + b'",'  # a duplicate key before the real sha256
    for line, says in [
        (good[0].replace(b'"sha256":', forged + b'"sha256":', 1), 'the key "sha256" appears twice'),
        (good[0].replace(b'"seconds":0.6', b'"seconds":NaN'), "NaN"),
        (good[0].replace(b'"seconds":0.6', b'"seconds":1e999'), "1e999"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"42", "not an object"),
    ]:
        seg.write_bytes(b"\n".join([line, *good[1:]]) + b"\n")
        code, out, err = run(capsys, "audit", "verify", "--data-dir", str(tmp_path))
        assert code == 1 and err == ""
        assert out.startswith("audit log BROKEN at audit-000001.jsonl line 1: ") and says in out.splitlines()[0]
        code, out, _ = run(capsys, "audit", "verify", "--data-dir", str(tmp_path), "--json")
        problem = json.loads(out)["problem"]
        assert code == 1 and (problem["file"], problem["line"]) == ("audit-000001.jsonl", 1)
        code, out, _ = run(capsys, "audit", "show", "--data-dir", str(tmp_path))  # show skips it, no crash
        assert code == 0 and len(out.splitlines()) == 3


def test_show_lists_records_with_filters(tmp_path, capsys):
    make_log(tmp_path)
    code, out, _ = run(capsys, "audit", "show", "--data-dir", str(tmp_path))
    rows = out.splitlines()
    assert code == 0 and rows[0].split()[:3] == ["TIME", "(UTC)", "SEQ"] and len(rows) == 4
    assert "2026-11-18 11:06:40" in rows[1] and "spawn 0.05s load 0.50s" in rows[1] and "abababababab" in rows[1]
    # an unload's trigger is what ended the replica; the start it ends is named after it
    assert rows[2].split()[3:6] == ["unload", "a", "keep-alive"] and "ends a start by request" in rows[2]
    assert "engine exited" in rows[3] and "hint" in rows[3]
    code, out, _ = run(capsys, "audit", "show", "--data-dir", str(tmp_path), "--model", "b")
    assert len(out.splitlines()) == 2
    code, out, _ = run(capsys, "audit", "show", "--data-dir", str(tmp_path), "--last", "1", "--json")
    assert json.loads(out)["seq"] == 3


def test_export_json_and_csv_with_time_and_model_filters(tmp_path, capsys):
    make_log(tmp_path)
    code, out, _ = run(capsys, "audit", "export", "--data-dir", str(tmp_path), "--since", "2026-11-18",
                       "--until", "2026-11-18T12:00:00Z", "--format", "json")
    report = json.loads(out)
    assert code == 0 and [r["seq"] for r in report["records"]] == [1, 2]
    assert report["verification"]["ok"] is True and report["filters"]["since"] == "2026-11-18"

    target = tmp_path / "out.csv"
    code, _, err = run(capsys, "audit", "export", "--data-dir", str(tmp_path), "--model", "b", "--format", "csv",
                       "-o", str(target))
    assert code == 0 and "wrote 1 records" in err
    [row] = list(csv.DictReader(io.StringIO(target.read_text())))
    assert row["model"] == "b" and row["event"] == "start" and row["outcome"] == "failed"
    assert row["error"] == "engine exited" and row["phase_spawn_s"] == "0.04" and row["phase_import_s"] == "0.3"
    assert row["time"] == "2026-11-19T11:06:40.000000Z" and row["sha256"] == ""


def test_bad_input_is_one_line_with_the_fix(tmp_path, capsys):
    code, _, err = run(capsys, "audit", "verify", "--data-dir", str(tmp_path / "nothing"))
    assert code == 1 and err.count("\n") == 1 and "no audit log in" in err and "--data-dir" in err
    make_log(tmp_path)
    code, _, err = run(capsys, "audit", "export", "--data-dir", str(tmp_path), "--since", "yesterday")
    assert code == 2 and err.count("\n") == 1 and "ISO 8601" in err
    code, _, err = run(capsys, "audit", "export", "--data-dir", str(tmp_path), "--format", "xml")
    assert code == 2 and "invalid choice" in err


def test_the_audit_directory_comes_from_the_config_file(tmp_path, capsys):
    directory = make_log(tmp_path / "elsewhere")
    config = tmp_path / "warmstart.toml"
    config.write_text(f'[audit]\ndir = "{directory}"\n')
    code, out, _ = run(capsys, "audit", "verify", "--config", str(config))
    assert code == 0 and str(directory) in out


def test_show_says_which_audit_log_it_read(tmp_path, capsys):
    directory = make_log(tmp_path / "elsewhere")
    config = tmp_path / "warmstart.toml"
    config.write_text(f'[audit]\ndir = "{directory}"\n')
    code, _, err = run(capsys, "audit", "show", "--config", str(config))
    assert code == 0 and f"audit log read: {directory} (from {config})" in err
