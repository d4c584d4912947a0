"""Shared pieces of the benchmarks: a warmstart server in a subprocess, timing over keep-alive HTTP, tables."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from warmstart.cli_format import columns
from warmstart.engines.process import die_with_parent, free_port
from warmstart.loadtest.report import percentile as loadtest_percentile
from warmstart.progress import step


def leave_scratch(path: Path, exc_type: type[BaseException] | None) -> None:
    """A benchmark's own folder in the temporary directory, at the benchmark's end: removed when it ended well or
    was interrupted by hand; kept, and named on stderr, when it failed (its logs say why)."""
    if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
        shutil.rmtree(path, ignore_errors=True)
    else:
        print(f"warmstart bench: the failed run's logs and data are kept in {path}", file=sys.stderr)


@contextlib.contextmanager
def scratch(prefix: str, given: str | None = None) -> Iterator[Path]:
    """A working folder for a benchmark: `given` (made if needed, always kept), else a new one in the temporary
    directory, left as `leave_scratch` says."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    except BaseException as exc:
        leave_scratch(path, type(exc))
        raise
    leave_scratch(path, None)


class ServerProcess:
    """`warmstart serve` with a given config text, in its own data directory. Without a `workdir` it makes one
    in the temporary directory, left at the end as `leave_scratch` says (the server's log and data kept when the
    benchmark failed)."""

    def __init__(self, config_text: str, workdir: Path | None = None) -> None:
        self.owned = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="warmstart-bench-"))
        self.port = free_port()
        self.config = self.workdir / "warmstart.toml"
        self.config.write_text(config_text)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server has not been started"
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        step("starting a warmstart server")
        with open(self.workdir / "server.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warmstart", "serve", "--config", str(self.config), "--port", str(self.port),
                 "--data-dir", str(self.workdir / "data"), "--log-level", "warning"],
                stdout=log, stderr=log, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=die_with_parent)  # a benchmark stopped by a signal does not leave its server running
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if request_json(self.url, "GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        why = "did not become ready in 60 s" if self.proc.poll() is None else f"exited ({self.proc.returncode})"
        self._stop()
        raise RuntimeError(f"warmstart {why}; see {self.workdir / 'server.log'}")

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        self._stop()
        if self.owned:  # each run would otherwise leave ~10 MB (log, history, store) in the temporary directory
            leave_scratch(self.workdir, exc_type)

    def _stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def request_json(base: str, method: str, path: str, body: Any = None, timeout: float = 600) -> tuple[int, Any]:
    host, port = base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


class Client:
    """One keep-alive connection, as a benchmark client would hold; `reconnects`: how often the server had closed
    it under a request (llama.cpp's server does after 100 requests on one connection; a gateway never should)."""

    def __init__(self, base: str) -> None:
        host, port = base.split("//")[1].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)
        self.reconnects = 0

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, int, bytes, dict[str, str]]:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            t = time.perf_counter()
            try:
                self.conn.request("POST", path, body=data, headers={"content-type": "application/json"})
                resp = self.conn.getresponse()
                payload = resp.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # the server closed this keep-alive connection meanwhile: timed again on a new one
                self.conn.close()
                self.reconnects += 1
                if attempt:
                    raise
                continue
            return time.perf_counter() - t, resp.status, payload, dict(resp.getheaders())
        raise AssertionError("unreachable")

    def first_token(self, path: str, body: dict[str, Any]) -> tuple[float, float, dict[str, str]]:
        """Seconds to the first SSE event carrying generated text, and to the end of the stream."""
        data = json.dumps({**body, "stream": True}).encode()
        t = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"content-type": "application/json"})
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
        first = None
        while True:
            line = resp.readline()
            if not line:
                break
            if first is None and line.startswith(b"data: {") and _has_text(line[6:]):
                first = time.perf_counter() - t
        return (first if first is not None else time.perf_counter() - t), time.perf_counter() - t, \
            dict(resp.getheaders())

    def close(self) -> None:
        self.conn.close()


def _has_text(data: bytes) -> bool:
    try:
        choice = json.loads(data)["choices"][0]
    except (ValueError, KeyError, IndexError):
        return False
    return bool(choice.get("text") or (choice.get("delta") or {}).get("content"))


def percentile(values: list[float], q: float) -> float:
    value = loadtest_percentile(values, q)  # the load test's interpolation; NaN in a table for no values
    return float("nan") if value is None else value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    return "\n".join(columns(cells, rule=True))


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform,
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def write_json(path: str | None, result: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
