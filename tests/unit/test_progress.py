"""The progress display of long commands: what it says on a terminal and in a log, and when it keeps quiet."""

from __future__ import annotations

import io

import pytest

from warmstart.progress import Progress, say, step


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("WARMSTART_PROGRESS", raising=False)


def test_in_a_log_a_new_step_is_said_at_once_and_the_same_step_at_most_every_few_seconds():
    out, clock = io.StringIO(), Clock()
    with Progress("bench serve", out=out, now=clock, tick=False, every=5.0) as progress:
        step("a cold start")
        assert out.getvalue() == ""  # a quick command says nothing: not during the first second
        clock.t += 1.5
        step("warm requests", 1, 200)
        for i in range(2, 50):  # counts moving within the same step, 0.1 s apart: not a line each
            clock.t += 0.1
            step("warm requests", i, 200)
        clock.t += 1.0
        step("warm requests", 60, 200)
        progress.line("cold start: 0.41 s")
    lines = out.getvalue().splitlines()
    assert lines == ["bench serve: warm requests 1/200 (0%) (1.5 s)",
                     "bench serve: warm requests 60/200 (30%) (7.3 s)",
                     "cold start: 0.41 s"]


def test_on_a_terminal_one_line_is_rewritten_in_place_and_ended_when_done():
    out, clock = Terminal(), Clock()
    with Progress("simulate", out=out, now=clock, tick=False, after=0.0):
        step("policy 1/2 default, models", 3, 12)
        clock.t += 0.5
        step("policy 2/2 oracle, models", 1_500, 12_000)
    text = out.getvalue()
    assert text == ("\rsimulate: policy 1/2 default, models 3/12 (25%) (0.0 s)\x1b[K"
                    "\rsimulate: policy 2/2 oracle, models 1,500/12,000 (12%) (0.5 s)\x1b[K\n")


def test_without_an_open_display_steps_go_nowhere_and_the_environment_silences_or_shows_everything(monkeypatch,
                                                                                                  capsys):
    step("nobody listens")
    say("a line that stays")
    assert capsys.readouterr().err == "a line that stays\n"

    monkeypatch.setenv("WARMSTART_PROGRESS", "off")
    out = io.StringIO()
    with Progress("warm", out=out, tick=False, after=0.0) as progress:
        step("starting, load")
        progress.line("done")
    say("nor this")
    assert out.getvalue() == "" and capsys.readouterr().err == ""

    monkeypatch.setenv("WARMSTART_PROGRESS", "always")
    with Progress("warm", out=out, tick=False) as progress:  # the first second included
        step("starting, load")
    assert out.getvalue().startswith("warm: starting, load (")


def test_the_ticker_repeats_a_silent_step_so_a_long_one_is_seen_to_move():
    out, clock = io.StringIO(), Clock()
    progress = Progress("bench vllm-start", out=out, now=clock, after=0.0, every=0.01)
    with progress:
        step("vLLM's own server, cold: tiny")
        clock.t += 30
        for _ in range(500):  # the ticker thread says it again once its interval has passed
            if out.getvalue().count("\n") >= 2:
                break
            progress._stop.wait(0.01)
    assert out.getvalue().splitlines()[:2] == ["bench vllm-start: vLLM's own server, cold: tiny (0.0 s)",
                                               "bench vllm-start: vLLM's own server, cold: tiny (30.0 s)"]


def test_a_bar_of_steps_shows_its_counts_and_ends_its_line(monkeypatch):
    from warmstart.quant.convert import bar

    out = Terminal()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setenv("WARMSTART_PROGRESS", "always")
    show = bar("quantize q8_0")
    for i in range(1, 4):
        show(i, 3)
    lines = out.getvalue().split("\r")[1:]
    assert lines[0].startswith("quantize q8_0: 1/3 (33%) (") and out.getvalue().endswith("\n")
