"""What a change of the models served (a reload of the config, a model added to or removed from the store)
does to the pool, decided as data: which models are added, which are removed (drained, then unloaded), which
take new settings at once and which restart on them (their replicas drain; the next start uses them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from warmstart.config import ModelConfig

# settings a running engine process was started with: a change to one drains the model's replicas, and the
# next start uses it; every other setting (keep-alive, max_replicas, RAM tier, ...) applies at once
RESTART_FIELDS = frozenset({"engine", "path", "options", "max_concurrency", "chat"})


@dataclass(frozen=True)
class ModelChanges:
    added: tuple[ModelConfig, ...] = ()
    removed: tuple[str, ...] = ()
    restarted: tuple[ModelConfig, ...] = ()  # engine settings changed: replicas drain, next start uses them
    updated: tuple[ModelConfig, ...] = ()  # applied at once to the model and its running replicas
    # per changed model, the settings that changed
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.restarted or self.updated)

    def to_dict(self) -> dict[str, object]:
        what = dict(self.fields)
        return {
            "added": [m.name for m in self.added],
            "removed": list(self.removed),
            "restarted": {m.name: list(what.get(m.name, ())) for m in self.restarted},
            "updated": {m.name: list(what.get(m.name, ())) for m in self.updated},
        }

    def summary(self) -> str:
        """One line: what changed, for the log and the CLI."""
        what = dict(self.fields)
        parts = [f"added {', '.join(m.name for m in self.added)}" if self.added else "",
                 f"removed {', '.join(self.removed)}" if self.removed else "",
                 "; ".join(f"{m.name}: {', '.join(what.get(m.name, ()))} changed (replicas drain, next start "
                           "uses it)" for m in self.restarted),
                 "; ".join(f"{m.name}: {', '.join(what.get(m.name, ()))} changed" for m in self.updated)]
        return "; ".join(p for p in parts if p) or "no model changed"


def changed_fields(old: ModelConfig, new: ModelConfig) -> tuple[str, ...]:
    return tuple(f.name for f in fields(ModelConfig) if getattr(old, f.name) != getattr(new, f.name))


def diff_models(old: Sequence[ModelConfig], new: Sequence[ModelConfig]) -> ModelChanges:
    """The changes that turn the models served (`old`) into `new`, by name."""
    before = {m.name: m for m in old}
    after = {m.name: m for m in new}
    added = tuple(m for m in new if m.name not in before)
    removed = tuple(m.name for m in old if m.name not in after)
    restarted: list[ModelConfig] = []
    updated: list[ModelConfig] = []
    what: list[tuple[str, tuple[str, ...]]] = []
    for m in new:
        prior = before.get(m.name)
        if prior is None or prior == m:
            continue
        changed = changed_fields(prior, m)
        what.append((m.name, changed))
        (restarted if RESTART_FIELDS.intersection(changed) else updated).append(m)
    return ModelChanges(added=added, removed=removed, restarted=tuple(restarted), updated=tuple(updated),
                        fields=tuple(what))
