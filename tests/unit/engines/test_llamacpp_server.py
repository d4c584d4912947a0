"""llama-server's flags for a model's options, and a start read from a real router's log (llama-server
b11669 from Debian's llama.cpp-tools, router mode, SmolLM2, -lv 4)."""

from pathlib import Path

import pytest

from warmstart.engines.base import StartReport
from warmstart.engines.llamacpp_router import _Instance
from warmstart.engines.llamacpp_server import StartLog, server_flags

ROUTER_LOG = (Path(__file__).parents[2] / "data" / "llama-server-router.log").read_bytes()
START_LOG = (Path(__file__).parents[2] / "data" / "llama-server-start.log").read_bytes()


def value(flags, flag):
    return flags[flags.index(flag) + 1]


def test_the_options_become_the_flags_that_mean_what_the_worker_sets():
    flags = server_flags({"n_threads": 3, "repack": False, "warmup": False, "flash_attn": True, "seed": 7,
                          "use_mmap": False, "chat_format": "chatml"}, parallel=4, ctx=512)
    assert value(flags, "--parallel") == "4" and value(flags, "--ctx-size") == "2048"  # split across slots
    assert "--no-kv-unified" in flags and value(flags, "--fit") == "off"
    assert value(flags, "--threads") == value(flags, "--threads-batch") == "3"
    assert {"--no-repack", "--no-warmup", "--metrics", "--slots", "--jinja"} <= set(flags)
    assert value(flags, "--flash-attn") == "on" and value(flags, "--seed") == "7"
    assert value(flags, "--load-mode") == "none" and value(flags, "--chat-template") == "chatml"
    assert value(flags, "--log-verbosity") == "4"  # the phase markers need it
    plain = server_flags({}, parallel=1, ctx=4096)
    assert "--no-repack" not in plain and "--no-warmup" not in plain and "--load-mode" not in plain


def test_a_routers_log_gives_its_instances_phases_and_port_and_exit():
    report = StartReport()
    instance = _Instance("smol")
    start = StartLog(report, began=100.0, pick=instance.pick)
    start.feed(ROUTER_LOG, now=101.0)
    assert instance.port == start.port == 38835 and start.listening_at == 101.0
    phases = dict(report.phases)
    assert list(phases) == ["spawn", "load", "kv_init", "warmup"]
    # the instance's own clock: first line 0.017250, context 1.035383, thread pool 1.329927 (warm-up 1.329989),
    # listening 1.616775
    assert phases["load"] == pytest.approx(1.035383 - 0.017250)
    assert phases["kv_init"] == pytest.approx(1.329927 - 1.035383)
    assert phases["warmup"] == pytest.approx(1.616775 - 1.329927)
    assert phases["spawn"] == pytest.approx(1.0)  # until its first line was read
    assert instance.exit_code == 0


def test_the_phases_and_ready_add_up_to_the_start_however_late_the_log_is_read():
    # the first line (stamp 0.004184) read 0.2 s after the spawn; the rest (listening at 4.539693) read
    # in one go at 106.0, well after the server listened: ready runs from when it listened, not from the read
    report = StartReport()
    start = StartLog(report, began=100.0)
    first, rest = START_LOG.split(b"\n", 1)
    start.feed(first + b"\n", now=100.2)
    start.feed(rest, now=106.0)
    assert start.port is not None and start.listening_at == pytest.approx(100.2 + 4.539693 - 0.004184)
    healthy = 105.0
    report.done("ready", healthy - start.listening_at)
    phases = dict(report.phases)
    assert list(phases) == ["spawn", "load", "kv_init", "warmup", "ready"]
    assert phases["spawn"] == pytest.approx(0.2)
    assert sum(phases.values()) == pytest.approx(healthy - 100.0)


def test_another_models_instance_is_not_read_as_this_ones():
    report = StartReport()
    start = StartLog(report, began=0.0, pick=_Instance("other").pick)
    start.feed(ROUTER_LOG, now=1.0)
    assert report.phases == [] and start.port is None


def test_a_model_whose_settings_changed_since_its_router_started_starts_without_it(tmp_path):
    import dataclasses

    from warmstart.config_loader import parse_config
    from warmstart.engines.llamacpp import LlamaCppEngine

    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF")
    model = parse_config({"server": {"data_dir": str(tmp_path)}, "models": [
        {"name": "m", "engine": "llamacpp", "path": str(weights),
         "options": {"server": "llama-server", "router": True, "n_ctx": 512}}]}, base_dir=tmp_path).models[0]
    engine = LlamaCppEngine(tmp_path, models=(model,))
    assert engine.router_for(model) is engine.routers["m"]
    assert engine.router_for(dataclasses.replace(model, keep_alive=5.0)) is engine.routers["m"]  # not a flag
    # a reload gave it a new context: the router would load it with the old flags
    changed = dataclasses.replace(model, options={**model.options, "n_ctx": 1024})
    assert engine.router_for(changed) is None
    assert engine.router_for(dataclasses.replace(model, name="other")) is None


def test_a_start_runs_no_warm_up_unless_the_model_sets_one() -> None:
    # llama-server decodes two tokens before it listens anyway (its context probe): a warm-up would repeat that
    from warmstart.engines.llamacpp_server import start_options

    assert start_options({"n_ctx": 512}) == {"n_ctx": 512, "warmup": False}
    assert "--no-warmup" in server_flags(start_options({}), parallel=1, ctx=512)
    assert start_options({"warmup": True}) == {"warmup": True}  # what the model sets wins
    assert "--no-warmup" not in server_flags(start_options({"warmup": True}), parallel=1, ctx=512)
