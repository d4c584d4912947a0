"""`warmstart eval`: models against their base on the same inputs, the gate's verdict, and the result
in each model's manifest. The corpus figures come from the model files (llama.cpp in a child
process); the answers from llama-server, either engines started here or a running warmstart's."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from warmstart.config import Config, ModelConfig
from warmstart.errors import StoreError, WarmstartError
from warmstart.quant import answers as ans
from warmstart.quant.gate import Gate, ScoreChange, judge
from warmstart.store.manifest import ManifestStore

EVAL_CTX = 1024  # each engine slot's context while answering the prompts


@dataclass(frozen=True)
class Subject:
    ref: str  # as the user named it
    path: Path
    store_name: str | None  # its manifest's name, where the result is recorded
    served_as: str  # its name on a running server


def locate(ref: str, store: ManifestStore, config: Config | None) -> Subject:
    """A model named by file path, `store:NAME`, a store name or a name in the config."""
    from warmstart.store.sources import resolve_model_path

    name = ref[len("store:"):] if ref.startswith("store:") else ref
    path = Path(ref).expanduser()
    if not ref.startswith("store:") and path.is_file():
        return Subject(ref, path.resolve(), None, path.stem)
    manifest = store.get(name)
    if manifest is not None:
        return Subject(ref, _gguf(Path(manifest.root)), manifest.name, name)
    for model in config.models if config is not None else ():
        if model.name == name and config is not None:
            path = resolve_model_path(model.path, config.server.data_dir)
            in_store = model.path[len("store:"):] if model.path.startswith("store:") else None
            return Subject(ref, _gguf(path), in_store, model.name)
    raise StoreError(f"no model '{ref}': not a file, not in the store ({store.root}) and not in the config; "
                     "see `warmstart models list`")


def _gguf(path: Path) -> Path:
    """A folder holding a GGUF model (a Hugging Face snapshot): that file, as llama.cpp's tools need it."""
    from warmstart.engines.gguf import gguf_in

    held = gguf_in(path) if path.is_dir() else None
    return path if held is None else held


def _divergence(base: Path, models: Sequence[Path], *, text: Path | None, chunks: int | None, threads: int | None,
                progress: Callable[[int, int], None] | None) -> list[dict[str, float]]:
    import subprocess

    argv = [sys.executable, "-m", "warmstart.quant.divergence", str(base), *map(str, models)]
    argv += ["--text", str(text)] if text else []
    argv += ["--chunks", str(chunks)] if chunks else []
    argv += ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: list[str] = []
    error = None
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        try:
            message = json.loads(line)
            if "error" in message:
                error = str(message["error"])
                continue
            done, total = message["progress"]
            if progress is not None:
                progress(done, total)
        except (ValueError, KeyError, TypeError):
            tail = (tail + [line.rstrip()])[-3:]
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise WarmstartError(error or f"measuring the divergence failed (exit {proc.returncode}): {' | '.join(tail)}")
    return json.loads(out)


@contextlib.asynccontextmanager
async def engine(path: Path, data_dir: Path, label: str, parallel: int = 4) -> AsyncIterator[str]:
    """llama-server on `path`, started as a replica would be; yields its OpenAI base URL."""
    from warmstart.engines.base import StartReport
    from warmstart.engines.llamacpp import LlamaCppEngine

    model = ModelConfig(name=label, engine="llamacpp", path=str(path), max_concurrency=parallel,
                        options=MappingProxyType({"n_ctx": EVAL_CTX}))
    proc = await LlamaCppEngine(data_dir).start(model, path, StartReport(), f"eval-{label}")
    try:
        yield str(proc.base_url) + "/v1"
    finally:
        await proc.stop(10.0)


async def _answers(subject: Subject, prompts: Sequence[ans.Prompt], *, url: str | None, data_dir: Path,
                   headers: dict[str, str] | None, progress: Callable[[int, int], None] | None) -> list[str]:
    if url is not None:
        return await ans.answer_all(url, subject.served_as, prompts, headers=headers, progress=progress)
    async with engine(subject.path, data_dir, Path(subject.path).stem) as base_url:
        return await ans.answer_all(base_url, subject.served_as, prompts, progress=progress)


def _prompts_digest(prompts: Sequence[ans.Prompt]) -> str:
    return hashlib.sha256(json.dumps([[p.body, p.references] for p in prompts]).encode()).hexdigest()


async def evaluate(base: Subject, models: Sequence[Subject], *, store: ManifestStore, gate: Gate,
                   prompts: Sequence[ans.Prompt], prompt_file: str, text: Path | None = None,
                   chunks: int | None = None, threads: int | None = None, url: str | None = None,
                   headers: dict[str, str] | None = None, record: bool = True,
                   progress: Callable[[str], Callable[[int, int], None]] | None = None) -> list[dict[str, Any]]:
    """Each model's figures against `base` with the gate's verdict; recorded in the manifests of models in the store."""
    bar = progress or (lambda label: lambda done, total: None)
    began = time.monotonic()
    base_sha = store.digests.digest(base.path).sha256
    figures = await asyncio.to_thread(_divergence, base.path, [m.path for m in models], text=text, chunks=chunks,
                                      threads=threads, progress=bar("corpus"))
    cache = store.root / "answers" / f"{base_sha[:32]}-{_prompts_digest(prompts)[:16]}.json"
    base_answers = _cached(cache) if url is None else None
    if base_answers is None:
        base_answers = await _answers(base, prompts, url=url, data_dir=store.root.parent, headers=headers,
                                      progress=bar(f"answers {base.ref}"))
        if url is None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(base_answers))
    base_score = ans.task_score(base_answers, prompts)
    results = []
    for subject, fig in zip(models, figures, strict=True):
        answers = await _answers(subject, prompts, url=url, data_dir=store.root.parent, headers=headers,
                                 progress=bar(f"answers {subject.ref}"))
        score = ans.task_score(answers, prompts)
        scored = [i for i, p in enumerate(prompts) if p.references]
        change = ScoreChange.of([ans.correct(base_answers[i], prompts[i].references) for i in scored],
                                [ans.correct(answers[i], prompts[i].references) for i in scored])
        reasons = judge(gate, kld=fig["kld"], top1=fig["top1"], score=change if scored else None)
        result = {
            "model": subject.ref, "passed": not reasons, "reasons": reasons,
            "against": base.ref, "against_sha256": base_sha, "sha256": store.digests.digest(subject.path).sha256,
            **fig, "agreement": round(ans.agreement(base_answers, answers), 6),
            "score": None if score is None else round(score, 6),
            "base_score": None if base_score is None else round(base_score, 6),
            "score_lost": change.lost, "score_gained": change.gained, "score_drop_p": round(change.p_value, 6),
            "prompts": len(prompts), "prompt_file": prompt_file, "corpus": str(text) if text else "warmstart corpus",
            "gate": gate.to_dict(), "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - began, 1),
            "examples": [{"prompt": _text_of(p), "base": b, "model": a}
                         for p, b, a in zip(prompts, base_answers, answers, strict=True)
                         if ans.normalize(a) != ans.normalize(b)][:5],
        }
        if record and subject.store_name is not None:
            store.set_accuracy(subject.store_name, result)
        results.append(result)
    return results


def _cached(path: Path) -> list[str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) and all(isinstance(a, str) for a in data) else None


def _text_of(prompt: ans.Prompt) -> str:
    if prompt.chat:
        return str(prompt.body["messages"][-1].get("content", ""))[:200]
    return str(prompt.body["prompt"])[:200]
