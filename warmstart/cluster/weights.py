"""A model's weights as a cluster moves and checks them: one file (a GGUF) or a folder of several (a Hugging Face
checkpoint: config, tokenizer, safetensors shards), each file with its size, its sha256 and the sha256 of each
of its pieces (warmstart.cluster.chunks), taken from the head's copy, which the store's manifest vouches for.

The head builds it (`of_path`); it travels to the nodes with every fetch and start, and a node's copy is the
model only when each of its files has the sha256 named here and it has no other file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warmstart.errors import IntegrityError
from warmstart.store.files import folder_files

ONE_FILE = ""  # the relative path of a single-file model's one file


@dataclass(frozen=True)
class WeightFile:
    path: str  # relative to the model's folder ("/"-separated); ONE_FILE for a single-file model
    size: int
    sha256: str
    pieces: tuple[str, ...] | None = None  # each VERIFY_CHUNK piece's sha256; None: hash the whole stream

    def under(self, root: Path) -> Path:
        """Where this file is in a copy of the model at `root` (the file itself, or in the folder)."""
        return root if self.path == ONE_FILE else root.joinpath(*self.path.split("/"))


@dataclass(frozen=True)
class Weights:
    files: tuple[WeightFile, ...]
    folder: bool

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sha256(self) -> str:
        """The model's digest: its one file's sha256, or for a folder the sha256 of its listing (each file's
        path, size and sha256), so two folders with the same digest hold the same bytes under the same names."""
        if not self.folder:
            return self.files[0].sha256
        listing = "".join(f"{f.path}\0{f.size}\0{f.sha256}\n" for f in self.files)
        return hashlib.sha256(listing.encode()).hexdigest()

    def without_pieces(self) -> Weights:
        """The same files checked by one sha256 each over the stream (the bench's other way)."""
        return Weights(tuple(WeightFile(f.path, f.size, f.sha256) for f in self.files), self.folder)


def of_path(path: Path, sha256: Callable[[Path], str], pieces: Callable[[Path, str], tuple[str, ...]]) -> Weights:
    """The weights at `path` (a file or a folder), each file's sha256 from `sha256` (the head's digest cache) and
    its pieces from `pieces(file, its sha256)`. IntegrityError when there is nothing to serve there."""
    path = Path(path)
    if path.is_file():
        entries = [(ONE_FILE, path)]
    elif path.is_dir():
        entries = folder_files(path)
        if not entries:
            raise IntegrityError(f"model folder {path} has no files")
    else:
        raise IntegrityError(f"model path {path} is neither a file nor a folder")
    files = []
    for rel, f in entries:
        digest = sha256(f)
        files.append(WeightFile(rel, f.stat().st_size, digest, pieces(f, digest)))
    return Weights(tuple(files), folder=path.is_dir())


def mismatch(weights: Weights, root: Path, sha256: Callable[[Path], str]) -> str | None:
    """Why the copy at `root` is not these weights (a file missing, another size or sha256, a file too many),
    None when it is them byte for byte."""
    if weights.folder:
        if not root.is_dir():
            return f"{root} is not a folder"
        extra = sorted({rel for rel, _ in folder_files(root)} - {f.path for f in weights.files})
        if extra:
            return f"{root} has files the head's model has not: {', '.join(extra[:3])}"
    for f in weights.files:
        p = f.under(root)
        if not p.is_file():
            return f"{p} is missing"
        if p.stat().st_size != f.size:
            return f"{p} is {p.stat().st_size} bytes, the head's manifest says {f.size}"
        got = sha256(p)
        if got != f.sha256:
            return f"{p} has sha256 {got[:16]}..., the head's manifest says {f.sha256[:16]}..."
    return None
