"""The load test's summary: counts, errors by kind, throughput, and percentiles split warm/cold."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from warmstart.cli_format import columns
from warmstart.loadtest.plan import Plan
from warmstart.loadtest.runner import Outcome
from warmstart.stats import percentile

QUANTILES = (50, 90, 99)


def distribution(values: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values)}
    for q in QUANTILES:
        out[f"p{q}"] = _round(percentile(values, q))
    out["max"] = _round(max(values)) if values else None
    out["mean"] = _round(sum(values) / len(values)) if values else None
    return out


def summarize(outcomes: Sequence[Outcome], plan: Plan, wall_s: float, *, url: str, endpoint: str,
              stream: bool) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    errors = Counter(o.error for o in outcomes if o.error is not None)
    sent = [o for o in outcomes if o.sent is not None]
    by_start: dict[str, Any] = {}
    for start in ("warm", "cold"):
        group = [o for o in ok if o.start == start]
        by_start[start] = {
            "ok": len(group),
            "ttft_s": distribution([o.ttft for o in group if o.ttft is not None]),
            "latency_s": distribution([o.latency for o in group if o.latency is not None]),
            "wait_ms": distribution([o.wait_ms for o in group if o.wait_ms is not None]),
        }
    tokens = sum(o.output_tokens for o in ok)
    refused = [o for o in outcomes if o.status in (429, 503)]
    return {
        "url": url,
        "endpoint": endpoint,
        "stream": stream,
        "wall_s": _round(wall_s),
        "requests": {
            "planned": len(plan.requests), "sent": len(sent), "ok": len(ok),
            "errors": sum(errors.values()), "warm": by_start["warm"]["ok"], "cold": by_start["cold"]["ok"],
            "refused_with_retry_after": sum(1 for o in refused if o.retry_after),
            "refused": len(refused),
        },
        "errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "throughput": {
            "requests_per_s": _round(len(ok) / wall_s) if wall_s > 0 else None,
            "output_tokens_per_s": _round(tokens / wall_s) if wall_s > 0 else None,
            "output_tokens": tokens,
        },
        "ttft_s": distribution([o.ttft for o in ok if o.ttft is not None]),
        "latency_s": distribution([o.latency for o in ok if o.latency is not None]),
        "warm": by_start["warm"],
        "cold": by_start["cold"],
        # how late the client sent requests against the plan: large values mean the client, not the
        # server, was the bottleneck and the replay was not truly open-loop
        "client_lag_s": distribution([o.sent - o.scheduled for o in sent if o.sent is not None]),
        "plan": plan.to_dict(),
        "outcomes": [o.to_dict() for o in outcomes],
    }


def format_summary(summary: dict[str, Any]) -> str:
    req = summary["requests"]
    tp = summary["throughput"]
    lines = [
        f"requests: {req['planned']} planned, {req['sent']} sent, {req['ok']} ok "
        f"({req['warm']} warm, {req['cold']} cold), {req['errors']} errors, in {summary['wall_s']:.1f} s",
        f"throughput: {_fmt(tp['requests_per_s'])} req/s, {_fmt(tp['output_tokens_per_s'])} output tokens/s",
        "",
    ]
    header = ("", "n", "p50", "p90", "p99", "max")
    rows = []
    for label, key, unit in (("ttft", "ttft_s", "s"), ("latency", "latency_s", "s"), ("held", "wait_ms", "ms")):
        for start in ("all", "warm", "cold"):
            if key == "wait_ms" and start == "all":
                continue
            d = summary[key] if start == "all" else summary[start][key]
            rows.append((f"{label} {start} ({unit})", str(d["n"]), *(_fmt(d[f"p{q}"]) for q in QUANTILES),
                         _fmt(d["max"])))
    lines += columns([header, *rows], numbers=True)
    if summary["errors"]:
        lines += ["", "errors by kind:"] + [f"  {n:6d}  {kind}" for kind, n in summary["errors"].items()]
    lag = summary["client_lag_s"]
    if lag["p99"] is not None and lag["p99"] > 0.1:
        lines += ["", f"note: the client sent requests up to {lag['max']:.2f} s late (p99 {lag['p99']:.2f} s); "
                      "it was short of CPU, so the replay was not fully open-loop"]
    notes = summary["plan"]["notes"]
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
