"""Request history in SQLite: survives reopening, bounded by retention and by rows per model."""

from __future__ import annotations

from pathlib import Path

from warmstart.warming.history import ArrivalHistory


def test_arrivals_survive_a_restart_and_old_ones_are_pruned(tmp_path: Path):
    path = tmp_path / "data" / "history.sqlite3"
    h = ArrivalHistory(path, retention=1200.0)
    h.open()
    for t in (10.0, 500.0, 1500.0, 1600.0):
        h.add("a", t)
    h.add("b", 1550.0)
    assert h.flush() == 5
    h.close()
    h = ArrivalHistory(path, retention=1200.0)
    h.open()
    assert {m: a.tolist() for m, a in h.load(0.0).items()} == {"a": [10.0, 500.0, 1500.0, 1600.0], "b": [1550.0]}
    assert h.prune(now=1600.0) == 1  # 10.0 is older than the retention
    assert h.load(0.0)["a"].tolist() == [500.0, 1500.0, 1600.0]
    h.close()


def test_each_model_keeps_at_most_its_cap(tmp_path: Path):
    h = ArrivalHistory(tmp_path / "h.sqlite3", retention=1e9, max_per_model=3)
    h.open()
    for t in range(10):
        h.add("a", float(t))
    h.add("b", 5.0)
    h.flush()
    h.prune(now=10.0)
    got = h.load(0.0)
    assert got["a"].tolist() == [7.0, 8.0, 9.0]
    assert got["b"].tolist() == [5.0]
    h.close()


def test_unwritten_arrivals_stay_buffered_and_bounded(tmp_path: Path):
    h = ArrivalHistory(tmp_path / "h.sqlite3", retention=1e9, max_buffered=5)
    for t in range(8):
        h.add("a", float(t))
    h.open()
    h.flush()
    assert h.load(0.0)["a"].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]  # the oldest went when the buffer was full
    h.close()
