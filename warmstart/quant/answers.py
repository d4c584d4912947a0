"""Answers to a prompt set, greedy, from an OpenAI-compatible server: the task score (answers that
contain a reference) and the agreement of two models' answers.

A prompt file is JSON lines, each an OpenAI request body as a request log holds it: `{"messages":
[...]}` for chat or `{"prompt": "..."}` for a completion, with `max_tokens` if wanted, plus an optional
`"reference"` (a string or a list of accepted answers). Sampling fields are overridden: temperature 0,
so both models answer deterministically."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp

from warmstart.errors import WarmstartError

DEFAULT_MAX_TOKENS = 32
_SAMPLING = ("temperature", "top_p", "top_k", "seed", "n", "stream", "model", "logprobs", "top_logprobs")


class PromptFileError(WarmstartError):
    """A prompt file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    body: dict[str, Any]  # the request, less the reference
    references: tuple[str, ...]

    @property
    def chat(self) -> bool:
        return "messages" in self.body


def default_prompts() -> Path:
    return Path(str(resources.files("warmstart.quant").joinpath("data/prompts.jsonl")))


def read_prompts(path: Path, limit: int | None = None) -> list[Prompt]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise PromptFileError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"cannot read prompt file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{path}:{n}: not JSON ({exc.msg})") from None
        shaped = isinstance(raw, dict) and (isinstance(raw.get("messages"), list)
                                            or isinstance(raw.get("prompt"), str))
        if not shaped:
            raise PromptFileError(f"{path}:{n}: expected an OpenAI request body with \"messages\" (a list) or "
                                  "\"prompt\" (a string)")
        ref = raw.pop("reference", [])
        refs = [ref] if isinstance(ref, str) else ref
        if not isinstance(refs, list) or not all(isinstance(r, str) and r.strip() for r in refs):
            raise PromptFileError(f"{path}:{n}: \"reference\" must be a string or a list of non-empty strings")
        body = {k: v for k, v in raw.items() if k not in _SAMPLING}
        body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        out.append(Prompt(body, tuple(refs)))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise PromptFileError(f"prompt file {path} has no prompts")
    return out


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def correct(answer: str, references: Sequence[str]) -> bool:
    """The answer contains one of the references as whole words (case and punctuation ignored)."""
    padded = f" {normalize(answer)} "
    return any(f" {normalize(r)} " in padded for r in references)


def task_score(answers: Sequence[str], prompts: Sequence[Prompt]) -> float | None:
    scored = [correct(a, p.references) for a, p in zip(answers, prompts, strict=True) if p.references]
    return sum(scored) / len(scored) if scored else None


def agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of prompts both models answered alike (same words, case and punctuation ignored)."""
    return sum(normalize(x) == normalize(y) for x, y in zip(a, b, strict=True)) / len(a)


async def answer_all(base_url: str, model: str, prompts: Sequence[Prompt], *, concurrency: int = 4,
                     headers: dict[str, str] | None = None, timeout: float = 300.0,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Each prompt's answer from the server at `base_url` (…/v1), greedy."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(session: aiohttp.ClientSession, prompt: Prompt) -> str:
        nonlocal done
        body = {**prompt.body, "model": model, "temperature": 0.0, "seed": 0, "stream": False}
        path = "/chat/completions" if prompt.chat else "/completions"
        async with gate, session.post(base_url.rstrip("/") + path, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                detail = data.get("error", {}).get("message") if isinstance(data, dict) else data
                raise WarmstartError(f"{model}: HTTP {resp.status} from {base_url}{path}: {detail}")
        done += 1
        if progress is not None:
            progress(done, len(prompts))
        choice = data["choices"][0]
        return str(choice["message"]["content"] if prompt.chat else choice["text"]) or ""

    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        try:
            return list(await asyncio.gather(*(one(session, p) for p in prompts)))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise WarmstartError(f"{model}: no answer from {base_url} ({type(exc).__name__}: {exc}); is the server "
                                 "running, and does it serve this model?") from None
