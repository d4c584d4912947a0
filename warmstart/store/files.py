"""The files a model folder is made of, by one rule for every part that lists them: the manifest and its
checks, the audit record's digest, the RAM tier's price and the cluster's transfers; and which GGUF a folder holds."""

from __future__ import annotations

import re
from pathlib import Path

# a GGUF model split in shards by llama.cpp's gguf-split: NAME-00001-of-00003.gguf ...; llama.cpp is given the first
SHARD = re.compile(r"^(?P<model>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$", re.IGNORECASE)


def folder_files(root: Path) -> list[tuple[str, Path]]:
    """A model folder's files as (relative path, file), sorted; hidden files and folders (names starting with a
    dot: a download's cache such as Hugging Face's `.cache/huggingface`, a fetch under way, `.gitattributes`)
    are not part of the model. Links are followed and keep their own names (a Hugging Face snapshot's files are
    links into its blob store, whose names say nothing of what they hold)."""
    out = []
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts) and p.is_file():
            out.append((rel.as_posix(), p))
    return out


def hidden_under(root: Path, path: Path) -> bool:
    """Whether `path`, under `root`, is a file `folder_files` leaves out (in a hidden folder, or hidden itself)."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return False
    return any(part.startswith(".") for part in rel.parts)
