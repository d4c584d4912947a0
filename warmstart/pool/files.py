"""A model's file: where its weights are (resolved once), what it can do (inspected once, without loading
it), and the audit record of a model refused before any start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from warmstart.engines.base import Capabilities
from warmstart.errors import ModelStartFailed, StoreError, WarmstartError
from warmstart.pool.books import Books
from warmstart.pool.entry import ModelEntry, Refusal
from warmstart.pool.replica import next_replica_id
from warmstart.store.sources import resolve_model_path

log = logging.getLogger("warmstart.pool")


class ModelFiles:
    def __init__(self, books: Books) -> None:
        self._books = books

    async def resolve(self, entry: ModelEntry) -> Path:
        """The model's weights on disk (fetched or assembled on first use); ModelStartFailed if there are none."""
        if entry.path is None:
            try:
                entry.path = await asyncio.to_thread(
                    resolve_model_path, entry.config.path, self._books.config.server.data_dir)
            except StoreError as exc:
                raise ModelStartFailed(f"model '{entry.name}' cannot be started: {exc}", retry_after=None) from exc
        return entry.path

    async def capabilities(self, entry: ModelEntry) -> Capabilities:
        """What a model can do, found from its file without loading it (resolved once)."""
        if entry.capabilities is not None:
            return entry.capabilities
        async with entry.inspect_lock:
            if entry.capabilities is None:
                try:
                    path = await self.resolve(entry)
                    try:
                        entry.capabilities = await asyncio.to_thread(entry.engine.inspect, entry.config, path)
                    except StoreError as exc:
                        raise ModelStartFailed(f"model '{entry.name}' cannot be used: {exc}",
                                               retry_after=None) from exc
                except ModelStartFailed as exc:
                    entry.problem = exc.message
                    self._audit_refusal(entry, exc.message)
                    raise
                entry.problem = None
        return entry.capabilities

    def _audit_refusal(self, entry: ModelEntry, error: str) -> None:
        """A model refused before any start (its file is missing, truncated or not a model): one audit
        record per distinct reason, not one per request, so requests cannot flood the log."""
        if entry.refused_audited == error:
            return
        entry.refused_audited = error
        books = self._books
        attempt = Refusal(id=next_replica_id(entry.name), created_wall=books.clock.wall())
        books.spawn(books.audit.record("start", model=entry.config, path=entry.path, replica=attempt,
                                       engine=entry.engine, outcome="refused", error=error, seconds=0.0),
                    name="audit")

    async def prepare(self, entry: ModelEntry) -> None:
        """Resolve, inspect and (for the store's manifest) hash the model now, so a first request does not
        pay for it (an `assemble:` model is written once); problems are logged, not raised."""
        store = self._books.store
        try:
            await self.capabilities(entry)
            if store is not None and store.settings.verify_on_start:
                # hash a model without a manifest now rather than on its first start
                await store.check(entry.config, await self.resolve(entry))
        except WarmstartError as exc:
            entry.problem = str(exc)
            log.warning("%s", exc)
