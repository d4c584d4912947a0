"""The benchmarks' working folders: a run that ends well leaves nothing in the temporary directory (each `bench
serve` left ~10 MB, `bench quantize` ~600 MB); a failed one keeps its logs and says where; a server that cannot
start is reported at once, not after the 60 s wait for it to be ready."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import pid_alive, wait_until
from warmstart.bench._harness import Client, ServerProcess, request_json, scratch
from warmstart.bench.serve import STUB


def test_a_scratch_folder_is_removed_when_the_run_ends_well_or_is_interrupted(tmp_path):
    with scratch("warmstart-test-") as work:
        (work / "model.gguf").write_bytes(b"x" * 1000)
    assert not work.exists()
    with pytest.raises(KeyboardInterrupt), scratch("warmstart-test-") as work:
        (work / "model.gguf").write_bytes(b"x")
        raise KeyboardInterrupt
    assert not work.exists()


def test_a_failed_run_keeps_its_folder_and_names_it(capsys):
    with pytest.raises(RuntimeError, match="engine died"), scratch("warmstart-test-") as work:
        (work / "server.log").write_text("why it failed")
        raise RuntimeError("engine died")
    try:
        assert (work / "server.log").read_text() == "why it failed"
        assert str(work) in capsys.readouterr().err
    finally:
        shutil.rmtree(work)


def test_a_folder_given_is_made_and_kept(tmp_path):
    given = tmp_path / "keep" / "here"
    with scratch("warmstart-test-", str(given)) as work:
        (work / "f16.gguf").write_bytes(b"x")
    assert work == given and (given / "f16.gguf").exists()


def test_the_benchmark_server_leaves_no_folder_behind():
    with ServerProcess(STUB) as server:
        assert request_json(server.url, "GET", "/readyz")[0] == 200
        workdir = server.workdir
        assert (workdir / "server.log").exists()
    assert server.proc is not None and server.proc.poll() is not None
    assert not workdir.exists()


def test_a_server_that_cannot_start_is_reported_at_once_with_its_log():
    server = ServerProcess("[[models]\nname = ")  # not TOML: `warmstart serve` exits with an error
    with pytest.raises(RuntimeError, match=r"exited \(\d+\); see .*server\.log") as caught:  # not after 60 s
        server.__enter__()
    log = server.workdir / "server.log"
    assert str(log) in str(caught.value) and log.read_text().strip()
    shutil.rmtree(server.workdir)


def test_a_benchmark_stopped_by_a_signal_does_not_leave_its_server_running():
    bench = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "from warmstart.bench._harness import ServerProcess\n"
                              "from warmstart.bench.serve import STUB\n"
                              "with ServerProcess(STUB) as s:\n"
                              "    print(s.pid, s.workdir, flush=True)\n"
                              "    time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    server, workdir = None, None
    try:
        pid, folder = bench.stdout.readline().split(maxsplit=1)
        server, workdir = int(pid), Path(folder.strip())
        assert pid_alive(server)
        bench.send_signal(signal.SIGTERM)  # as `timeout` or a CI job's end does: no __exit__ runs
        bench.wait(30)
        wait_until(lambda: not pid_alive(server))
    finally:
        bench.kill()
        bench.stdout.close()
        if server is not None and pid_alive(server):
            os.kill(server, signal.SIGKILL)
        if workdir is not None:  # a benchmark killed by a signal cannot remove it
            shutil.rmtree(workdir, ignore_errors=True)


def test_a_connection_the_server_closed_under_a_request_is_timed_again_and_counted():
    """A server that answers one request per connection and closes it without saying so: the client's next request
    on it fails and is sent again on a new connection, and counted (`bench serve` reports the count per arm: a
    gateway closing its clients' connections is a defect that reconnecting alone would hide)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = Client(f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        for _ in range(3):
            _seconds, status, payload, _ = client.post("/v1/completions", {"prompt": "x"})
            assert status == 200 and payload == b"{}"
        assert client.reconnects == 2
    finally:
        client.close()
        listener.close()
        thread.join(5)
