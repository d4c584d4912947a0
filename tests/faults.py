"""Helpers for the reliability tests: metrics of a running server, processes, bursts of requests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, Server, pid_alive

SMOL = "smollm2-135m-instruct"
# the conversation trace the load and soak tests replay: a copy in tests/data, so a clean clone has it
AZURE_CONV = ROOT / "tests" / "data" / "azure-2023" / "azure2023_conv.csv"


def metric_samples(srv: Server, name: str) -> list[tuple[dict[str, str], float]]:
    status, _, body = srv.request("GET", "/metrics")
    assert status == 200
    return [(s.labels, s.value) for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name]


def metric_sum(srv: Server, name: str, **labels: str) -> float:
    return sum(v for lab, v in metric_samples(srv, name) if all(lab.get(k) == x for k, x in labels.items()))


def ledger_pids(data_dir: Path) -> list[int]:
    """Engine processes a server recorded in its ledger (data_dir/run/engines)."""
    directory = data_dir / "run" / "engines"
    return sorted(int(p.stem) for p in directory.glob("*.json")) if directory.is_dir() else []


def workers_of(data_dir: Path) -> list[int]:
    """Live llama.cpp worker processes whose command line names this data directory's files or that
    were recorded in its ledger, whoever their parent is now (an orphan's parent is init)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"llamacpp_worker" in cmdline and str(data_dir).encode() in environ + cmdline \
                and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def rss_kib(pid: int) -> int:
    return int(proc_status(pid)["VmRSS"].split()[0])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def audit_verify(data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "warmstart", "audit", "verify", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


@dataclass
class Answer:
    index: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    error: str | None = None  # a client-side failure: timeout, connection

    def json(self) -> Any:
        return json.loads(self.body)


async def burst(url: str, bodies: list[dict[str, Any]], timeout: float) -> list[Answer]:
    """Send every body at once (each on its own connection) and collect every answer or client failure."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async def one(i: int, body: dict[str, Any]) -> Answer:
            answer = Answer(i)
            t = time.monotonic()
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            try:
                async with session.post(url + path, json=body) as resp:
                    answer.status, answer.headers = resp.status, {k.lower(): v for k, v in resp.headers.items()}
                    answer.body = await resp.read()
            except TimeoutError:
                answer.error = "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                answer.error = f"{type(exc).__name__}: {exc}"
            answer.seconds = time.monotonic() - t
            return answer

        return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))


def is_openai_error(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    error = body["error"]
    return isinstance(error.get("message"), str) and bool(error["message"]) and isinstance(error.get("type"), str) \
        and "param" in error and "code" in error
