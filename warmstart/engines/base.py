"""The engine protocol: start a model in its own process with phase reports, serve it over HTTP, stop it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from warmstart.config import ModelConfig

if TYPE_CHECKING:
    from warmstart.engines.runtime import RuntimePool

# Phase names shared by every engine, in the order a start goes through them. VERIFY comes first: the
# model's files found (fetched on first use), checked against the store's manifest and for completeness.
VERIFY = "verify"
SPAWN, IMPORT, LOAD, KV_INIT, COMPILE, WARMUP, READY = (
    "spawn", "import", "load", "kv_init", "compile", "warmup", "ready",
)
# vLLM: config, engine-core and worker processes up; handing a model to a pre-initialized runtime
ENGINE_INIT, HANDOFF = "engine_init", "handoff"


@dataclass(frozen=True)
class Capabilities:
    chat: bool
    completions: bool = True
    sleep: bool = False
    context_length: int | None = None
    notes: tuple[str, ...] = ()
    # the most bytes of text one token can stand for (None: unknown); with the context length it
    # bounds the prompt a model can take, so a far larger one is refused before any engine reads it
    max_token_bytes: int | None = None
    # request fields the engine would accept and silently ignore: refused with a 400 naming them
    unsupported_fields: tuple[str, ...] = ()
    # the most choices (`n`) one request may ask for, and with greedy sampling (temperature 0)
    max_choices: int = 1
    max_greedy_choices: int | None = None  # None: max_choices
    # the message content part types it reads (None: whatever the engine is sent)
    content_types: tuple[str, ...] | None = None
    # serves /v1/embeddings (a model configured as an embedding model)
    embeddings: bool = False
    # answers `stream_options.include_usage` with a usage event of its own, which the gateway may then ask for
    # (and take out of the stream) to count every stream's tokens
    stream_usage: bool = False
    # the engine as its refusals name it ("llama.cpp", "vLLM"); empty: not named
    engine: str = ""

    def to_dict(self) -> dict:
        return {
            "chat": self.chat,
            "completions": self.completions,
            "sleep": self.sleep,
            "context_length": self.context_length,
            "embeddings": self.embeddings,
            "notes": list(self.notes),
        }


@dataclass
class StartReport:
    """Phases of one start as they happen: the pool shows the current one, telemetry records each."""

    phases: list[tuple[str, float]] = field(default_factory=list)
    current: str | None = None
    # what a phase measured beyond its seconds, for the audit record (a peer fetch: source, bytes, GB/s)
    details: dict[str, Any] = field(default_factory=dict)

    def enter(self, name: str) -> None:
        self.current = name

    def done(self, name: str, seconds: float) -> None:
        # a phase met twice (vLLM compiles, then captures graphs) is one phase with both times
        for i, (known, before) in enumerate(self.phases):
            if known == name:
                self.phases[i] = (name, before + max(0.0, seconds))
                break
        else:
            self.phases.append((name, max(0.0, seconds)))
        self.current = None

    @property
    def total(self) -> float:
        return sum(s for _, s in self.phases)


class EngineProcess(Protocol):
    pid: int
    base_url: str

    @property
    def returncode(self) -> int | None: ...

    async def wait_exit(self) -> int: ...

    async def stop(self, timeout: float) -> None: ...

    def kill(self) -> None:
        """End the process at once (SIGKILL to its group)."""


class Engine(Protocol):
    kind: str

    def version(self, model: ModelConfig | None = None) -> str: ...

    def inspect(self, model: ModelConfig, path: Path) -> Capabilities:
        """What the model can do, found without loading it."""

    async def start(self, model: ModelConfig, path: Path, report: StartReport, name: str) -> EngineProcess:
        """Start a replica; return once it answers its health check. Raises EngineError."""

    async def open(self) -> None:
        """Start what the engine keeps ready between starts (pre-initialized runtimes), once the server is up."""

    async def close(self) -> None:
        """Stop what `open` started."""

    def runtime_view(self, model: ModelConfig) -> dict[str, Any] | None:
        """The pre-initialized runtimes `model`'s cold starts take from, as the views show them; None: none."""

    def runtime_pools(self) -> Sequence[RuntimePool]:
        """The pools of pre-initialized runtimes this engine keeps (for their metrics)."""

    def models_changed(self, models: Sequence[ModelConfig]) -> None:
        """The models served are now `models` (a reload, a model added to the store): start what the engine keeps
        ready for the new ones and let go of what none uses any more, in the background (never waited for)."""


class NoRuntimes:
    """The `Engine` methods of an engine that keeps nothing ready between starts."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def runtime_view(self, model: ModelConfig) -> dict[str, Any] | None:
        return None

    def runtime_pools(self) -> Sequence[RuntimePool]:
        return ()

    def models_changed(self, models: Sequence[ModelConfig]) -> None:
        return None


def distinct(engines: Iterable[Engine]) -> list[Engine]:
    """Each engine once: one engine object serves every model of its kind, and a mapping names it once per kind."""
    return list({id(e): e for e in engines}.values())
