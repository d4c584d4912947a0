from __future__ import annotations

import datetime as dt

import pytest

from warmstart.policy.observation import Observation
from warmstart.policy.schedule import SchedulePolicy, occurrences, parse_window, zone

OSLO = zone("Europe/Oslo")


def local(*args: int) -> float:
    return dt.datetime(*args, tzinfo=OSLO).timestamp()


@pytest.mark.parametrize("text, start, seconds, days", [
    ("07:55-18:00 Mon-Fri", 475, (18 * 60 - 475) * 60, (0, 1, 2, 3, 4)),
    ("03:00 for 10m", 180, 600, tuple(range(7))),
    ("Sat,Sun 10:00-12:00", 600, 7200, (5, 6)),
    ("22:00-02:00 daily", 1320, 4 * 3600, tuple(range(7))),
    ("at 23:30 for 1h weekdays", 1410, 3600, (0, 1, 2, 3, 4)),
    ("Fri-Mon 00:00-24:00", 0, 86400, (0, 4, 5, 6)),
])
def test_windows_parse(text, start, seconds, days):
    w = parse_window(text)
    assert (w.start_min, w.duration, w.days) == (start, seconds, days)


@pytest.mark.parametrize("text", ["", "7-18", "25:00-26:00", "07:61-08:00", "03:00 for ever", "Mon Tue 03:00 for 1m",
                                  "03:00 for 0s", "Mox 03:00 for 1m"])
def test_bad_windows_say_what_is_wrong(text):
    with pytest.raises(ValueError):
        parse_window(text)


def test_office_hours_in_oslo_keep_local_time_across_daylight_saving():
    w = parse_window("07:55-18:00 Mon-Fri")
    # the week in which Norway moves its clocks (Sunday 31 March 2024)
    got = occurrences(w, OSLO, local(2024, 3, 29, 0, 0), local(2024, 4, 2, 0, 0))
    assert got == [(local(2024, 3, 29, 7, 55), local(2024, 3, 29, 18, 0)),
                   (local(2024, 4, 1, 7, 55), local(2024, 4, 1, 18, 0))]
    # 07:55 is 06:55 UTC in winter and 05:55 UTC in summer
    assert dt.datetime.fromtimestamp(got[0][0], dt.UTC).hour == 6
    assert dt.datetime.fromtimestamp(got[1][0], dt.UTC).hour == 5


def test_the_policy_warms_one_cold_start_and_a_tick_ahead_of_the_window():
    policy = SchedulePolicy((parse_window("07:55-18:00 Mon-Fri"), parse_window("03:00 for 10m")), OSLO, lead=5.0)
    now = local(2024, 4, 1, 7, 0)  # a Monday
    plan, _ = policy.decide(Observation("m", cold_start_s=40.0), None, now)
    starts = sorted((s.start, s.end) for s in plan.spans if s.end > now)
    assert (local(2024, 4, 1, 7, 55) - 45.0, local(2024, 4, 1, 18, 0)) in starts
    assert (local(2024, 4, 2, 3, 0) - 45.0, local(2024, 4, 2, 3, 10)) in starts
    assert all(s.trigger == "schedule" for s in plan.spans)
    assert now < plan.review_at <= local(2024, 4, 1, 7, 55) - 45.0
    # Saturday: only the nightly window
    plan, _ = policy.decide(Observation("m", cold_start_s=40.0), None, local(2024, 4, 6, 4, 0))
    assert all(dt.datetime.fromtimestamp(s.end, OSLO).strftime("%H:%M") in ("03:10", "18:00") for s in plan.spans)
    assert not [s for s in plan.spans if local(2024, 4, 6, 4) < s.start < local(2024, 4, 7, 23)
                and dt.datetime.fromtimestamp(s.end, OSLO).strftime("%H:%M") == "18:00"]
