"""The store in a running server, with the real llama.cpp engine and a real model file: demotion to the
RAM tier and promotion on demand, refusal when it does not fit, refusal of a modified file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import SMOLLM2, chat, smollm2
from warmstart.store.pagecache import evict, resident_fraction
from warmstart.store.sources import resolve_model_path

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def _metric(srv, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _tier(srv) -> dict:
    return srv.model(MODEL)["tier"]


def test_an_idle_replica_is_demoted_to_ram_then_promoted_by_a_request(start_server):
    srv = start_server([smollm2(keep_alive="1s", ram_keep_alive="10m", options={"n_ctx": 512})])
    began = time.monotonic()  # the demotion comes after this: its 10 minutes began no earlier
    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200 and headers["x-warmstart-start"] == "cold"
    assert _tier(srv)["tier"] == "loaded"
    path = Path(srv.model(MODEL)["path"])

    tier = srv.wait_for(lambda: _tier(srv)["tier"] == "ram" and _tier(srv), timeout=30)
    assert srv.model(MODEL)["state"] == "cold" and srv.model(MODEL)["replicas"] == []
    held = tier["ram"]
    assert held["method"] in ("mlock", "tmpfs") and held["bytes"] == path.stat().st_size and held["alive"]
    assert 600 - (time.monotonic() - began) <= held["until_s"] <= 600
    if held["method"] == "mlock":
        assert evict(path) == 1.0  # the holder pins the pages: a start reads memory
    else:
        copies = list(Path("/dev/shm").glob("warmstart-*/*/*" + path.name))
        assert copies and resident_fraction(copies[0]) == 1.0

    status, headers, body = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold"  # a start, from RAM
    assert _tier(srv)["tier"] == "loaded"
    srv.wait_for(lambda: _tier(srv)["tier"] == "ram", timeout=30)
    assert _metric(srv, "warmstart_replica_tier_seconds_total", model=MODEL, tier="ram") > 0
    assert _metric(srv, "warmstart_replica_tier_seconds_total", model=MODEL, tier="loaded") > 0
    assert _metric(srv, "warmstart_ram_tier_bytes", model=MODEL) == path.stat().st_size
    if held["method"] == "mlock":  # a holder killed from outside: the model is back on disk, not pretending
        os.kill(_tier(srv)["ram"]["holder_pid"], signal.SIGKILL)
        srv.wait_for(lambda: _tier(srv)["tier"] == "disk", timeout=10)

    status, _, _ = srv.post(f"/admin/models/{MODEL}/unload", {})
    assert status == 200
    assert _tier(srv)["tier"] == "disk" and _tier(srv)["ram"] is None
    if held["method"] == "mlock":
        assert evict(path) == 0.0  # released: the kernel may drop it again
    assert _metric(srv, "warmstart_ram_tier_bytes", model=MODEL) == 0


def _cli(srv, *args: str) -> subprocess.CompletedProcess:
    cmd = [".venv/bin/warmstart"] if os.path.exists(".venv/bin/warmstart") else ["warmstart"]
    return subprocess.run([*cmd, *args, "--url", srv.url], capture_output=True, text=True, timeout=120)


def test_a_hold_by_hand_outlasts_keep_alive_unloads_until_it_ends_or_is_released(start_server):
    # no ram_keep_alive: without the hold every keep-alive unload would send the weights to disk
    srv = start_server([smollm2(keep_alive="1s", options={"n_ctx": 512})])
    path = Path(srv.model(MODEL)["path"])
    began = time.monotonic()
    out = _cli(srv, "hold", MODEL, "--keep-alive", "10m")
    assert out.returncode == 0, out.stderr
    assert f"{MODEL}: cold, weights held in RAM (" in out.stdout and "for 10m" in out.stdout
    tier = _tier(srv)
    assert tier["tier"] == "ram" and tier["held_by_hand"]
    assert 600 - (time.monotonic() - began) <= tier["ram"]["until_s"] <= 600
    assert tier["ram"]["bytes"] == path.stat().st_size
    if tier["ram"]["method"] == "mlock":
        assert evict(path) == 1.0  # held before any start: the first start reads memory

    status, headers, _ = srv.post("/v1/chat/completions", chat(max_tokens=4))
    assert status == 200 and headers["x-warmstart-start"] == "cold" and _tier(srv)["tier"] == "loaded"
    srv.wait_for(lambda: srv.model(MODEL)["state"] == "cold", timeout=30)  # unloaded by keep-alive ...
    tier = _tier(srv)
    assert tier["tier"] == "ram" and tier["held_by_hand"] and tier["ram"]["until_s"] > 500  # ... still held
    assert re.search(r"cold +ram \((mlock|tmpfs), \d+m(\d+s)?, by hand\)", _cli(srv, "ps").stdout)
    assert _metric(srv, "warmstart_ram_tier_bytes", model=MODEL) == path.stat().st_size

    out = _cli(srv, "hold", MODEL, "--keep-alive", "0")
    assert out.returncode == 0 and "weights on disk" in out.stdout
    assert _tier(srv)["tier"] == "disk" and not _tier(srv)["held_by_hand"]
    assert _metric(srv, "warmstart_ram_tier_bytes", model=MODEL) == 0


def test_a_hold_by_hand_that_does_not_fit_is_refused_with_the_limit_and_bad_requests_get_4xx(start_server):
    srv = start_server([smollm2(options={"n_ctx": 512})], sections={"store": {"ram_max": "1MiB"}})
    status, _, body = srv.post(f"/admin/models/{MODEL}/ram", {"keep_alive": "1h"})
    assert status == 409 and body["error"]["code"] == "ram_tier_refused"
    assert "store.ram_max is 0.00 GiB" in body["error"]["message"]
    assert _tier(srv)["tier"] == "disk" and "store.ram_max" in _tier(srv)["last_refusal"]
    assert _metric(srv, "warmstart_ram_tier_refusals_total", model=MODEL) == 1
    out = _cli(srv, "hold", MODEL)
    assert out.returncode == 1 and out.stderr.startswith("warmstart: error: cannot hold model")
    assert "(HTTP 409)" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    status, _, body = srv.post("/admin/models/nope/ram", {})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, _, body = srv.post(f"/admin/models/{MODEL}/ram", {"keep_alive": "soon"})
    assert status == 400 and body["error"]["param"] == "keep_alive"
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))  # and the model still serves, from disk
    assert status == 200


def test_a_demotion_that_does_not_fit_is_refused_and_the_model_goes_cold(start_server):
    srv = start_server([smollm2(keep_alive="1s", ram_keep_alive="10m", options={"n_ctx": 512})],
                       sections={"store": {"ram_max": "1MiB"}})
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200
    srv.wait_for(lambda: srv.model(MODEL)["state"] == "cold", timeout=30)
    tier = _tier(srv)
    assert tier["tier"] == "disk"
    assert "store.ram_max is 0.00 GiB" in tier["last_refusal"]
    assert _metric(srv, "warmstart_ram_tier_refusals_total", model=MODEL) == 1
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))  # it still starts, from disk
    assert status == 200


def test_a_modified_model_file_is_refused_at_start_until_restored(start_server, tmp_path):
    from warmstart.store.sources import resolve_model_path

    original = resolve_model_path(smollm2()["path"], tmp_path)
    model = tmp_path / "smol.gguf"
    shutil.copyfile(original, model)
    srv = start_server([smollm2(path=str(model), options={"n_ctx": 512})])
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200  # first start: its manifest is recorded
    srv.post(f"/admin/models/{MODEL}/unload", {})

    data = bytearray(model.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    model.write_bytes(bytes(data))
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 503
    assert body["error"]["code"] == "model_start_failed"
    assert "has sha256" in body["error"]["message"] and "modified" in body["error"]["message"]
    assert "modified" in srv.model(MODEL)["last_failure"]

    data[middle] ^= 0xFF
    model.write_bytes(bytes(data))
    status, _, _ = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200


def test_a_hugging_face_snapshot_folder_holding_a_gguf_is_added_and_served(start_server, tmp_path):
    """`models add` of a snapshot folder (its file a link into the blob store), then served by name: llama.cpp
    is given the GGUF the folder holds (it once was given the folder: "Is a directory")."""
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "rev1"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    shutil.copyfile(resolve_model_path(SMOLLM2, tmp_path), blobs / "9f8e7d")
    (snap / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(blobs / "9f8e7d")
    data = tmp_path / "data"
    added = subprocess.run([sys.executable, "-m", "warmstart", "models", "add", str(snap), "--name", "snap-smol",
                            "--data-dir", str(data)], capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and "added snap-smol: gguf, 1 file(s)" in added.stdout, added.stderr
    srv = start_server([smollm2(name="snap-smol", path="store:snap-smol", options={"n_ctx": 512})], data_dir=data)
    status, headers, body = srv.post("/v1/chat/completions", chat(model="snap-smol", max_tokens=8))
    assert status == 200, body
    assert headers["x-warmstart-start"] == "cold" and body["choices"][0]["message"]["content"]
