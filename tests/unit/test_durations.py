import math

import pytest

from warmstart.durations import format_duration, parse_duration


@pytest.mark.parametrize("value,seconds", [
    (300, 300), (2.5, 2.5), ("300", 300), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("0", 0), (0, 0),
    ("1d", 86400), (" 10s ", 10),
])
def test_parse(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [-1, "-1", "-5m", -0.001])
def test_negative_means_forever(value):
    assert math.isinf(parse_duration(value))


@pytest.mark.parametrize("value", ["", "five", "5 minutes", "5mm", "m5", True, None, [1], "nan"])
def test_rejects_garbage_with_a_useful_message(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_format():
    assert format_duration(math.inf) == "forever"
    assert format_duration(42) == "42s" and format_duration(300) == "5m" and format_duration(5430) == "1h30m30s"
