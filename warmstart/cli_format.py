"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from warmstart.durations import format_duration


def columns(rows: Sequence[Sequence[str]], *, numbers: bool = False, rule: bool = False) -> list[str]:
    """Rows of cells (the first one the header) padded into columns two spaces apart. Left-aligned, or with
    `numbers` the first column left and the others right; `rule` puts a dashed line under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(widths[i]) if numbers and i else cell.ljust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in rows]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def phases_line(phases: dict[str, float]) -> str:
    return " ".join(f"{name} {seconds:.2f}s" for name, seconds in phases.items())


def ps_table(models: list[dict[str, Any]]) -> str:
    header = ("MODEL", "ENGINE", "STATE", "TIER", "REPLICAS", "QUEUE", "UNLOADS IN", "LAST START")
    rows = [header]
    details, problems = [], []
    for m in models:
        replicas = m.get("replicas", [])
        expiries = [r["expires_in_s"] for r in replicas if r.get("expires_in_s") is not None]
        busy = [r for r in replicas if r.get("in_flight")]
        if any(r.get("state") == "warm" for r in replicas) and not expiries and not busy:
            until = "never"
        elif busy:
            until = "busy"
        else:
            until = format_duration(min(expiries)) if expiries else "-"
        state = m.get("state", "?")
        if m.get("problem") and state == "cold":
            state = "cannot start"
            problems.append(f"  {m['id']}: {m['problem']}")
        starting = [r for r in replicas if r.get("state") == "starting"]
        if starting and starting[0].get("phase"):
            state += f" ({starting[0]['phase']})"
        last = m.get("last_start")
        last_text = f"{last['total_s']:.2f}s {last['trigger']} {last['outcome']}" if last else "-"
        tier = "-" if state == "cannot start" else tier_cell(m.get("tier"))
        rows.append((m["id"], m.get("engine", "?"), state, tier, str(len(replicas)),
                     str(m.get("queue_depth", 0)), until, last_text))
        if last and last.get("phases"):
            details.append(f"  {m['id']}: {phases_line(last['phases'])}")
        if m.get("tier"):
            details.append(tier_line(m["id"], m["tier"]))
        if m.get("last_failure") and state.startswith("failed"):
            details.append(f"  {m['id']} failed: {m['last_failure']}")
    lines = columns(rows)
    if problems:
        lines += ["", "models that cannot start, and why:"] + problems
    if details:
        lines += ["", "last cold start by phase, seconds per tier:"] + details
    runtimes = runtime_lines(models)
    if runtimes:
        lines += ["", "pre-initialized runtimes (waiting for a model):"] + runtimes
    return "\n".join(lines)


def tier_cell(tier: dict[str, Any] | None) -> str:
    """Where the model's weights are: loaded, ram (held in RAM, how long still) or disk."""
    if not tier:
        return "-"
    if tier["tier"] == "ram" and tier.get("ram"):
        left = tier["ram"].get("until_s")
        return (f"ram ({tier['ram']['method']}, {'for ever' if left is None else format_duration(left)}"
                f"{', by hand' if tier.get('held_by_hand') else ''})")
    return str(tier["tier"])


def tier_line(model: str, tier: dict[str, Any]) -> str:
    seconds = tier.get("seconds", {})
    line = (f"  {model}: loaded {format_duration(seconds.get('loaded', 0))}, "
            f"ram {format_duration(seconds.get('ram', 0))}"
            f" (RAM cost {tier.get('ram_cost', 0):.4f} at {tier.get('ram_price_per_gib_hour', 0):g}/GiB-hour)")
    if tier.get("last_refusal"):
        line += f"; last demotion refused: {tier['last_refusal']}"
    return line


def runtime_lines(models: list[dict[str, Any]]) -> list[str]:
    """One line per runtime pool (models of one engine interpreter share it)."""
    pools = {}
    for m in models:
        pool = m.get("runtime_pool")
        if pool:
            pools[pool["engine"]] = pool
    return [f"  {name}: {p['ready']} ready, {p['starting']} starting, {p['rss_bytes'] / 2**20:.0f} MiB resident, "
            f"{p['handed_out']} handed out" + (f"; last error: {p['last_error']}" if p.get("last_error") else "")
            for name, p in pools.items()]
