"""Scheduled warming: cron-style windows per model ("07:55-18:00 Mon-Fri", "03:00 for 10m"), in a time zone.

A window means the model is warm during it: the start is moved earlier by the measured cold start.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warmstart.durations import parse_duration
from warmstart.policy.plan import Plan, WarmSpan

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALIASES = {"daily": tuple(range(7)), "everyday": tuple(range(7)), "weekdays": tuple(range(5)),
            "weekends": (5, 6)}
_TIME = r"(\d{1,2}):(\d{2})"
_RANGE = re.compile(rf"^{_TIME}\s*-\s*{_TIME}$")
_FOR = re.compile(rf"^(?:at\s+)?{_TIME}\s+for\s+(\S+)$")
HORIZON = 2 * 86400.0


@dataclass(frozen=True, slots=True)
class Window:
    """Warm from `start` (minutes after local midnight) for `duration` seconds on the given weekdays."""

    start_min: int
    duration: float
    days: tuple[int, ...]
    end_min: int | None = None  # set for "HH:MM-HH:MM": the end is a wall-clock time (DST-safe)
    text: str = ""


def parse_window(text: str) -> Window:
    """Parse "07:55-18:00 Mon-Fri", "03:00 for 10m", "Sat,Sun 10:00-12:00", "22:00-02:00 daily".

    Raises ValueError with a message fit for a user.
    """
    words = text.strip().split()
    if not words:
        raise ValueError("expected a window such as '07:55-18:00 Mon-Fri' or '03:00 for 10m'")
    days: tuple[int, ...] | None = None
    time_words = []
    for word in words:
        parsed = _parse_days(word)
        if parsed is not None:
            if days is not None:
                raise ValueError(f"{text!r} names its days twice")
            days = parsed
        else:
            time_words.append(word)
    spec = " ".join(time_words)
    if m := _RANGE.match(spec):
        start, end = _minutes(m.group(1), m.group(2), text), _minutes(m.group(3), m.group(4), text, end=True)
        length = (end - start) % 1440 or 1440
        return Window(start, length * 60.0, days or tuple(range(7)), end_min=end % 1440, text=text)
    if m := _FOR.match(spec):
        start = _minutes(m.group(1), m.group(2), text)
        try:
            seconds = parse_duration(m.group(3))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if not 0 < seconds <= 7 * 86400:
            raise ValueError(f"{text!r}: the duration must be more than 0 and at most 7 days")
        return Window(start, seconds, days or tuple(range(7)), text=text)
    raise ValueError(f"expected a window such as '07:55-18:00 Mon-Fri' or '03:00 for 10m', got {text!r}")


def _minutes(h: str, m: str, text: str, end: bool = False) -> int:
    hours, minutes = int(h), int(m)
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise ValueError(f"{text!r}: {h}:{m} is not a time of day")
    return hours * 60 + minutes


def _parse_days(word: str) -> tuple[int, ...] | None:
    w = word.lower().rstrip(",")
    if w in _ALIASES:
        return _ALIASES[w]
    if re.fullmatch(r"[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*", w) is None:
        return None
    out: list[int] = []
    for part in w.split(","):
        a, _, b = part.partition("-")
        if a not in DAY_NAMES or (b and b not in DAY_NAMES):
            return None
        i, j = DAY_NAMES.index(a), DAY_NAMES.index(b or a)
        out += [d % 7 for d in range(i, j + 1 if j >= i else j + 8)]
    return tuple(sorted(set(out)))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as 'Europe/Oslo' or 'UTC'") from None


def occurrences(window: Window, tz: ZoneInfo, since: float, until: float) -> list[tuple[float, float]]:
    """The window's (start, end) in Unix time that overlap [since, until)."""
    first = dt.datetime.fromtimestamp(since, tz).date() - dt.timedelta(days=8)
    out = []
    day = first
    while True:
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
        if midnight.timestamp() >= until:
            break
        if day.weekday() in window.days:
            start = _local(day, window.start_min, tz)
            if window.end_min is not None:
                end_day = day if window.end_min > window.start_min else day + dt.timedelta(days=1)
                end = _local(end_day, window.end_min, tz)
            else:
                end = start + window.duration
            if end > since and start < until:
                out.append((start, end))
        day += dt.timedelta(days=1)
    return out


def _local(day: dt.date, minutes: int, tz: ZoneInfo) -> float:
    """Unix time of a wall-clock time on a local day (aware arithmetic keeps 07:55 at 07:55 across DST)."""
    if minutes >= 1440:
        day, minutes = day + dt.timedelta(days=1), minutes - 1440
    return (dt.datetime(day.year, day.month, day.day, tzinfo=tz) + dt.timedelta(minutes=minutes)).timestamp()


@dataclass(frozen=True)
class SchedulePolicy:
    """The model's windows; `lead` extra seconds before each (the controller's tick) on top of the cold start."""

    windows: tuple[Window, ...]
    tz: ZoneInfo
    lead: float = 0.0

    def initial_state(self) -> None:
        return None

    def decide(self, obs: object, state: None, now: float) -> tuple[Plan, None]:
        lead = float(getattr(obs, "cold_start_s", 0.0)) + self.lead
        spans = []
        for window in self.windows:
            for start, end in occurrences(window, self.tz, now - lead, now + HORIZON):
                spans.append(WarmSpan(start - lead, end, "schedule"))
        upcoming = [s.start for s in spans if s.start > now]
        review = min(upcoming + [now + HORIZON / 2])
        return Plan(spans=tuple(spans), review_at=review if not math.isinf(review) else now + HORIZON / 2), None
