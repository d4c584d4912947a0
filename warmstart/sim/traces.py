"""Trace readers: per-request arrival times per model, in wall seconds, from ServeGen window traces,
the Azure LLM inference traces, or JSON lines.

ServeGen gives one row per 600 s window (rate, fitted Gamma/Weibull inter-arrival distribution); arrivals
are drawn per window from that distribution rescaled so the mean gap is 1/rate, from a seed fixed per
(client, window), so any subset of days or clients sees the same arrivals.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY = 86400.0
WINDOW = 600.0
# Traces with relative times are placed on the calendar from this Monday, 00:00 UTC.
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
FORMATS = ("servegen", "azure", "jsonl")


def shared_traces() -> Path:
    """The project's public traces: $WARMSTART_TRACES, else `shared/traces` beside the checkout (as in this
    project's workspace and CI) or inside it. The first candidate when none exists, so errors name it."""
    import os

    if env := os.environ.get("WARMSTART_TRACES"):
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]
    candidates = [root.parent / "shared" / "traces", root / "shared" / "traces"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


class TraceError(Exception):
    """A trace that cannot be read: the message says which file and what is wrong."""


@dataclass(frozen=True)
class Trace:
    name: str
    # model -> ascending arrival times, wall seconds
    arrivals: dict[str, np.ndarray]
    start: float
    end: float

    @property
    def requests(self) -> int:
        return sum(len(a) for a in self.arrivals.values())


def read_trace(path: Path, fmt: str, days: tuple[float, float] | None = None, max_rate: float | None = None,
               seed: int = 0) -> Trace:
    if fmt == "servegen":
        return read_servegen(path, days, max_rate, seed)
    if fmt == "azure":
        return read_azure(path, days, max_rate)
    if fmt == "jsonl":
        return read_jsonl(path, days, max_rate)
    raise TraceError(f"unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}")


# ---- ServeGen ------------------------------------------------------------------------------------

_CHUNK = re.compile(r"chunk-(\d+)-trace\.csv$")


def read_servegen(path: Path, days: tuple[float, float] | None = None, max_rate: float | None = None,
                  seed: int = 0) -> Trace:
    files = sorted(path.glob("chunk-*-trace.csv")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise TraceError(f"{path}: no ServeGen chunk-N-trace.csv files there")
    arrivals: dict[str, np.ndarray] = {}
    lo_s, hi_s = None, None
    for file in files:
        match = _CHUNK.search(file.name)
        client = int(match.group(1)) if match else abs(hash(file.name)) % (1 << 31)
        windows = _servegen_windows(file)
        if not windows:
            continue
        first, last = windows[0][0], windows[-1][0] + WINDOW
        lo = first + days[0] * DAY if days else first
        hi = min(first + days[1] * DAY, last) if days else last
        lo_s = lo if lo_s is None else min(lo_s, lo)
        hi_s = hi if hi_s is None else max(hi_s, hi)
        chosen = [w for w in windows if lo <= w[0] < hi]
        if not chosen:
            continue
        if max_rate is not None and sum(w[1] for w in chosen) / len(chosen) >= max_rate:
            continue
        times = [_draw_window(w, seed, client, int(w[0] // WINDOW)) for w in chosen if w[1] > 0]
        if times:
            arr = np.concatenate(times)
            if len(arr):
                arrivals[f"client-{client}"] = EPOCH + arr
    if lo_s is None or hi_s is None:
        raise TraceError(f"{path}: no windows in the chosen days")
    return Trace(path.name, arrivals, EPOCH + lo_s, EPOCH + hi_s)


def _servegen_windows(file: Path) -> list[tuple[float, float, str, float, float]]:
    out = []
    try:
        with file.open(newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row:
                    continue
                try:
                    start, rate = float(row[0]), float(row[1])
                    dist = row[3].strip() if len(row) > 3 else ""
                    shape = float(row[4]) if len(row) > 4 and row[4] else 0.0
                    scale = float(row[5]) if len(row) > 5 and row[5] else 0.0
                except (ValueError, IndexError):
                    raise TraceError(f"{file}:{i + 1}: expected window_start_s,rate,cv,dist,shape,scale") from None
                out.append((start, rate, dist, shape, scale))
    except OSError as exc:
        raise TraceError(f"{file}: {exc.strerror}") from None
    return out


def _draw_window(window: tuple[float, float, str, float, float], seed: int, client: int, index: int) -> np.ndarray:
    start, rate, dist, shape, _scale = window
    rng = np.random.default_rng([seed, client, index])
    mean_gap = 1.0 / rate
    expected = rate * WINDOW

    def gaps(n: int) -> np.ndarray:
        if dist == "Gamma" and shape > 0:
            return rng.gamma(shape, 1.0, n) * (mean_gap / shape)
        if dist == "Weibull" and shape > 0:
            return rng.weibull(shape, n) * (mean_gap / math.gamma(1.0 + 1.0 / shape))
        return rng.exponential(mean_gap, n)  # no fit given: Poisson at the window's rate

    n = int(expected * 1.5) + 16
    t = np.cumsum(gaps(n))
    while t[-1] < WINDOW:
        t = np.concatenate([t, t[-1] + np.cumsum(gaps(n))])
    return start + t[t < WINDOW]


# ---- Azure LLM inference traces --------------------------------------------------------------------

def read_azure(path: Path, days: tuple[float, float] | None = None, max_rate: float | None = None) -> Trace:
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    raw: dict[str, np.ndarray] = {}
    for file in files:
        times = []
        try:
            with file.open(newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if not header or header[0].strip().upper() != "TIMESTAMP":
                    raise TraceError(f"{file}: expected an Azure trace with a TIMESTAMP column first")
                for i, row in enumerate(reader, start=2):
                    if row:
                        times.append(_azure_time(row[0], file, i))
        except OSError as exc:
            raise TraceError(f"{file}: {exc.strerror}") from None
        if times:
            raw[file.stem] = np.sort(np.array(times))
    return _windowed(path.name, raw, days, max_rate)


def _azure_time(text: str, file: Path, line: int) -> float:
    base, _, frac = text.strip().partition(".")
    try:
        t = dt.datetime.strptime(base, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
        return t + (float("0." + frac) if frac else 0.0)
    except ValueError:
        raise TraceError(f"{file}:{line}: {text!r} is not a timestamp like 2023-11-16 18:17:03.98") from None


# ---- JSON lines -------------------------------------------------------------------------------------

def read_jsonl(path: Path, days: tuple[float, float] | None = None, max_rate: float | None = None) -> Trace:
    """One request per line: {"model": "name", "t": seconds} ("time" or "timestamp" also accepted)."""
    per: dict[str, list[float]] = {}
    try:
        with path.open() as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    t = next(row[k] for k in ("t", "time", "timestamp") if k in row)
                    per.setdefault(str(row["model"]), []).append(float(t))
                except (ValueError, KeyError, StopIteration, TypeError):
                    raise TraceError(f'{path}:{i}: expected {{"model": "name", "t": seconds}}') from None
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror}") from None
    raw = {m: np.sort(np.array(v, dtype=np.float64)) for m, v in per.items()}
    return _windowed(path.name, raw, days, max_rate)


def _windowed(name: str, raw: dict[str, np.ndarray], days: tuple[float, float] | None,
              max_rate: float | None) -> Trace:
    if not raw:
        raise TraceError(f"{name}: the trace has no requests")
    first = min(float(a[0]) for a in raw.values())
    last = max(float(a[-1]) for a in raw.values())
    # relative times go on the calendar from EPOCH; Unix times stay where they are, days counted from
    # the first request's UTC midnight
    offset = EPOCH if last < 1e8 else 0.0
    origin = offset if last < 1e8 else math.floor(first / DAY) * DAY
    lo = origin + (days[0] * DAY if days else 0.0)
    hi = origin + days[1] * DAY if days else last + offset + 1e-6
    out = {}
    for model, arr in raw.items():
        arr = arr + offset
        arr = arr[(arr >= lo) & (arr < hi)]
        if len(arr) and (max_rate is None or len(arr) / max(hi - lo, 1e-9) < max_rate):
            out[model] = arr
    start = lo if days else first + offset
    return Trace(name, out, start, hi)
