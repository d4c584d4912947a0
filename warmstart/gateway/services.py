"""What the gateway's routes share: settings, the pool, metrics, clock, the relay, the audit log and the
warming runner, with the labelled metric children requests count into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warmstart.clock import Clock
from warmstart.config import Config
from warmstart.gateway.access import AccessLog
from warmstart.gateway.afterwards import Afterwards
from warmstart.gateway.relay import Relay
from warmstart.pool.pool import Pool
from warmstart.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from warmstart.catalog import Catalog
    from warmstart.telemetry.audit import AuditLog
    from warmstart.warming.runner import WarmingRunner


@dataclass
class Services:
    config: Config
    pool: Pool
    metrics: Metrics
    clock: Clock
    relay: Relay | None = None
    started_wall: float = 0.0
    audit: AuditLog | None = None
    warming: WarmingRunner | None = None  # when [warming] is enabled
    access: AccessLog | None = None  # the access log, unless server.access_log is "off"
    catalog: Catalog | None = None  # the models served and the settings in force, changed while running
    afterwards: Afterwards = field(default_factory=Afterwards)  # what an answered request's client need not wait for

    def __post_init__(self) -> None:
        # labelled metric children, looked up once per label set rather than on every request
        self._requests: dict[tuple[str, str, int, str | None], Any] = {}
        self._ttft: dict[tuple[str, str, str | None], Any] = {}
        self._tokens: dict[str, tuple[Any, Any]] = {}

    def counted(self, model: str, start: str, status: int, node: str | None = None) -> Any:
        """`node`: the node of the replica that answered (many machines), None when none did or on one box."""
        key = (model, start, status, node)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.metrics.requests.labels(model, start, str(status),
                                                                       *self.metrics.at(node))
        return child

    def ttft(self, model: str, start: str, node: str | None = None) -> Any:
        key = (model, start, node)
        child = self._ttft.get(key)
        if child is None:
            child = self._ttft[key] = self.metrics.ttft_seconds.labels(model, start, *self.metrics.at(node))
        return child

    def tokens(self, model: str) -> tuple[Any, Any]:
        """The model's prompt and generated token counters."""
        pair = self._tokens.get(model)
        if pair is None:
            pair = self._tokens[model] = (self.metrics.prompt_tokens.labels(model),
                                          self.metrics.generation_tokens.labels(model))
        return pair
