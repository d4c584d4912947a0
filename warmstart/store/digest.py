"""sha256 digests of model files, computed once and cached by (path, size, mtime, inode).

The cache is a JSON file in the data directory, so a warm file is not rehashed on every start, nor
after a restart. A changed file (new size, mtime or inode) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import StoreError

_CHUNK = 8 << 20


@dataclass(frozen=True)
class FileDigest:
    path: str
    size: int
    sha256: str
    cached: bool  # True when the digest came from the cache, not from reading the file


def _key(path: Path, st: os.stat_result) -> str:
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while True:
                block = f.read(_CHUNK)
                if not block:
                    break
                h.update(block)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()


class DigestCache:
    """Thread-safe; `digest()` may be called from worker threads."""

    def __init__(self, cache_file: Path | None) -> None:
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        self.hashed = 0  # files actually read, for tests and metrics
        if cache_file is not None and cache_file.exists():
            try:
                data = json.loads(cache_file.read_text())
                if isinstance(data, dict):
                    self._entries = {str(k): str(v) for k, v in data.items()}
            except (OSError, ValueError):
                self._entries = {}  # a damaged cache only costs a rehash

    def digest(self, path: Path, *, force: bool = False) -> FileDigest:
        path = Path(path).resolve()
        try:
            st = path.stat()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        key = _key(path, st)
        with self._lock:
            known = self._entries.get(key)
        if known is not None and not force:
            return FileDigest(str(path), st.st_size, known, cached=True)
        value = sha256_file(path)
        with self._lock:
            self.hashed += 1
            # drop stale entries for this path
            prefix = f"{path}|"
            for old in [k for k in self._entries if k.startswith(prefix)]:
                del self._entries[old]
            self._entries[key] = value
            self._save()
        return FileDigest(str(path), st.st_size, value, cached=False)

    def _save(self) -> None:
        if self.cache_file is None:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._entries, indent=0, sort_keys=True))
            os.replace(tmp, self.cache_file)
        except OSError:
            pass  # the cache is an optimisation; a read-only data dir only costs rehashing
