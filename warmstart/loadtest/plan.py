"""Which requests a replay sends, when, and how big: a pure function of the trace and the limits.

A trace's token counts come from other models and services (Azure's code and conversation
services saw prompts of up to 14,000 tokens); a small local model's context is far shorter. So each
request is capped to what the model can take, and the plan counts and says what it cut.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from warmstart.loadtest.trace import TraceRequest

# Short common English words: with a leading space each is one token in the BPE vocabularies of the
# models warmstart embeds (checked against SmolLM2's tokenizer in the tests), so N words are about N tokens.
WORDS = (
    "the of and to in is it you that he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part"
).split()
DEFAULT_MAX_OUTPUT = 256
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}  # --endpoint: its path


@dataclass(frozen=True)
class Limits:
    context_length: int | None = None  # the model's, as the server reports it; None: unknown, no cap
    max_prompt_tokens: int | None = None  # the user's cap
    max_output_tokens: int = DEFAULT_MAX_OUTPUT


@dataclass(frozen=True)
class Planned:
    index: int
    at: float  # seconds after the replay begins
    model: str
    prompt_tokens: int  # as sent (approximately: words)
    max_tokens: int  # as sent
    trace_prompt_tokens: int
    trace_output_tokens: int


@dataclass(frozen=True)
class Plan:
    requests: tuple[Planned, ...]
    speedup: float
    start: float
    duration: float
    limits: Limits
    prompt_capped: int = 0
    output_capped: int = 0
    truncated_at: int | None = None  # --max-requests cut the window short
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {
            "requests": len(self.requests), "speedup": self.speedup, "start_s": self.start,
            "duration_s": self.duration, "context_length": self.limits.context_length,
            "max_prompt_tokens": self.limits.max_prompt_tokens, "max_output_tokens": self.limits.max_output_tokens,
            "prompt_capped": self.prompt_capped, "output_capped": self.output_capped,
            "truncated_at": self.truncated_at, "notes": list(self.notes),
        }


def prompt_margin(context_length: int) -> int:
    """Tokens kept free of the prompt: the words-to-tokens estimate is approximate, and templates add some."""
    return 16 + context_length // 10


def plan(trace: Sequence[TraceRequest], *, model: str, speedup: float, start: float, duration: float,
         max_requests: int, limits: Limits) -> Plan:
    """Requests of the trace window [start, start + duration * speedup), at their times divided by `speedup`."""
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    end = start + duration * speedup
    window = [r for r in trace if start <= r.at < end]
    truncated = None
    if len(window) > max_requests:
        truncated = len(window)
        window = window[:max_requests]
    ctx = limits.context_length
    out_cap = limits.max_output_tokens if ctx is None else min(limits.max_output_tokens, max(1, ctx // 2))
    planned, prompt_capped, output_capped = [], 0, 0
    for i, r in enumerate(window):
        out = max(1, min(r.output_tokens, out_cap))
        output_capped += out < r.output_tokens
        room = r.prompt_tokens
        if ctx is not None:
            room = min(room, ctx - out - prompt_margin(ctx))
        if limits.max_prompt_tokens is not None:
            room = min(room, limits.max_prompt_tokens)
        prompt = max(1, room)
        prompt_capped += prompt < r.prompt_tokens
        planned.append(Planned(i, (r.at - start) / speedup, r.model or model, prompt, out,
                               r.prompt_tokens, r.output_tokens))
    notes = []
    if prompt_capped:
        why = []
        if ctx is not None:
            why.append(f"the model's context of {ctx} tokens less the output and a margin of {prompt_margin(ctx)}")
        if limits.max_prompt_tokens is not None:
            why.append(f"--max-prompt-tokens {limits.max_prompt_tokens}")
        notes.append(f"{prompt_capped} of {len(planned)} prompts were cut to fit " + " and ".join(why))
    if output_capped:
        notes.append(f"{output_capped} of {len(planned)} max_tokens were capped at {out_cap} "
                     f"(--max-output-tokens {limits.max_output_tokens}"
                     + (f", at most half the context of {ctx}" if ctx is not None else "") + ")")
    if truncated is not None:
        notes.append(f"the window holds {truncated} requests; only the first {max_requests} are sent (--max-requests)")
    notes.append("prompts are common English words, about one token each; a model may stop before max_tokens "
                 "at its end of sequence, so output tokens are counted as streamed")
    return Plan(tuple(planned), speedup, start, duration, limits, prompt_capped, output_capped, truncated,
                tuple(notes))


def prompt_text(tokens: int, seed: int) -> str:
    """About `tokens` tokens of words, different per seed from the first word on (no shared prefix to cache)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(max(1, tokens)))
