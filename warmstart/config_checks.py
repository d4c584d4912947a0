"""Checks shared by the config's section parsers: each raises ConfigError naming the field, its value and why."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from warmstart.durations import parse_duration
from warmstart.errors import ConfigError


def read_bool(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    expect(isinstance(value, bool), f"{where}.{key}", value, "must be true or false")
    return value


def read_positive(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    seconds = read_duration(raw, key, default, where, finite=True)
    expect(seconds > 0, f"{where}.{key}", raw.get(key, default), "must be a positive duration")
    return seconds


def expect(ok: bool, field_name: str, value: object, reason: str) -> None:
    if not ok:
        raise ConfigError(field_name, value, reason)


def only_keys(raw: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(name, raw[key], f"unknown setting; known here: {', '.join(sorted(allowed))}")


def read_int(raw: Mapping[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}", value, "must be a whole number") from None
    expect(lo <= number <= hi, f"{where}.{key}", value, f"must be between {lo} and {hi}")
    return number


def read_duration(raw: Mapping[str, Any], key: str, default: float, where: str, finite: bool = False) -> float:
    value = raw.get(key, default)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}", value, str(exc)) from None
    if finite and math.isinf(seconds):
        raise ConfigError(f"{where}.{key}", value, "must be a positive duration")
    return seconds
