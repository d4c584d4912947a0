"""The data directory full, then read-only, under a running server: starts are refused with a clear
error, warm models go on serving, and everything recovers when the disk does (no restart)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.faults import audit_verify, burst, metric_sum
from tests.support import SMOLLM2

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")]


def model(name: str, **extra) -> dict:
    return {"name": name, "engine": "llamacpp", "path": SMOLLM2, "options": {"n_ctx": 512}, **extra}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def fill(directory: Path) -> None:
    """Write until the filesystem refuses: ENOSPC, as on a full disk."""
    chunk = b"\0" * 65536
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as f:
        while True:
            f.write(chunk)
            f.flush()


def completion(name: str, **extra) -> dict:
    return {"model": name, "prompt": "One, two,", "max_tokens": 4, **extra}


@pytest.mark.slow
def test_a_full_then_read_only_data_dir_refuses_starts_clearly_while_warm_models_serve(start_server, tmp_path,
                                                                                      request):
    data = tmp_path / "data"
    data.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data))
    mounts = [data]
    servers = []

    def unmount_all() -> None:
        for srv in servers:
            srv.stop()
        for path in reversed(mounts):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)

    request.addfinalizer(unmount_all)
    srv = start_server([model("a", keep_alive=-1), model("b")], data_dir=data)
    servers.append(srv)
    assert srv.post("/v1/completions", completion("a"))[0] == 200
    [warm] = srv.model("a")["replicas"]

    def serve_a(n: int = 6) -> list[int]:
        answers = asyncio.run(burst(srv.url, [completion("a", stream=bool(i % 2)) for i in range(n)], timeout=60))
        return [a.status for a in answers]

    def start_b() -> tuple[int, dict]:
        srv.post("/admin/models/b/unload", {})
        status, _, body = srv.post("/v1/completions", completion("b"))
        return status, body

    # full: an audit record may still fit in a page the log already holds; within a few starts it does not
    fill(data)
    for _ in range(8):
        status, body = start_b()
        if status != 200:
            break
    assert status == 503, "a start on a full data directory was never refused"
    message = body["error"]["message"]
    assert body["error"]["code"] == "model_start_failed"
    assert "No space left on device" in message and "free disk space" in message, message
    assert serve_a() == [200] * 6
    assert metric_sum(srv, "warmstart_audit_write_failures_total") >= 1

    (data / "filler").unlink()  # space again: the next start works, without a restart
    assert start_b()[0] == 200

    # read-only: a read-only bind mount over the data directory (chmod would not stop root)
    mount("--bind", str(data), str(data))
    mounts.append(data)
    mount("-o", "remount,bind,ro", str(data))
    status, body = start_b()
    assert status == 503 and body["error"]["code"] == "model_start_failed"
    message = body["error"]["message"]
    assert "Read-only file system" in message and "data directory must be writable" in message, message
    assert serve_a() == [200] * 6
    assert srv.model("a")["replicas"][0]["pid"] == warm["pid"]  # the warm engine never noticed

    subprocess.run(["umount", str(data)], check=True, capture_output=True, timeout=30)
    mounts.pop()
    assert start_b()[0] == 200
    assert "Traceback" not in srv.log()
    verified = audit_verify(data)
    assert verified.returncode == 0, verified.stdout
    print(f"\n[reliability] data dir full: start refused ('No space left on device ... free disk "
          f"space'), warm model 12/12 served; read-only: start refused ('Read-only file system ... must be "
          f"writable'); both recovered without a restart; audit verify: {verified.stdout.splitlines()[0][:60]}")
