import pytest

from warmstart.loadtest.plan import WORDS, Limits, plan, prompt_margin, prompt_text
from warmstart.loadtest.trace import TraceRequest


def trace(*rows):
    return [TraceRequest(at, p, o) for at, p, o in rows]


def test_the_window_is_selected_and_stretched_by_the_speedup():
    t = trace((0, 10, 5), (1, 10, 5), (2, 10, 5), (5, 10, 5), (9, 10, 5))
    p = plan(t, model="m", speedup=2, start=1, duration=2, max_requests=100, limits=Limits())
    # trace window [1, 5): seconds 1 and 2, sent at (t - 1) / 2
    assert [(r.at, r.model) for r in p.requests] == [(0.0, "m"), (0.5, "m")]
    slow = plan(t, model="m", speedup=0.5, start=0, duration=10, max_requests=100, limits=Limits())
    assert [r.at for r in slow.requests] == [0, 2, 4]  # trace seconds 0..5 over 10 s


def test_prompts_and_outputs_are_capped_to_the_context_and_the_plan_says_so():
    t = trace((0, 5000, 900), (1, 100, 10), (2, 3000, 3))
    p = plan(t, model="m", speedup=1, start=0, duration=10, max_requests=10,
             limits=Limits(context_length=2048, max_output_tokens=256))
    first, second, third = p.requests
    assert first.max_tokens == 256 and second.max_tokens == 10 and third.max_tokens == 3
    assert first.prompt_tokens == 2048 - 256 - prompt_margin(2048)
    assert third.prompt_tokens == 2048 - 3 - prompt_margin(2048)
    assert second.prompt_tokens == 100  # fits: sent as in the trace
    for r in p.requests:
        assert r.prompt_tokens + r.max_tokens <= 2048 - prompt_margin(2048)
    assert (p.prompt_capped, p.output_capped) == (2, 1)
    assert any("2 of 3 prompts were cut" in n and "2048" in n for n in p.notes)
    assert any("1 of 3 max_tokens were capped at 256" in n for n in p.notes)


def test_a_small_context_halves_the_output_cap_and_a_user_cap_applies():
    p = plan(trace((0, 1000, 1000)), model="m", speedup=1, start=0, duration=1, max_requests=1,
             limits=Limits(context_length=256, max_prompt_tokens=50, max_output_tokens=999))
    [r] = p.requests
    assert r.max_tokens == 128 and r.prompt_tokens == 50
    assert any("--max-prompt-tokens 50" in n for n in p.notes)


def test_max_requests_bounds_the_plan_and_is_noted():
    p = plan(trace(*[(i * 0.1, 1, 1) for i in range(50)]), model="m", speedup=1, start=0, duration=100,
             max_requests=20, limits=Limits())
    assert len(p.requests) == 20 and p.truncated_at == 50
    assert any("only the first 20" in n for n in p.notes)


def test_zero_token_rows_still_send_a_valid_request():
    [r] = plan(trace((0, 0, 0)), model="m", speedup=1, start=0, duration=1, max_requests=1,
               limits=Limits()).requests
    assert r.prompt_tokens == 1 and r.max_tokens == 1


def test_speedup_must_be_positive():
    with pytest.raises(ValueError):
        plan(trace((0, 1, 1)), model="m", speedup=0, start=0, duration=1, max_requests=1, limits=Limits())


def test_prompt_text_has_the_word_count_and_differs_by_seed_from_the_start():
    assert len(prompt_text(300, 1).split()) == 300
    assert prompt_text(300, 1) == prompt_text(300, 1)
    firsts = {" ".join(prompt_text(50, seed).split()[:3]) for seed in range(100)}
    assert len(firsts) > 90  # no shared prefix for an engine's prompt cache to reuse
    assert set(prompt_text(500, 7).split()) <= set(WORDS)
