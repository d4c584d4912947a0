"""Read a GGUF file's metadata (architecture, context length, chat template) without loading weights."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from warmstart.errors import StoreError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFInfo:
    version: int
    tensor_count: int
    metadata: dict

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return str(value) if value else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return str(value) if value else None


def read_gguf(path: Path) -> GGUFInfo:
    stat = path.stat()
    return _read_cached(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=64)
def _read_cached(path: str, size: int, mtime_ns: int, inode: int) -> GGUFInfo:
    try:
        with open(path, "rb", buffering=1 << 20) as f:
            magic = f.read(4)
            if magic != b"GGUF":
                raise StoreError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
            version, = struct.unpack("<I", _read(f, 4))
            if version < 2:
                raise StoreError(f"{path}: GGUF version {version} is too old (2 or later is needed)")
            tensor_count, kv_count = struct.unpack("<QQ", _read(f, 16))
            metadata = {}
            for _ in range(kv_count):
                key = _string(f)
                vtype, = struct.unpack("<I", _read(f, 4))
                metadata[key] = _value(f, vtype)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (struct.error, UnicodeDecodeError, EOFError) as exc:
        raise StoreError(f"{path} is truncated or corrupt: its GGUF header cannot be read ({exc})") from exc
    return GGUFInfo(version=version, tensor_count=tensor_count, metadata=metadata)


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("unexpected end of file")
    return data


def _string(f: BinaryIO) -> str:
    n, = struct.unpack("<Q", _read(f, 8))
    if n > 1 << 26:
        raise EOFError(f"string length {n} is implausible")
    return _read(f, n).decode("utf-8")


def _value(f: BinaryIO, vtype: int) -> object:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type, count = struct.unpack("<IQ", _read(f, 12))
        if item_type in _SCALARS:
            size = struct.calcsize(_SCALARS[item_type])
            f.seek(size * count, 1)
        elif item_type == _STRING:
            for _ in range(count):
                n, = struct.unpack("<Q", _read(f, 8))
                f.seek(n, 1)
        else:
            for _ in range(count):
                _value(f, item_type)
        return f"<array of {count}>"
    raise EOFError(f"unknown GGUF value type {vtype}")
