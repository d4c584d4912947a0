"""What a running server serves and the settings in force, changed without a restart: a model added to (or
removed from) the store is seen at the next lookup that misses or listing; the config file is read again on
SIGHUP or `POST /admin/reload` (`warmstart reload`), and a config that does not load is refused while the one
in force keeps serving.

The store is read, not told: a listing, or a request naming a model the server does not know, looks at the
manifests folder's stat (one syscall) and reads the manifests only when it changed. So a model added by any
means (`models add`, `pull`, `quantize`, a copy of the data directory) is served at once, with no key or
running server needed to add it, and a request for a known model never pays for the look.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from warmstart.config import Config, ModelConfig
from warmstart.errors import ConfigError, StoreError
from warmstart.pool.changes import ModelChanges, diff_models
from warmstart.store.manifest import ManifestStore

if TYPE_CHECKING:
    from warmstart.pool.pool import Pool
    from warmstart.telemetry.audit import AuditLog

log = logging.getLogger("warmstart.reload")

# sections whose settings a running server cannot take: a change is reported as needing a restart
RESTART_SECTIONS = ("server", "audit", "store", "cluster")
# [warming] settings applied at once; its others need a restart
LIVE_WARMING = frozenset({"schedules", "hint"})
# a folder's mtime this recent may yet change again within the same timestamp tick: read it again next time
RACY_NS = 2_000_000_000

Listener = Callable[[Config, ModelChanges], None]


@dataclass(frozen=True)
class ReloadReport:
    source: str
    changes: ModelChanges
    needs_restart: tuple[str, ...]  # settings changed in the file that apply at the next start only
    applied: tuple[str, ...]  # other settings that changed and apply now (auth, warming.schedules, ...)
    draining: tuple[str, ...] = ()  # models taken out of service whose replicas still finish requests

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "models": self.changes.to_dict(), "settings_applied": list(self.applied),
                "needs_restart": list(self.needs_restart), "draining": list(self.draining)}

    def summary(self) -> str:
        line = self.changes.summary()
        if self.draining:
            line += f"; draining: {', '.join(self.draining)} (requests in flight finish, then they unload)"
        if self.applied:
            line += f"; applied {', '.join(self.applied)}"
        if self.needs_restart:
            line += f"; needs a restart to apply: {', '.join(self.needs_restart)}"
        return line


def restart_needed(old: Config, new: Config) -> tuple[str, ...]:
    """The settings that differ between `old` and `new` but cannot change in a running server."""
    out = []
    for section in RESTART_SECTIONS:
        a, b = getattr(old, section), getattr(new, section)
        out += [f"{section}.{f.name}" for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    out += [f"warming.{f.name}" for f in fields(old.warming)
            if f.name not in LIVE_WARMING and getattr(old.warming, f.name) != getattr(new.warming, f.name)]
    return tuple(out)


def live_changes(old: Config, new: Config) -> tuple[str, ...]:
    """The settings outside the models that differ and apply at once."""
    out = ["auth"] if old.auth != new.auth else []
    out += [f"warming.{name}" for name in sorted(LIVE_WARMING)
            if getattr(old.warming, name) != getattr(new.warming, name)]
    return tuple(out + (["defaults"] if old.model_defaults != new.model_defaults else []))


def in_force(old: Config, new: Config) -> Config:
    """`new` as a running server applies it: the settings that need a restart stay as they are."""
    warming = replace(old.warming, **{name: getattr(new.warming, name) for name in LIVE_WARMING})
    return replace(new, server=old.server, audit=old.audit, store=old.store, cluster=old.cluster,
                   warming=warming, source=old.source)


class Catalog:
    def __init__(self, config: Config, pool: Pool, load: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.pool = pool
        # how `serve` read its config (file, environment, flags), read again on reload
        self._load = load or (lambda: _load_file(config))
        self.listeners: list[Listener] = []
        self.audit: AuditLog | None = None
        self._manifests = ManifestStore(config.server.data_dir)
        self._seen: tuple[int, int] | None = None
        self.unservable: dict[str, str] = {}  # store models that cannot be served, and why (logged once)
        self._lock: asyncio.Lock | None = None
        pool.refresh = self.refresh

    # ---- the store --------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Serve what the store holds now, if its manifests changed since the last look; True if the models
        served changed."""
        if not self.config.store.serve_added:
            return False
        signature = self._signature()
        if signature is not None and signature == self._seen:
            return False
        try:
            return bool(self._apply(self.config.models + self._store_models(signature), "store"))
        except Exception:  # a lookup or listing goes on with the models served so far
            log.exception("reading the models added to the store failed")
            return False

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._manifests.folder)
        except OSError:
            return (0, 0)  # no store yet
        if time.time_ns() - st.st_mtime_ns < RACY_NS:
            return None  # changed just now: another change in the same tick would not move the mtime
        return (st.st_mtime_ns, st.st_ino)

    def _store_models(self, signature: tuple[int, int] | None) -> tuple[ModelConfig, ...]:
        """The models added to the store that no configured model names, as they are served. `signature`: the
        manifests folder's, taken by the caller before the folder is read (so that a change made while it is
        read is seen at the next look)."""
        from warmstart.config_models import store_model

        self._seen = signature
        if not self.config.store.serve_added:
            return ()
        taken = {m.name for m in self.config.models} | {m.path[len("store:"):] for m in self.config.models
                                                        if m.path.startswith("store:")}
        try:
            names = sorted(urllib.parse.unquote(p.stem) for p in self._manifests.folder.glob("*.json"))
        except OSError:
            return ()
        out = []
        for name in (n for n in names if n not in taken):
            try:
                manifest = self._manifests.get(name)
                # unpinned manifests are the store's records of configured models' first starts
                if manifest is None or not manifest.pinned:
                    continue
                out.append(store_model(self.config, manifest))
                self.unservable.pop(name, None)
            except (StoreError, ConfigError) as exc:
                if self.unservable.get(name) != str(exc):
                    self.unservable[name] = str(exc)
                    log.warning("store model %s is not served: %s", name, exc)
        return tuple(out)

    def _apply(self, desired: tuple[ModelConfig, ...], why: str) -> ModelChanges:
        changes = diff_models(self.pool.configs(), desired)
        if changes:
            self.pool.apply(changes)
            for listener in self.listeners:
                listener(self.config, changes)
            log.info("models changed (%s): %s", why, changes.summary())
        return changes

    # ---- the config file ----------------------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Read the config again and apply it; ConfigError (nothing changed) when it does not load."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            source = str(self.config.source) if self.config.source is not None else "flags and environment"
            try:
                new = await asyncio.to_thread(self._load)
            except (OSError, UnicodeDecodeError) as exc:  # e.g. a file made unreadable: refused like a bad one
                refused = ConfigError(source, "", f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
                log.error("reload refused, the config in force keeps serving: %s", refused)
                raise refused from None
            except ConfigError as exc:
                log.error("reload refused, the config in force keeps serving: %s", exc)
                raise
            report_restart = restart_needed(self.config, new)
            applied = live_changes(self.config, new)
            self.config = in_force(self.config, new)
            changes = self._apply(self.config.models + self._store_models(self._signature()), "reload")
            if applied and not changes:  # auth, schedules or hints changed alone: listeners still apply them
                for listener in self.listeners:
                    listener(self.config, changes)
            report = ReloadReport(source, changes, report_restart, applied, self.pool.draining())
            log.info("reloaded %s: %s", source, report.summary())
            if self.audit is not None:
                await self.audit.record_change("reload", {**report.to_dict(), "summary": report.summary()})
            return report


def _load_file(config: Config) -> Config:
    from warmstart.config_loader import load_config

    return load_config(config.source, os.environ)

