"""A schedule on virtual time through the replay of the pool: warm when the window opens, let go after."""

from __future__ import annotations

import datetime as dt

import numpy as np

from warmstart.policy.controller import Controller
from warmstart.policy.schedule import SchedulePolicy, parse_window, zone
from warmstart.sim.replay import replay_model

OSLO = zone("Europe/Oslo")


def at(day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(2024, 4, day, hour, minute, tzinfo=OSLO).timestamp()


def test_office_hours_are_warm_from_the_first_minute_and_cost_only_the_window():
    policy = SchedulePolicy((parse_window("07:55-18:00 Mon-Fri"),), OSLO, lead=5.0)
    # Monday 1 April to Sunday 7 April 2024: a few requests each day, some inside the window
    arrivals = np.array(sorted([at(d, 7, 55) + 1 for d in range(1, 6)] + [at(d, 12) for d in range(1, 8)]
                               + [at(d, 20) for d in range(1, 8)]))
    out = replay_model("m", arrivals, start=at(1, 0), end=at(8, 0), cold_start=60.0, keep_alive=120.0,
                       controller=Controller([policy]), log_starts=True)
    cold = set(out.cold_times.tolist())
    for d in range(1, 6):
        assert at(d, 7, 55) + 1 not in cold and at(d, 12) not in cold  # weekdays: warm from 07:55
        assert at(d, 20) in cold  # the evening is outside the window
    assert at(6, 12) in cold and at(7, 12) in cold  # the weekend is not scheduled
    schedule_starts = [t for t, trigger in out.start_log if trigger == "schedule"]
    assert schedule_starts == [at(d, 7, 55) - 65.0 for d in range(1, 6)]  # one cold start and a tick ahead
    window = at(1, 18) - at(1, 7, 55) + 65.0
    # loaded: five windows, plus a cold start and the keep-alive for each of the other nine requests
    assert out.loaded_s == 5 * window + 9 * (60.0 + 120.0)
