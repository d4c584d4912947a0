"""Request arrival times per model, kept in SQLite in the data directory so predictions survive restarts.

Bounded: rows older than the retention are deleted, and each model keeps at most `max_per_model` rows.
Writes are batched: `add` buffers in memory (bounded too), `flush` writes; both run on the warming task.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("warmstart.warming")
SCHEMA = """
CREATE TABLE IF NOT EXISTS arrivals (model TEXT NOT NULL, t REAL NOT NULL);
CREATE INDEX IF NOT EXISTS arrivals_model_t ON arrivals (model, t);
"""


class ArrivalHistory:
    def __init__(self, path: Path, retention: float, max_per_model: int = 2_000_000,
                 max_buffered: int = 1_000_000) -> None:
        self.path = path
        self.retention = retention
        self.max_per_model = max_per_model
        self._buffer: deque[tuple[str, float]] = deque(maxlen=max_buffered)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (creating if needed) the database; raises sqlite3.Error or OSError when it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("ArrivalHistory.open() was not called")
        return self._db

    def add(self, model: str, wall: float) -> None:
        self._buffer.append((model, wall))

    def flush(self) -> int:
        """Write the buffered arrivals; returns how many. Safe to call from a worker thread."""
        rows = []
        while self._buffer:
            rows.append(self._buffer.popleft())
        if not rows:
            return 0
        with self._lock:
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany("INSERT INTO arrivals (model, t) VALUES (?, ?)", rows)
            except sqlite3.Error as exc:
                log.warning("could not write %d request arrivals to %s: %s", len(rows), self.path, exc)
                self._buffer.extendleft(reversed(rows))
                return 0
        return len(rows)

    def prune(self, now: float) -> int:
        """Delete rows older than the retention, and each model's oldest beyond `max_per_model`."""
        with self._lock:
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    removed = self.db.execute("DELETE FROM arrivals WHERE t < ?", (now - self.retention,)).rowcount
                    for (model,) in self.db.execute("SELECT DISTINCT model FROM arrivals").fetchall():
                        row = self.db.execute(
                            "SELECT t FROM arrivals WHERE model = ? ORDER BY t DESC LIMIT 1 OFFSET ?",
                            (model, self.max_per_model)).fetchone()
                        if row is not None:
                            removed += self.db.execute("DELETE FROM arrivals WHERE model = ? AND t <= ?",
                                                        (model, row[0])).rowcount
            except sqlite3.Error as exc:
                log.warning("could not prune %s: %s", self.path, exc)
                return 0
        return removed

    def load(self, since: float) -> dict[str, np.ndarray]:
        """Every model's arrivals since `since`, ascending."""
        out: dict[str, list[float]] = {}
        with self._lock:
            for model, t in self.db.execute("SELECT model, t FROM arrivals WHERE t >= ? ORDER BY model, t", (since,)):
                out.setdefault(model, []).append(t)
        if not out:
            return {}
        import numpy as np  # only with arrivals to learn from: a fresh server's start does not wait for it

        return {m: np.array(v, dtype=np.float64) for m, v in out.items()}

    def close(self) -> None:
        if self._db is None:
            return
        self.flush()
        with self._lock:
            self._db.close()
            self._db = None
