"""Read a GGUF file's metadata (architecture, context length, chat template) without loading weights,
and where its tensor data ends, so a truncated file is named as such before an engine tries it."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from warmstart.errors import StoreError
from warmstart.store.files import SHARD, folder_files

_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_SCALARS = {t: struct.Struct(fmt) for t, fmt in _FORMATS.items()}
_U32, _U64, _U64_U64, _U32_U64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<QQ"), struct.Struct("<IQ")
_STRING, _ARRAY = 8, 9
# ggml tensor types: (elements per block, bytes per block), from ggml's type traits
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}


@dataclass(frozen=True)
class GGUFInfo:
    version: int
    tensor_count: int
    metadata: dict
    # the byte where the last tensor's data ends: a shorter file is truncated (None: a tensor type
    # this reader does not know, so only its start is certain)
    data_end: int | None = None
    data_start_min: int = 0  # the last tensor's data starts here at least
    # bytes of the longest entry in the vocabulary: no token covers more bytes of text than this
    max_token_bytes: int | None = None

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


def holds_gguf(path: Path) -> bool:
    """Whether `path` is a folder holding GGUF files (hidden ones, such as a download's cache, left out)."""
    return path.is_dir() and bool(_gguf_files(path))


def _gguf_files(folder: Path) -> list[tuple[str, Path]]:
    """A folder's GGUF files, as `folder_files` lists them (hidden ones left out)."""
    return [(rel, p) for rel, p in folder_files(folder) if rel.lower().endswith(".gguf")]


def gguf_file(path: Path) -> Path:
    """The GGUF file a model's path names: the path itself, or the model a folder holds (`gguf_in`). StoreError
    when a folder holds no GGUF."""
    if not path.is_dir():
        return path
    found = gguf_in(path)
    if found is None:
        raise StoreError(f"model folder {path} holds no .gguf file: set the model's path to a GGUF file")
    return found


def gguf_in(folder: Path) -> Path | None:
    """The GGUF model a folder holds (a Hugging Face snapshot, whose files are links into its blob store, or a
    folder of one's own), None when it holds no GGUF. A model split in shards is named by its first; a
    multimodal projector (mmproj*.gguf) beside the model is not the model. StoreError, saying what to set, when
    it holds several models."""
    found = _gguf_files(folder)
    models = [(rel, p) for rel, p in found if not Path(rel).name.lower().startswith("mmproj")] or found
    if not models:
        return None
    shards = [(m.group("model"), m.group("parts"), int(m.group("part")), p)
              for rel, p in models if (m := SHARD.match(rel))]
    if len(shards) == len(models) and len({(name, parts) for name, parts, _, _ in shards}) == 1:
        first = [p for _, _, part, p in shards if part == 1]
        if first:
            return first[0]
        raise StoreError(f"model folder {folder} holds shards of a split GGUF but not its first "
                         f"(-00001-of-...): download every part")
    if len(models) > 1:
        names = ", ".join(rel for rel, _ in models[:6]) + (", ..." if len(models) > 6 else "")
        raise StoreError(f"model folder {folder} holds {len(models)} GGUF models ({names}): name the one to serve, "
                         f"e.g. {folder / models[0][0]}")
    return models[0][1]


def read_gguf(path: Path) -> GGUFInfo:
    stat = path.stat()
    return _read_cached(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@lru_cache(maxsize=64)
def _read_cached(path: str, size: int, mtime_ns: int, inode: int) -> GGUFInfo:
    try:
        with open(path, "rb", buffering=0) as f:
            return _parse(path, _Cursor(f))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse(path: str, f: _Cursor) -> GGUFInfo:
    try:
        magic = f.read(4) if f.has(4) else bytes(f.buf)
        if magic != b"GGUF":
            raise StoreError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
        version, = f.unpack(_U32)
        if version < 2:
            raise StoreError(f"{path}: GGUF version {version} is too old (2 or later is needed)")
        tensor_count, kv_count = f.unpack(_U64_U64)
        metadata: dict[str, Any] = {}
        max_token = None
        for _ in range(kv_count):
            key = _string(f)
            vtype, = f.unpack(_U32)
            if key == "tokenizer.ggml.tokens" and vtype == _ARRAY:
                metadata[key], max_token = _longest_string(f)
            else:
                metadata[key] = _value(f, vtype)
        data_end, last_start = _tensor_extent(f, tensor_count, int(metadata.get("general.alignment", 32)))
    except (struct.error, UnicodeDecodeError, EOFError) as exc:
        raise StoreError(f"{path} is truncated or corrupt: its GGUF header cannot be read ({exc})") from exc
    return GGUFInfo(version=version, tensor_count=tensor_count, metadata=metadata, data_end=data_end,
                    data_start_min=last_start, max_token_bytes=max_token)


class _Cursor:
    """A position in the file's header, read into memory in growing chunks as the walk needs it: each step is
    an unpack at an offset, not a read and a seek (a 262k-token vocabulary took 0.1 s of CPU at every start,
    now 0.04). Not mapped: a file cut while it is read gives an error, not a SIGBUS."""

    __slots__ = ("buf", "f", "pos")

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.buf = bytearray()
        self.pos = 0

    def has(self, n: int) -> bool:
        """Whether `n` more bytes are there from the position (reading more of the file if needed)."""
        end = self.pos + n
        while end > len(self.buf):
            chunk = self.f.read(max(end - len(self.buf), len(self.buf), 1 << 20))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read(self, n: int) -> bytes:
        if not self.has(n):
            raise EOFError("unexpected end of file")
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        if not self.has(fmt.size):
            raise EOFError("unexpected end of file")
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def skip(self, n: int) -> None:
        if not self.has(n):
            raise EOFError("unexpected end of file")
        self.pos += n

    def tell(self) -> int:
        return self.pos


def _skip_strings(f: _Cursor, count: int) -> int:
    """Step over `count` strings; the longest one's length in bytes."""
    longest, unpack = 0, _U64.unpack_from
    buf, pos = f.buf, f.pos
    for _ in range(count):
        if pos + 8 > len(buf):
            f.pos = pos
            if not f.has(8):
                raise EOFError("unexpected end of file")
            buf = f.buf
        n, = unpack(buf, pos)
        pos += 8 + n
        if n > longest:
            longest = n
    f.pos = pos
    if not f.has(0):  # the last string's bytes are there too
        raise EOFError("unexpected end of file")
    return longest


def _longest_string(f: _Cursor) -> tuple[str, int | None]:
    """Skip an array, returning its summary and, for strings, the longest one's length in bytes."""
    item_type, count = f.unpack(_U32_U64)
    if item_type != _STRING:
        f.pos -= 12
        return str(_value(f, _ARRAY)), None
    return f"<array of {count}>", _skip_strings(f, count)


def check_complete(path: Path) -> GGUFInfo:
    """The file's info, or a StoreError when the file ends before its tensor data does."""
    info = read_gguf(path)
    size = path.stat().st_size
    end = info.data_end if info.data_end is not None else info.data_start_min + 1
    if size < end:
        raise StoreError(f"model file {path} is truncated: its tensor data ends at byte {end:,} but the file has "
                         f"{size:,} bytes ({size / end:.0%}); copy or download it again")
    return info


def _tensor_extent(f: _Cursor, count: int, alignment: int) -> tuple[int | None, int]:
    """Where the tensor data ends (None if a type is unknown), and where the last tensor starts."""
    if count > 1 << 24 or alignment <= 0:
        raise EOFError(f"implausible tensor count {count} or alignment {alignment}")
    end, last_start, known = 0, 0, True
    for _ in range(count):
        _string(f)
        n_dims, = f.unpack(_U32)
        if n_dims > 8:
            raise EOFError(f"a tensor with {n_dims} dimensions is implausible")
        dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
        ggml_type, offset = f.unpack(_U32_U64)
        elements = 1
        for d in dims:
            elements *= d
        block = _GGML_BLOCKS.get(ggml_type)
        if block is None:
            known = False
        else:
            end = max(end, offset + elements // block[0] * block[1])
        last_start = max(last_start, offset)
    data_start = -(-f.tell() // alignment) * alignment
    return (data_start + end if known else None), data_start + last_start


def _string(f: _Cursor) -> str:
    n, = f.unpack(_U64)
    if n > 1 << 26:
        raise EOFError(f"string length {n} is implausible")
    return f.read(n).decode("utf-8")


def _value(f: _Cursor, vtype: int) -> object:
    if vtype in _SCALARS:
        return f.unpack(_SCALARS[vtype])[0]
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        item_type, count = f.unpack(_U32_U64)
        if item_type in _SCALARS:
            f.skip(_SCALARS[item_type].size * count)
        elif item_type == _STRING:
            _skip_strings(f, count)
        else:
            for _ in range(count):
                _value(f, item_type)
        return f"<array of {count}>"
    raise EOFError(f"unknown GGUF value type {vtype}")
