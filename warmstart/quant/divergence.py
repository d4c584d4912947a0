"""How far a model's next-token distributions are from a base model's over a text, measured as
llama-perplexity --kl-divergence does: mean KL(base || model), the share of positions where both put
the same token first, and each one's perplexity. All models are loaded at once and given the same
chunks. Run as `python -m warmstart.quant.divergence BASE MODEL... [--text FILE]`, which prints JSON:
the eval runs it in a child process, so llama.cpp's memory is returned when it ends."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

N_CTX = 512  # llama-perplexity's default context for --kl-divergence


@dataclass(frozen=True)
class Divergence:
    positions: int
    kld: float  # mean KL divergence, nats
    kld_p99: float
    top1: float  # share of positions with the same most likely token
    ppl_base: float
    ppl: float

    @property
    def ppl_ratio(self) -> float:
        return self.ppl / self.ppl_base

    def to_dict(self) -> dict[str, float]:
        return {**{k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()},
                "ppl_ratio": round(self.ppl_ratio, 6)}


def default_text() -> str:
    return resources.files("warmstart.quant").joinpath("data/corpus.txt").read_text()


def _stats(base_lp: np.ndarray, lp: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per scored position: KL(base || model), same top token, the model's NLL of the actual next token."""
    kld = (np.exp(base_lp) * (base_lp - lp)).sum(axis=-1)
    same = base_lp.argmax(axis=-1) == lp.argmax(axis=-1)
    nll = -lp[np.arange(len(targets)), targets]
    return np.maximum(kld, 0.0), same, nll


def measure(base: Path, models: list[Path], text: str, *, n_ctx: int = N_CTX, max_chunks: int | None = None,
            threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> list[Divergence]:
    from warmstart.quant.ggml import GGMLError
    from warmstart.quant.logits import Model, chunks, log_softmax

    loaded = [Model(p, n_ctx=n_ctx, threads=threads) for p in [base, *models]]
    try:
        ref = loaded[0]
        if any(m.n_vocab != ref.n_vocab for m in loaded):
            raise GGMLError("the models have different vocabularies; compare a model with its own base")
        tokens = ref.tokenize(text)
        n = ref.n_ctx
        todo = list(chunks(tokens, n, ref.bos if ref.add_bos or ref.bos >= 0 else None, max_chunks))
        if not todo:
            raise GGMLError(f"the text is {len(tokens)} tokens, fewer than one chunk of {n}; give a longer text")
        first = n // 2  # the first half of a chunk is context only
        acc: list[list[np.ndarray]] = [[] for _ in models]
        base_nll = []
        for i, chunk in enumerate(todo):
            targets = chunk[first + 1:]
            base_lp = log_softmax(ref.logits(chunk)[first:-1])
            base_nll.append(-base_lp[np.arange(len(targets)), targets])
            for j, m in enumerate(loaded[1:]):
                acc[j].append(np.stack(_stats(base_lp, log_softmax(m.logits(chunk)[first:-1]), targets)))
            if progress is not None:
                progress(i + 1, len(todo))
        ppl_base = float(np.exp(np.concatenate(base_nll).mean()))
        out = []
        for parts in acc:
            kld, same, nll = np.concatenate(parts, axis=1)
            out.append(Divergence(positions=int(kld.size), kld=float(kld.mean()), kld_p99=float(np.quantile(kld, 0.99)),
                                  top1=float(same.mean()), ppl_base=ppl_base, ppl=float(np.exp(nll.mean()))))
        return out
    finally:
        for m in loaded:
            m.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warmstart.quant.divergence")
    parser.add_argument("base")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--text", help="a UTF-8 text file (default: the corpus shipped with warmstart)")
    parser.add_argument("--ctx", type=int, default=N_CTX)
    parser.add_argument("--chunks", type=int, help="score at most this many chunks")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    text = Path(args.text).read_text() if args.text else default_text()

    def progress(done: int, total: int) -> None:
        print(json.dumps({"progress": [done, total]}), file=sys.stderr, flush=True)

    from warmstart.errors import WarmstartError

    try:
        result = measure(Path(args.base), [Path(m) for m in args.models], text, n_ctx=args.ctx,
                         max_chunks=args.chunks, threads=args.threads, progress=progress)
    except WarmstartError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr, flush=True)
        return 1
    print(json.dumps([d.to_dict() for d in result]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
