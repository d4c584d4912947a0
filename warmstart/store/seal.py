"""Seals: model digests checked when an image was built, trusted at start while the file is the one sealed.

A file baked into an image gets a new inode, ctime and device wherever the image is unpacked, so the
stat a manifest or the digest cache trusts never matches in a fresh container, and every container
would re-hash its model before its first start (seconds per GB). A seal (`[store] seals`, a JSON file
written by `warmstart image build` into the model's layer) names each file with its size, mtime and
sha256. Its digest is trusted without reading the file when all hold:
- the seal file is owned by root and not writable by this process (a server user cannot forge one);
- the model file has the sealed size and mtime, and this process cannot write it;
- its ctime is older than the start of the container (the start of PID 1 of this PID namespace): a file
  written inside the container since it started has a later ctime, and is re-hashed.
Anything else is read and hashed as usual. What a seal cannot see is a change to the image's layers on
the host by root: the image's own digest (the registry's, `podman image inspect`) guards those.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import StoreError
from warmstart.store.digest import FileStat

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class SealedFile:
    path: str
    size: int
    mtime_ns: int | None  # None until the file is in the image: filled in from the file at build
    sha256: str


def seal_document(files: list[tuple[str, int, str]]) -> str:
    """The seal as written into the build context; the mtimes are taken inside the image at build."""
    return json.dumps({"version": 1, "files": [{"path": p, "size": s, "sha256": h} for p, s, h in files]},
                      indent=2) + "\n"


def container_started_ns(proc: Path = Path("/proc")) -> int | None:
    """Wall time (ns) PID 1 of this PID namespace started: the container's start; None when unknown."""
    try:
        fields = (proc / "1" / "stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat, counted after the command's closing parenthesis
        btime = next(int(line.split()[1]) for line in (proc / "stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime * 1_000_000_000 + start_ticks * 1_000_000_000 // _CLK_TCK


class Seals:
    """The sealed digests of one seal file, looked up by path and stat."""

    def __init__(self, files: dict[str, SealedFile], started_ns: int | None, checked_at: float = 0.0,
                 can_write: Callable[[str], bool] = lambda path: os.access(path, os.W_OK)) -> None:
        self.files = files
        self.started_ns = started_ns
        self.checked_at = checked_at  # when the build hashed the files in the image
        self.can_write = can_write

    @classmethod
    def load(cls, path: Path) -> Seals:
        """Reads a seal file; StoreError when it is unreadable, or could have been written by this process."""
        try:
            st = path.stat()
            doc = json.loads(path.read_text())
            entries = doc["files"]
            files = {e["path"]: SealedFile(str(e["path"]), int(e["size"]), e.get("mtime_ns"), str(e["sha256"]))
                     for e in entries}
        except OSError as exc:
            raise StoreError(f"cannot read the seal file {path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"the seal file {path} is damaged ({exc}); rebuild the image") from None
        if st.st_uid != 0 or (os.access(path, os.W_OK) and os.geteuid() != 0):
            raise StoreError(f"the seal file {path} must be owned by root and read-only to the server; "
                             "it is, in an image built by `warmstart image build`")
        return cls(files, container_started_ns(), float(doc.get("checked_at") or 0.0))

    def sha256(self, path: str, st: FileStat) -> str | None:
        """The sealed digest of `path` when the file is the one sealed (see the module's rules), else None."""
        sealed = self.files.get(path)
        if sealed is None or sealed.mtime_ns is None or self.started_ns is None:
            return None
        if (st.size, st.mtime_ns) != (sealed.size, sealed.mtime_ns):
            return None
        if st.ctime_ns >= self.started_ns or self.can_write(path):
            return None
        return sealed.sha256


def stamp(seal_path: Path) -> None:
    """At build, inside the image: record each sealed file's mtime, after checking its size and sha256."""
    from warmstart.store.digest import sha256_file

    doc = json.loads(seal_path.read_text())
    for entry in doc["files"]:
        path = Path(entry["path"])
        st = path.stat()
        if st.st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise StoreError(f"{path} in the image is not the file checked on the host: rebuild the context")
        entry["mtime_ns"] = st.st_mtime_ns
    doc["checked_at"] = time.time()
    seal_path.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":  # the build's check inside the image: python -m warmstart.store.seal SEALS
    import sys

    try:
        stamp(Path(sys.argv[1]))
    except (StoreError, OSError, ValueError, KeyError) as exc:
        sys.exit(f"warmstart image build: {exc}")
