"""Seals: an image's digests, trusted at start only while the file is the one sealed and cannot have changed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from warmstart.errors import IntegrityError, StoreError
from warmstart.store.digest import DigestCache, sha256_file
from warmstart.store.manifest import ManifestStore
from warmstart.store.seal import Seals, container_started_ns, seal_document, stamp
from warmstart.telemetry.audit import weights_digest


def sealed_model(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "models" / "m.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + os.urandom(4096))
    seal = tmp_path / "models" / "seals.json"
    seal.write_text(seal_document([(str(model), model.stat().st_size, sha256_file(model))]))
    stamp(seal)  # what the build runs inside the image
    return model, seal


def seals(seal: Path, *, started_ns: int | None = None, writable: bool = False) -> Seals:
    loaded = Seals.load(seal)
    return Seals(loaded.files, time.time_ns() + 10**9 if started_ns is None else started_ns, loaded.checked_at,
                 can_write=lambda _path: writable)


def test_a_sealed_file_is_trusted_without_reading_it(tmp_path: Path) -> None:
    model, seal = sealed_model(tmp_path)
    cache = DigestCache(None, seals(seal))
    d = cache.digest(model)
    assert (d.sha256, d.sealed, cache.hashed) == (sha256_file(model), True, 0)
    assert weights_digest(cache, model).fields()["sha256_basis"] == "seal"  # still the seal, now found by stat
    assert weights_digest(DigestCache(None, seals(seal)), model).fields()["sha256_basis"] == "seal"


def test_a_file_changed_since_the_container_started_is_hashed_and_refused(tmp_path: Path) -> None:
    model, seal = sealed_model(tmp_path)
    store = ManifestStore(tmp_path / "data", DigestCache(None, seals(seal, started_ns=time.time_ns())))
    store.check("m", model, engine="llamacpp", source="x")  # first use: the seal's digest becomes the manifest's
    before = model.stat()
    time.sleep(0.03)
    data = bytearray(model.read_bytes())
    data[10] ^= 0xFF
    model.write_bytes(bytes(data))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, mtime put back: only ctime moved
    with pytest.raises(IntegrityError, match="the file was modified"):
        store.check("m", model, engine="llamacpp", source="x")
    assert store.digests.hashed == 1


@pytest.mark.parametrize("change", ["mtime", "writable", "ctime after start", "not in the seal"])
def test_anything_else_is_read_and_hashed(tmp_path: Path, change: str) -> None:
    model, seal = sealed_model(tmp_path)
    kwargs: dict = {}
    if change == "mtime":
        os.utime(model, (1, 1))
    elif change == "writable":
        kwargs["writable"] = True
    elif change == "ctime after start":
        kwargs["started_ns"] = model.stat().st_ctime_ns - 1
    else:
        model = model.rename(model.with_name("other.gguf"))
    cache = DigestCache(None, seals(seal, **kwargs))
    d = cache.digest(model)
    assert (d.sealed, cache.hashed, d.sha256) == (False, 1, sha256_file(model))


def test_a_seal_is_refused_when_damaged_or_not_owned_by_root(tmp_path: Path) -> None:
    _, seal = sealed_model(tmp_path)
    seal.write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        Seals.load(seal)
    seal.write_text(json.dumps({"files": []}))
    if os.geteuid() == 0:
        os.chown(seal, 65534, 65534)
    with pytest.raises(StoreError, match="owned by root"):
        Seals.load(seal)
    with pytest.raises(StoreError, match="cannot read"):
        Seals.load(tmp_path / "missing.json")


def test_the_build_refuses_a_file_that_is_not_the_one_checked(tmp_path: Path) -> None:
    _, seal = sealed_model(tmp_path)
    doc = json.loads(seal.read_text())
    doc["files"][0]["sha256"] = "0" * 64
    seal.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="not the file checked on the host"):
        stamp(seal)


def test_the_container_start_is_read_from_pid_1() -> None:
    started = container_started_ns()
    assert started is not None and 0 < started <= time.time_ns()
    assert container_started_ns(Path("/nonexistent")) is None
