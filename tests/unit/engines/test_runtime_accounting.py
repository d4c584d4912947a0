"""The runtime gauges and counters (engines.runtime.account_runtimes): a model's retired router, draining after
a reload, and its new one share a name; their gauges add up instead of the last one written winning."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warmstart.engines.runtime import account_runtimes
from warmstart.telemetry.metrics import Metrics


@dataclass
class PoolBooks:
    """What account_runtimes reads and writes of a runtime pool (a RuntimePool or a llama-server router)."""

    name: str
    ready: int
    starting: int
    rss_bytes: int
    handed_out: int = 0
    size: int = 1
    accounted_to: float | None = None
    handoffs_counted: int = 0
    last_stats: dict[str, Any] | None = field(default=None)

    def stats(self) -> dict[str, Any]:
        return {"ready": self.ready, "starting": self.starting, "rss_bytes": self.rss_bytes}


@dataclass
class EngineBooks:
    pools: list[PoolBooks]

    def runtime_pools(self) -> list[PoolBooks]:
        return self.pools


def test_a_retired_and_a_new_router_of_one_model_add_up_in_the_gauges_and_counters():
    metrics = Metrics()
    old = PoolBooks("llama-server router chat", ready=1, starting=0, rss_bytes=300, handed_out=2)
    new = PoolBooks("llama-server router chat", ready=0, starting=1, rss_bytes=100, handed_out=1)
    other = PoolBooks("vllm runtime", ready=2, starting=0, rss_bytes=1000)
    engines = [EngineBooks([old, new]), EngineBooks([other])]
    account_runtimes(engines, metrics, now=10.0)
    account_runtimes(engines, metrics, now=20.0)  # 10 s with both alive

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    label = "llama-server router chat"
    runtime_label = "engine"
    assert value("warmstart_runtime_rss_bytes", **{runtime_label: label}) == 400  # both, not the last one
    assert value("warmstart_runtime_rss_bytes", **{runtime_label: "vllm runtime"}) == 1000
    ready = {runtime_label: label, "state": "ready"}
    starting = {runtime_label: label, "state": "starting"}
    assert (value("warmstart_runtimes", **ready), value("warmstart_runtimes", **starting)) == (1, 1)
    # the counters already added up: one runtime-second per live runtime per second, every hand-off once
    assert value("warmstart_runtime_seconds_total", **{runtime_label: label}) == 20
    assert value("warmstart_runtime_handoffs_total", **{runtime_label: label}) == 3
    # the old router closes: the name's gauges are the new one's alone
    old.ready, old.rss_bytes = 0, 0
    account_runtimes(engines, metrics, now=30.0)
    assert value("warmstart_runtime_rss_bytes", **{runtime_label: label}) == 100
