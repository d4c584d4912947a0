"""llama.cpp server's start-up log read as phases, on a real log (xllamacpp 2026.10.11549, SmolLM2, -lv 4)."""

from pathlib import Path

import pytest

from warmstart.engines.llamacpp_log import PhaseClock, error_of, marker_of, stamp_of

LOG = (Path(__file__).parents[2] / "data" / "llama-server-start.log").read_text().splitlines()


def run(lines):
    done, entered = [], []
    clock = PhaseClock(on_done=lambda name, s: done.append((name, round(s, 6))), on_enter=entered.append)
    for line in lines:
        clock.feed(line)
    return done, entered, clock


def test_stamps_are_minutes_seconds_millis_micros_since_the_log_began():
    assert stamp_of("0.04.536.999 I srv    load_model: initializing") == pytest.approx(4.536999)
    assert stamp_of("2.01.000.500 I x") == pytest.approx(121.0005)
    assert stamp_of("\tmirostat = 0") is None and stamp_of("") is None


def test_a_real_start_is_load_kv_init_and_warmup_on_the_servers_own_clock():
    done, entered, clock = run(LOG)
    # first line 0.004184; context 0.542963; thread pool 0.817759 (warm-up 0.817782); listening 4.539693
    assert done == [("load", 0.538779), ("kv_init", 0.274796), ("warmup", 3.721934)]
    assert entered == ["load", "kv_init", "warmup"]
    assert clock.finished


def test_without_warm_up_warmup_is_still_the_decode_before_listening():
    # --no-warmup: the server still decodes two tokens (its context probe) before it listens: warmup, not kv_init
    done, _, _ = run([line for line in LOG if "warming up" not in line])
    assert done == [("load", 0.538779), ("kv_init", 0.274796), ("warmup", 3.721934)]


def test_an_older_log_without_the_thread_pool_line_ends_kv_init_at_warm_up_else_at_the_slots():
    done, _, _ = run([line for line in LOG if "threadpool init" not in line])
    assert done[1:] == [("kv_init", 0.274819), ("warmup", 3.721911)]
    done, _, _ = run([line for line in LOG if "threadpool init" not in line and "warming up" not in line])
    assert [name for name, _ in done] == ["load", "kv_init", "warmup"]
    assert done[1][1] == pytest.approx(4.536999 - 0.542963) and done[2][1] == pytest.approx(4.539693 - 4.536999)


def test_a_missing_marker_merges_its_phase_into_the_next():
    done, _, _ = run([line for line in LOG if "constructing llama_context" not in line])
    assert done == [("kv_init", pytest.approx(0.817759 - 0.004184)), ("warmup", pytest.approx(4.539693 - 0.817759))]


def test_markers_and_errors():
    assert marker_of("0.00.542.963 I llama_context: constructing llama_context") == "load"
    assert marker_of("0.00.1 I slot print_timing: id  1 | task 0 | prompt eval time") is None
    assert error_of("0.00.019.419 E gguf_init_from_reader: failed to read key-value pairs") == \
        "gguf_init_from_reader: failed to read key-value pairs"
    assert error_of("0.00.020.553 E srv    load_model: failed to load model, '/m.gguf'") == \
        "load_model: failed to load model, '/m.gguf'"
    assert [line for line in LOG if error_of(line)] == []
