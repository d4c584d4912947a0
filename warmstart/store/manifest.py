"""Model manifests: what a model is made of (files, sizes, sha256), kept in the data directory, and
the integrity checks made from them.

A start checks cheaply: each file's size, mtime, ctime, inode and device against the manifest; a file
whose stat changed in any of them is re-hashed (once, through the DigestCache) and refused if its
sha256 differs. ctime is what a restored mtime cannot fake; an entry without one (a manifest written
before ctime was recorded) is re-hashed once. `verify` re-hashes everything. A model started without
a manifest gets one on its first start (trust on first use); a manifest made by `warmstart models add`
is pinned: other files under its name are refused.
"""

from __future__ import annotations

import builtins
import json
import os
import time
import urllib.parse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from warmstart.errors import IntegrityError, StoreError
from warmstart.names import MODEL_NAME, MODEL_NAME_RULE
from warmstart.store.digest import DigestCache, FileDigest, FileStat
from warmstart.store.files import folder_files, hidden_under


def manifest_name(model_name: str, model_path: str) -> str:
    """The manifest a served model's start is checked against: the store's entry its path names, else its own name."""
    return model_path[len("store:"):] if model_path.startswith("store:") else model_name


def store_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "store"


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    sha256: str
    mtime_ns: int
    inode: int
    # None in manifests written before ctime was recorded: their first check re-hashes
    ctime_ns: int | None = None
    device: int | None = None

    def trusts(self, st: FileStat) -> bool:
        """The file is the one hashed: a write since then would have moved its ctime."""
        return self.ctime_ns is not None and (self.size, self.mtime_ns, self.ctime_ns, self.inode, self.device) == (
            st.size, st.mtime_ns, st.ctime_ns, st.inode, st.device)

    @classmethod
    def of(cls, digest: FileDigest) -> ManifestFile:
        st = digest.stat
        return cls(digest.path, digest.size, digest.sha256, st.mtime_ns, st.inode, st.ctime_ns, st.device)


@dataclass(frozen=True)
class Manifest:
    name: str
    engine: str
    format: str
    source: str
    root: str  # the file or folder the model was added from
    files: tuple[ManifestFile, ...]
    added_at: float
    pinned: bool = False
    # files `verify` found changed: every start re-hashes them until they match again
    failed_verify: tuple[str, ...] = ()
    verified_at: float | None = None
    # made by `warmstart quantize`: the source model, its sha256, the type and the tool (None: not quantized here)
    quantization: dict[str, Any] | None = None
    # the last `warmstart eval` of this model against its base, with the gate's verdict (None: never evaluated)
    accuracy: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [asdict(f) for f in self.files]
        d["size"] = self.size
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        files = tuple(ManifestFile(**f) for f in d["files"])
        return cls(name=d["name"], engine=d["engine"], format=d["format"], source=d["source"], root=d["root"],
                   files=files, added_at=float(d["added_at"]), pinned=bool(d.get("pinned", False)),
                   failed_verify=tuple(d.get("failed_verify") or ()), verified_at=d.get("verified_at"),
                   quantization=d.get("quantization"), accuracy=d.get("accuracy"))


@dataclass(frozen=True)
class FileCheck:
    path: str
    status: str  # ok | changed | missing
    expected: str
    actual: str | None = None


def model_files(root: Path) -> list[Path]:
    """The files a model is made of, resolved: the file itself, or a folder's (`store.files.folder_files`)."""
    return [f for _, f in model_entries(root)]


def model_entries(root: Path) -> list[tuple[str, Path]]:
    """The files a model is made of as (name, resolved file): the file itself, or a folder's files
    (`store.files.folder_files`), each named by its path in the folder (a link by its own name)."""
    root = Path(root)
    if root.is_file():
        return [(root.name, root.resolve())]
    if root.is_dir():
        entries = [(rel, p.resolve()) for rel, p in folder_files(root)]
        if not entries:
            raise StoreError(f"model folder {root} has no files")
        return sorted(entries, key=lambda e: e[1])
    raise StoreError(f"model path not found: {root}")


def detect_format(entries: list[tuple[str, Path]]) -> str:
    """From the files' names (a Hugging Face snapshot's links name what their blobs hold), else a lone file's magic."""
    files = [f for _, f in entries]
    suffixes = {Path(name).suffix.lower() for name, _ in entries}
    if ".gguf" in suffixes:
        return "gguf"
    if ".safetensors" in suffixes:
        return "safetensors"
    if len(files) == 1:
        try:
            with open(files[0], "rb") as f:
                if f.read(4) == b"GGUF":
                    return "gguf"
        except OSError:
            pass
    return "unknown"


def default_engine(fmt: str) -> str:
    return {"gguf": "llamacpp", "safetensors": "vllm"}.get(fmt, "command")


class ManifestStore:
    """Manifests as JSON files in DATA_DIR/store/manifests; digests cached in DATA_DIR/store/digests.json."""

    def __init__(self, data_dir: Path, digests: DigestCache | None = None) -> None:
        self.root = store_dir(data_dir)
        self.folder = self.root / "manifests"
        self.digests = digests or DigestCache(self.root / "digests.json")

    def _file(self, name: str) -> Path:
        return self.folder / (urllib.parse.quote(name, safe="") + ".json")

    # -- reading

    def get(self, name: str) -> Manifest | None:
        try:
            return Manifest.from_dict(json.loads(self._file(name).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"the manifest of model '{name}' ({self._file(name)}) is unreadable: {exc}; "
                             f"remove it with `warmstart models rm {name}` and add the model again") from exc

    def list(self) -> list[Manifest]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.glob("*.json")):
            m = self.get(urllib.parse.unquote(p.stem))
            if m is not None:
                out.append(m)
        return out

    # -- changes

    def add(self, root: Path, *, name: str | None = None, engine: str | None = None, source: str | None = None,
            pinned: bool = True, replace_existing: bool = False,
            quantization: dict[str, Any] | None = None) -> Manifest:
        """Hash the model's files and write its manifest; refuses to overwrite another unless told to."""
        root = Path(root).expanduser()
        name = name or (root.stem if root.is_file() else root.name)
        self.may_add(name, replace_existing)
        files = model_entries(root)
        return self._record(name, root, files, engine=engine, source=source, pinned=pinned,
                            quantization=quantization)

    def may_add(self, name: str, replace_existing: bool = False) -> None:
        """StoreError unless `name` is a valid model name, free in the store or allowed to be replaced."""
        if not MODEL_NAME.match(name) or ".." in name.split("/"):
            raise StoreError(f"model name {name!r} is not valid: use {MODEL_NAME_RULE} (pass --name)")
        existing = self.get(name)
        if existing is not None and not replace_existing:
            raise StoreError(f"model '{name}' is already in the store ({existing.root}); "
                             "pass --replace to replace it or --name to add it under another name")

    def _record(self, name: str, root: Path, files: builtins.list[tuple[str, Path]], *, engine: str | None,
                source: str | None, pinned: bool, quantization: dict[str, Any] | None = None) -> Manifest:
        fmt = detect_format(files)
        entries = []
        for _, f in files:
            # the stat the digest was taken under, not a later one: a change in between would be trusted
            entries.append(ManifestFile.of(self.digests.digest(f)))
        manifest = Manifest(name=name, engine=engine or default_engine(fmt), format=fmt,
                            source=source or f"add {root.resolve()}", root=str(root.resolve()),
                            files=tuple(entries), added_at=time.time(), pinned=pinned, quantization=quantization)
        self._write(manifest)
        return manifest

    def set_accuracy(self, name: str, accuracy: dict[str, Any]) -> Manifest:
        """Record an eval's result and verdict in the model's manifest (what `serve` checks before a start)."""
        manifest = self.get(name)
        if manifest is None:
            raise StoreError(f"no model named '{name}' in the store; see `warmstart models list`")
        manifest = replace(manifest, accuracy=accuracy)
        self._write(manifest)
        return manifest

    def remove(self, name: str) -> bool:
        try:
            self._file(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def _write(self, manifest: Manifest) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._file(manifest.name)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
        os.replace(tmp, target)

    # -- integrity

    def check(self, name: str, root: Path, *, engine: str, source: str) -> Manifest:
        """The cheap check before a start; raises IntegrityError on a mismatch. Creates the manifest
        on a model's first start, and again when an unpinned model's config names other files."""
        manifest = self.get(name)
        files = model_entries(root)
        if manifest is None:
            return self._record(name, root, files, engine=engine, source=source, pinned=False)
        listed = {str(f) for _, f in files}
        if listed < {f.path for f in manifest.files} and all(
                hidden_under(Path(manifest.root), Path(f.path)) for f in manifest.files if f.path not in listed):
            # written when files in hidden folders (a download's cache) were counted as the model's: not any more
            manifest = replace(manifest, files=tuple(f for f in manifest.files if f.path in listed))
            self._write(manifest)
        if {f.path for f in manifest.files} != listed:
            if manifest.pinned:
                raise IntegrityError(
                    f"model '{name}' is pinned in the store to {manifest.root}, but its config names {root}; "
                    f"run `warmstart models add {root} --name {name} --replace` to accept the new files")
            return self._record(name, root, files, engine=engine, source=source, pinned=False)
        updated = []
        for entry in manifest.files:
            updated.append(self._check_file(name, entry, rehash=entry.path in manifest.failed_verify))
        if tuple(updated) != manifest.files or manifest.failed_verify:
            manifest = replace(manifest, files=tuple(updated), failed_verify=())
            self._write(manifest)
        return manifest

    def _check_file(self, name: str, entry: ManifestFile, rehash: bool = False) -> ManifestFile:
        try:
            st = FileStat.of(os.stat(entry.path))
        except OSError as exc:
            raise IntegrityError(f"model '{name}': {entry.path} is missing ({exc.strerror}); restore it or "
                                 f"run `warmstart models rm {name}` and add the model again") from None
        if entry.trusts(st) and not rehash:
            return entry
        if st.size != entry.size:
            raise IntegrityError(
                f"model '{name}': {entry.path} is {st.size} bytes, its manifest says {entry.size}; the file was "
                f"changed or truncated. Restore it, or run `warmstart models add {entry.path} --name {name} "
                "--replace` if the change is intended")
        digest = self.digests.digest(Path(entry.path), force=rehash)
        if digest.sha256 != entry.sha256:
            raise IntegrityError(
                f"model '{name}': {entry.path} has sha256 {digest.sha256[:16]}..., its manifest says "
                f"{entry.sha256[:16]}...; the file was modified. Restore it, or run `warmstart models add "
                f"{entry.path} --name {name} --replace` if the change is intended")
        return replace(ManifestFile.of(digest), path=entry.path)  # same bytes, touched or copied

    def verify(self, name: str) -> builtins.list[FileCheck]:
        """Re-hash every file of the model (no cache) against its manifest."""
        manifest = self.get(name)
        if manifest is None:
            raise StoreError(f"no model named '{name}' in the store; see `warmstart models list`")
        results = []
        for entry in manifest.files:
            if not os.path.exists(entry.path):
                results.append(FileCheck(entry.path, "missing", entry.sha256))
                continue
            actual = self.digests.digest(Path(entry.path), force=True).sha256
            results.append(FileCheck(entry.path, "ok" if actual == entry.sha256 else "changed", entry.sha256, actual))
        bad = tuple(c.path for c in results if c.status != "ok")
        self._write(replace(manifest, failed_verify=bad, verified_at=time.time()))
        return results
