"""The accuracy gate: whether a model's eval against its base is good enough to serve, and whether
`serve` may start a model given what its manifest says. Pure functions of the figures.

The defaults are llama.cpp's published figures for Llama-3-8B Q4_K_M against its F16 (mean KLD 0.031,
same top token 91.9%): a model may be as far from its base as a widely used 4-bit quantization of a
mid-sized model is, no further. For reference, its Q8_0 is at 0.0014 / 97.7%. Small models lose more
to the same type, so their 4-bit quantizations can fail these defaults; the gate is then telling the
truth, and `--max-kld`/`--min-top1` say what a user accepts instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# llama.cpp, Llama-3-8B (F16 base), mean KLD and same-top-token share
PUBLISHED = {"q4_k_m": {"kld": 0.031, "top1": 0.919}, "q8_0": {"kld": 0.0014, "top1": 0.977}}


@dataclass(frozen=True)
class Gate:
    max_kld: float = PUBLISHED["q4_k_m"]["kld"]
    min_top1: float = PUBLISHED["q4_k_m"]["top1"]
    max_score_drop: float = 0.03  # task score, as a share: 4-bit is said to cost 1-3%
    # a drop counts only when chance would make one as large less often than this (McNemar's exact test on
    # the prompts one model got right and the other wrong): 100 prompts cannot tell 3% from noise alone
    significance: float = 0.05

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ScoreChange:
    """The task score of a model against its base's, prompt by prompt (scored prompts only)."""
    prompts: int
    lost: int  # right for the base, wrong for the model
    gained: int  # wrong for the base, right for the model

    @classmethod
    def of(cls, base: Sequence[bool], model: Sequence[bool]) -> ScoreChange:
        pairs = list(zip(base, model, strict=True))
        return cls(len(pairs), sum(b and not m for b, m in pairs), sum(m and not b for b, m in pairs))

    @property
    def drop(self) -> float:
        return (self.lost - self.gained) / self.prompts if self.prompts else 0.0

    @property
    def p_value(self) -> float:
        """Chance of losing at least `lost` of the discordant prompts if neither model were better (one-sided)."""
        n = self.lost + self.gained
        return sum(math.comb(n, k) for k in range(self.lost, n + 1)) / 2 ** n if n else 1.0


def judge(gate: Gate, *, kld: float, top1: float, score: ScoreChange | None = None) -> list[str]:
    """Why the model fails the gate; empty when it passes."""
    reasons = []
    if not kld <= gate.max_kld:  # NaN fails too
        reasons.append(f"mean KLD {kld:.4f} > {gate.max_kld:g}")
    if not top1 >= gate.min_top1:
        reasons.append(f"same top token {top1:.1%} < {gate.min_top1:.1%}")
    if score is not None and score.drop > gate.max_score_drop + 1e-9 and score.p_value < gate.significance:
        reasons.append(f"task score {score.drop:.1%} below the base's (at most {gate.max_score_drop:.1%}; "
                       f"{score.lost} prompts lost, {score.gained} gained, p = {score.p_value:.3f})")
    return reasons


SUMMARY_KEYS = ("passed", "against", "against_sha256", "sha256", "kld", "top1", "ppl_ratio", "agreement", "score",
                "base_score", "prompts", "evaluated_at")


def summary(accuracy: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What an audit record of a start keeps of the model's last eval."""
    return None if accuracy is None else {k: accuracy.get(k) for k in SUMMARY_KEYS}


def refusal(name: str, quantization: Mapping[str, Any] | None, accuracy: Mapping[str, Any] | None,
            allow_unverified: bool) -> str | None:
    """Why `serve` refuses to start the model, or None. Refused: a model whose last eval failed the
    gate, and one quantized by warmstart that was never evaluated; a model that neither was nor
    failed (any model from elsewhere) is served as it always was."""
    if allow_unverified:
        return None
    hint = (f"run `warmstart eval {name} --against BASE`, or set allow_unverified = true in the model's config "
            "to serve it anyway")
    if accuracy is not None and not accuracy.get("passed"):
        why = "; ".join(accuracy.get("reasons") or ["failed"])
        return f"model '{name}' failed its accuracy gate against {accuracy.get('against')} ({why}); {hint}"
    if accuracy is None and quantization is not None:
        return f"model '{name}' was quantized ({quantization.get('type')}) but never evaluated; {hint}"
    return None
