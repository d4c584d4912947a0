"""Durations as people write them in config and requests: 300, 2.5, "5m", "1h30m", "-1", "0"."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
FOREVER = math.inf


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string. Negative means forever (math.inf).

    Raises ValueError with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 300, '5m' or '-1', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("expected a duration such as 300, '5m' or '-1', got an empty string")
        negative = text.startswith("-")
        body = text[1:] if negative else text
        try:
            seconds = float(body)
        except ValueError:
            pos, total = 0, 0.0
            for match in _PART.finditer(body):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(body) or pos == 0:
                raise ValueError(
                    f"expected a duration such as 300, '5m', '1h30m' or '-1', got {value!r}"
                ) from None
            seconds = total
        if negative:
            seconds = -seconds
    else:
        raise ValueError(f"expected a duration such as 300, '5m' or '-1', got {value!r}")
    if math.isnan(seconds):
        raise ValueError(f"expected a duration, got {value!r}")
    return FOREVER if seconds < 0 else seconds


def format_duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "forever"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs:
        parts.append(f"{secs}s")
    return "".join(parts)
