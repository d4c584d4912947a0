"""sha256 digests of model files, computed once and cached by the file's stat (path, size, mtime, ctime,
inode, device).

The cache is a JSON file in the data directory, so a warm file is not rehashed on every start, nor
after a restart. A file whose stat changed in any of those is hashed again. ctime is what makes the
stat trustworthy: a user process can put a file's mtime back (`os.utime`, `touch -d`) but not its
ctime, which the kernel sets to "now" on every write, chmod, rename or utime. A digest is kept only
for a stat that held from before the file was read until after, and that is old enough that a later
change cannot share its timestamp tick.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warmstart.errors import StoreError
from warmstart.progress import step

if TYPE_CHECKING:
    from warmstart.store.seal import Seals

_CHUNK = 8 << 20
# filesystem timestamps come from the kernel's coarse clock (one jiffy, 1-10 ms): a change this soon
# after the last one could carry the same ctime, so such a file is read again once this has passed
_TICK_NS = 20_000_000
_TRIES = 4  # reads of a file that keeps changing before giving up


@dataclass(frozen=True)
class FileStat:
    """What a digest is trusted by: any write to the file since it was read changes ctime."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class FileDigest:
    path: str
    size: int
    sha256: str
    cached: bool  # True when the digest came from the cache (trusted by stat), not from reading the file
    hashed_at: float  # wall time the file's bytes were hashed (by this call, or by the one cached)
    stat: FileStat  # the stat the digest holds for
    sealed: bool = False  # the digest came from an image's seal (warmstart.store.seal), checked at build


def _key(path: Path, st: FileStat) -> str:
    return f"{path}|{st.size}|{st.mtime_ns}|{st.ctime_ns}|{st.inode}|{st.device}"


def _stat(path: Path) -> FileStat:
    try:
        return FileStat.of(path.stat())
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    done = 0
    try:
        with open(path, "rb", buffering=0) as f:
            total = os.fstat(f.fileno()).st_size
            while True:
                block = f.read(_CHUNK)
                if not block:
                    break
                h.update(block)
                done += len(block)
                step(f"hashing {path.name}: MB", done / 1e6, total / 1e6)  # said only where a command shows it
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()


def hash_stable(path: Path) -> tuple[str, FileStat]:
    """sha256 of the file and the stat it holds for: read again while the file changes under the read,
    or was changed so recently that a later change could keep its ctime. Raises StoreError."""
    before = _stat(path)
    for _ in range(_TRIES):
        value = sha256_file(path)
        after = _stat(path)
        if after != before:  # written while it was read: the bytes read may be a mix
            before = after
            continue
        young = after.ctime_ns - (time.time_ns() - _TICK_NS)
        if young <= 0 or young > _TICK_NS:  # settled, or a ctime ahead of the clock (it was set back): no tick race
            return value, after
        time.sleep(young / 1e9)  # from now on, a change gets a later ctime; read the bytes again
    raise StoreError(f"cannot hash {path}: it kept changing while it was read ({_TRIES} tries); "
                     "wait until whatever writes it is done")


def _entry(value: Any) -> tuple[str, float, bool] | None:
    if isinstance(value, dict) and isinstance(value.get("sha256"), str) and len(value["sha256"]) == 64 \
            and isinstance(value.get("hashed_at"), int | float):
        return value["sha256"], float(value["hashed_at"]), value.get("sealed") is True
    return None  # an entry of an older format (no ctime in its key) or damage: costs one re-hash


class DigestCache:
    """Thread-safe; `digest()` may be called from worker threads."""

    def __init__(self, cache_file: Path | None, seals: Seals | None = None) -> None:
        self.cache_file = cache_file
        self.seals = seals
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float, bool]] = {}  # key -> sha256, hashed_at, from a seal
        self.hashed = 0  # digests computed by reading the file, for tests and metrics
        if cache_file is not None and cache_file.exists():
            try:
                data = json.loads(cache_file.read_text())
            except (OSError, ValueError, RecursionError):
                data = {}  # a damaged cache only costs a rehash
            if isinstance(data, dict):
                self._entries = {str(k): e for k, v in data.items() if (e := _entry(v)) is not None}

    def digest(self, path: Path, *, force: bool = False) -> FileDigest:
        path = Path(path).resolve()
        st = _stat(path)
        with self._lock:
            known = self._entries.get(_key(path, st))
        if known is not None and not force:
            return FileDigest(str(path), st.size, known[0], cached=True, hashed_at=known[1], stat=st, sealed=known[2])
        if self.seals is not None and not force:
            sealed = self.seals.sha256(str(path), st)
            if sealed is not None:
                with self._lock:
                    self._entries[_key(path, st)] = (sealed, self.seals.checked_at, True)
                return FileDigest(str(path), st.size, sealed, cached=True, hashed_at=self.seals.checked_at,
                                  stat=st, sealed=True)
        value, st = hash_stable(path)
        hashed_at = time.time()
        with self._lock:
            self.hashed += 1
            # drop stale entries for this path
            prefix = f"{path}|"
            for old in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[old]
            self._entries[_key(path, st)] = (value, hashed_at, False)
            self._save()
        return FileDigest(str(path), st.size, value, cached=False, hashed_at=hashed_at, stat=st)

    def remember(self, known: Mapping[Path, str]) -> None:
        """Record the sha256 of files whose bytes were checked as they were written (a peer fetch checks every
        piece against the head's), so their first use does not read them again. Held for each file as it is
        now, once its ctime is older than a clock tick (as hash_stable waits); a file changed meanwhile is left
        out (hashed when next asked for)."""
        stats = {Path(p).resolve(): _stat(Path(p).resolve()) for p in known}
        young = max((st.ctime_ns for st in stats.values()), default=0) - (time.time_ns() - _TICK_NS)
        if 0 < young <= _TICK_NS:
            time.sleep(young / 1e9)
        with self._lock:
            for (path, st), sha256 in zip(stats.items(), known.values(), strict=True):
                if _stat(path) != st:
                    continue
                for old in [k for k in self._entries if k.startswith(f"{path}|")]:
                    del self._entries[old]
                self._entries[_key(path, st)] = (sha256, time.time(), False)
            self._save()

    def _save(self) -> None:
        if self.cache_file is None:
            return
        data = {k: {"sha256": v, "hashed_at": at, **({"sealed": True} if sealed else {})}
                for k, (v, at, sealed) in self._entries.items()}
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # the cache is an optimisation; a read-only data dir only costs rehashing
