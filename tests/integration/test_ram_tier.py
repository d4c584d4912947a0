"""The RAM tier on real files: the holder process pins pages against eviction, tmpfs copies serve starts,
and a lock limit is detected and refused with its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from warmstart.store.pagecache import evict, resident_fraction
from warmstart.store.tiers import RamTier, TierRefused

pytestmark = pytest.mark.integration


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(24 << 20))
    return path


def test_mlock_holder_keeps_the_file_in_memory_until_released(weights):
    tier = RamTier(method="mlock")
    if tier.choose_method(weights.stat().st_size) != "mlock":
        pytest.skip("this process may not mlock 24 MiB (no CAP_IPC_LOCK, small RLIMIT_MEMLOCK)")
    evict(weights)
    resident = tier.hold("m", [weights])
    try:
        assert resident.method == "mlock" and resident.bytes == 24 << 20 and resident.alive
        assert evict(weights) == 1.0  # locked pages cannot be dropped
        assert tier.path_for("m", weights) == weights
        assert tier.hold("m", [weights]) is resident  # holding twice is one hold
    finally:
        assert tier.release("m")
    assert evict(weights) == 0.0
    assert resident.holder is not None and resident.holder.poll() is not None


def test_tmpfs_copy_serves_starts_and_is_removed_on_release(weights):
    tier = RamTier(method="tmpfs", tmpfs_dir=Path("/dev/shm") / f"ws-test-{os.getpid()}")
    try:
        tier.hold("org/model", [weights])
        copy = tier.path_for("org/model", weights)
        assert copy != weights and copy.read_bytes() == weights.read_bytes()
        assert str(copy).startswith("/dev/shm/") and resident_fraction(copy) == 1.0
        tier.release("org/model")
        assert not copy.exists() and tier.path_for("org/model", weights) == weights
    finally:
        shutil.rmtree(tier.tmpfs_dir, ignore_errors=True)


@pytest.fixture
def checkpoint(tmp_path, weights):
    """A model folder as vLLM reads one: config beside the weights, one of them through a link (a Hugging Face
    snapshot links to its blobs), a subfolder, and a hidden file that is not part of the model."""
    folder = tmp_path / "tiny-llama"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer" / "tokenizer.json").write_bytes(os.urandom(1 << 20))
    (folder / "model.safetensors").symlink_to(weights)
    (folder / ".cache").write_text("not the model")
    return folder


@pytest.mark.parametrize("method", ["mlock", "tmpfs"])
def test_a_model_folder_is_held_whole_and_a_start_opens_it_where_it_is_held(checkpoint, weights, method):
    tier = RamTier(method=method, tmpfs_dir=Path("/dev/shm") / f"ws-test-{os.getpid()}")
    if tier.choose_method(26 << 20) != method:
        pytest.skip("this process may not mlock 25 MiB (no CAP_IPC_LOCK, small RLIMIT_MEMLOCK)")
    evict(weights)
    try:
        resident = tier.hold("tiny", [checkpoint])
        held = tier.path_for("tiny", checkpoint)
        assert resident.bytes == (24 << 20) + (1 << 20) + len('{"model_type": "llama"}')
        if method == "mlock":  # the same folder, its files (the linked one too) pinned in the page cache
            assert held == checkpoint.resolve() and evict(weights) == 1.0
        else:  # a copy with the same layout, the link copied as the file it names, the hidden file left out
            assert held.is_dir() and str(held).startswith("/dev/shm/")
            assert sorted(str(p.relative_to(held)) for p in held.rglob("*") if p.is_file()) == [
                "config.json", "model.safetensors", "tokenizer/tokenizer.json"]
            assert (held / "model.safetensors").read_bytes() == weights.read_bytes()
            assert not (held / "model.safetensors").is_symlink()
        tier.release("tiny")
        assert tier.path_for("tiny", checkpoint) == checkpoint and not (method == "tmpfs" and held.exists())
    finally:
        tier.release("tiny")
        shutil.rmtree(tier.tmpfs_dir, ignore_errors=True)


def _without_ipc_lock(code: str, memlock: int) -> subprocess.CompletedProcess:
    if not (shutil.which("setpriv") and shutil.which("prlimit")):
        pytest.skip("needs setpriv and prlimit (util-linux) to run without CAP_IPC_LOCK")
    return subprocess.run(["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock",
                           "prlimit", f"--memlock={memlock}", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)


def test_a_small_lock_limit_is_detected_refused_with_the_fix_and_auto_copies_instead(weights):
    code = f"""
from pathlib import Path
from warmstart.store.tiers import RamTier, TierRefused, lock_limit
print("limit", lock_limit())
tier = RamTier(method="mlock")
try:
    tier.hold("m", [Path({str(weights)!r})])
except TierRefused as exc:
    print("refused", exc)
print("auto", RamTier(method="auto").choose_method({24 << 20}))
"""
    proc = _without_ipc_lock(code, 8 << 20)
    if proc.returncode != 0 and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "limit 8388608" in out
    assert "refused cannot lock model 'm' (0.02 GiB) in RAM: RLIMIT_MEMLOCK is 8 MiB" in out
    assert 'store.ram_method = "tmpfs"' in out
    assert "auto tmpfs" in out


def test_the_holder_reports_a_failed_lock_instead_of_dying_silently(weights):
    proc = _without_ipc_lock(f"import subprocess, sys; r = subprocess.run([sys.executable, '-m', "
                             f"'warmstart.store.holder', {str(weights)!r}], capture_output=True, text=True, "
                             "stdin=subprocess.DEVNULL); print(r.returncode, r.stdout)", 1 << 20)
    assert proc.returncode == 0, proc.stderr
    code, _, message = proc.stdout.strip().partition(" ")
    assert code == "1" and '"error": "cannot lock' in message and str(weights) in message


def test_refused_holds_take_nothing(weights):
    tier = RamTier(method="auto", max_bytes=1 << 20)
    with pytest.raises(TierRefused):
        tier.hold("m", [weights])
    assert tier.resident("m") is None and tier.held_bytes == 0
