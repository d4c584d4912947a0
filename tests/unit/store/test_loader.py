"""The fast loader returns exactly the tensors safetensors does, for every dtype, however it reads."""

from __future__ import annotations

import json
import os
import struct

import pytest

from warmstart.errors import StoreError
from warmstart.store.buffers import ArenaPool
from warmstart.store.loader import DTYPES, INDEX, FastLoader, folder_files, read_header

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = [DTYPES[k][2] for k in DTYPES]


def _random_tensor(dtype_name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    dtype = getattr(torch, dtype_name)
    count = 1
    for d in shape:
        count *= d
    if dtype is torch.bool:
        return (torch.randint(0, 2, (count,), generator=gen) == 1).reshape(shape)
    raw = torch.randint(0, 256, (count * dtype.itemsize,), dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)  # every bit pattern, NaNs included


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture
def every_dtype(tmp_path):
    gen = torch.Generator().manual_seed(7)
    tensors = {f"t.{name}": _random_tensor(name, (3, 5, 67), gen) for name in TORCH_DTYPES}
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.float32)
    tensors["empty"] = torch.empty((0, 4), dtype=torch.float16)
    tensors["odd.offset"] = _random_tensor("uint8", (13,), gen)  # pushes later tensors off alignment
    tensors["after.odd"] = _random_tensor("float32", (7, 3), gen)
    path = tmp_path / "every.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"origin": "test"})
    return path


@pytest.mark.parametrize("direct", ["auto", "never", "always"])
@pytest.mark.parametrize("chunk", [4096, 1 << 20])
def test_torch_tensors_are_bit_identical_to_safetensors_for_every_dtype(every_dtype, direct, chunk):
    expected = safetensors_torch.load_file(str(every_dtype))
    loader = FastLoader(threads=3, chunk=chunk, direct=direct)
    with loader.load(every_dtype) as ckpt:
        got = ckpt.torch()
        assert set(got) == set(expected)
        for name, ref in expected.items():
            assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, name
            assert _bytes(got[name]) == _bytes(ref), name
        assert ckpt.header.metadata == {"origin": "test"}
        assert ckpt.stats.bytes == every_dtype.stat().st_size - ckpt.header.data_start


def test_numpy_views_match_safetensors_numpy_and_bf16_names_the_way_out(tmp_path):
    np = pytest.importorskip("numpy")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(3)
    arrays = {n: rng.integers(0, 256, 2 * 3 * 11 * np.dtype(n).itemsize, dtype=np.uint8).view(n).reshape(2, 3, 11)
              for n in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                        "uint16", "uint32", "uint64")}
    arrays["bool"] = rng.integers(0, 2, (4, 4)).astype(bool)
    path = tmp_path / "np.safetensors"
    safetensors_numpy.save_file(arrays, str(path))
    expected = safetensors_numpy.load_file(str(path))
    with FastLoader(chunk=4096).load(path) as ckpt:
        got = ckpt.numpy()
        for name, ref in expected.items():
            assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
            assert got[name].tobytes() == ref.tobytes(), name

    bf16 = tmp_path / "bf16.safetensors"
    safetensors_torch.save_file({"w": torch.ones(2, dtype=torch.bfloat16)}, str(bf16))
    with FastLoader().load(bf16) as ckpt, pytest.raises(StoreError, match=r"numpy cannot represent; use \.torch"):
        ckpt.numpy()


def test_the_buffer_is_reused_and_released_views_are_refused(every_dtype):
    pool = ArenaPool()
    loader = FastLoader(pool=pool)
    first = loader.load(every_dtype)
    arena = first._arena
    first.release()
    with pytest.raises(StoreError, match="released"):
        first.torch()
    second = loader.load(every_dtype)
    assert second._arena is arena  # the pre-faulted buffer served the next load
    held = loader.load(every_dtype)  # the first is busy: a second arena
    assert held._arena is not arena
    second.release()
    held.release()
    assert pool.idle_bytes >= 2 * arena.capacity


def _write_raw(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_a_corrupt_or_truncated_file_is_a_store_error_naming_it(tmp_path):
    bad_json = tmp_path / "a.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(StoreError, match="not valid JSON"):
        read_header(bad_json)

    short = tmp_path / "b.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(StoreError, match="not a safetensors file"):
        read_header(short)

    wrong_span = tmp_path / "c.safetensors"
    _write_raw(wrong_span, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 12)
    with pytest.raises(StoreError, match="does not match its shape"):
        read_header(wrong_span)

    odd_dtype = tmp_path / "d.safetensors"
    _write_raw(odd_dtype, {"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(StoreError, match="dtype C64"):
        read_header(odd_dtype)


def test_a_file_cut_short_while_loading_is_reported(tmp_path):
    path = tmp_path / "cut.safetensors"
    _write_raw(path, {"w": {"dtype": "U8", "shape": [100_000], "data_offsets": [0, 100_000]}}, b"\1" * 100_000)
    loader = FastLoader(chunk=4096, direct="never")
    header = read_header(path)
    with open(path, "r+b") as f:
        f.truncate(header.data_start + 50_000)
    with pytest.raises(StoreError, match="ended early"):
        loader.read_file(str(path), header.file_size, loader.pool.take(header.file_size).view)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here): the pinned-buffer path")
def test_load_to_cuda_is_bit_identical_on_a_real_gpu(every_dtype):
    from warmstart.store.loader import load_to_cuda

    expected = safetensors_torch.load_file(str(every_dtype))
    got = load_to_cuda(every_dtype, chunk=1 << 20, depth=3)
    for name, ref in expected.items():
        assert got[name].is_cuda
        assert _bytes(got[name].cpu()) == _bytes(ref), name


def test_auto_reads_uncached_chunks_direct_and_cached_chunks_through_the_cache(tmp_path):
    from warmstart.store.pagecache import chunk_residency, evict

    path = tmp_path / "half.safetensors"
    _write_raw(path, {"w": {"dtype": "U8", "shape": [8 << 20], "data_offsets": [0, 8 << 20]}}, os.urandom(8 << 20))
    size = path.stat().st_size
    evict(path)
    with open(path, "rb") as f:  # the second half into the page cache
        f.seek(size // 2)
        f.read()
    chunk = 1 << 20
    resident = chunk_residency(path, chunk)
    assert resident[0] == 0.0 and resident[-1] == 1.0
    with FastLoader(chunk=chunk).load(path) as ckpt:
        assert size // 2 - chunk <= ckpt.stats.direct_bytes <= size // 2 + chunk
        assert bytes(ckpt.raw("w")) == path.read_bytes()[ckpt.header.data_start:]


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")


def test_a_folder_s_weight_files_come_in_shard_order(tmp_path):
    _touch(tmp_path, "model-00010-of-00010.safetensors", "model-00002-of-00010.safetensors",
           "model-00001-of-00010.safetensors", "tokenizer.json")
    assert [f.name for f in folder_files(tmp_path)] == [
        "model-00001-of-00010.safetensors", "model-00002-of-00010.safetensors", "model-00010-of-00010.safetensors"]


def test_the_index_picks_the_shards_and_leaves_a_consolidated_copy_out(tmp_path):
    _touch(tmp_path, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "consolidated.safetensors")
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}))
    assert [f.name for f in folder_files(tmp_path)] == ["model-00001-of-00002.safetensors",
                                                        "model-00002-of-00002.safetensors"]


def test_a_shard_the_index_names_but_the_folder_lacks_is_refused_by_name(tmp_path):
    _touch(tmp_path, "model-00001-of-00002.safetensors")
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(StoreError, match=r"model-00002-of-00002\.safetensors"):
        folder_files(tmp_path)


def test_a_folder_without_weights_or_with_a_broken_index_is_refused(tmp_path):
    with pytest.raises(StoreError, match=r"no \*\.safetensors"):
        folder_files(tmp_path)
    _touch(tmp_path, "model.safetensors")
    (tmp_path / INDEX).write_text("{")
    with pytest.raises(StoreError, match="weight_map"):
        folder_files(tmp_path)
