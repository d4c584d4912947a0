"""A real Prometheus for tests: the repository's deploy/prometheus config, scraping a test server every second."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT, free_port

DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "warmstart-rules.yml"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def installed() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def config_for(target: str, interval: str = "1s", credentials_file: Path | None = None) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, changed only where a test must: the target and a short interval; with
    `credentials_file`, the job's `authorization` as the file's comment shows it for a server with API keys."""
    text = (DEPLOY / "prometheus.yml").read_text()
    if credentials_file is not None:  # the commented-out authorization lines, switched on as a user would
        block = re.search(r"^    # authorization:\n(    #   .*\n)+", text, re.M)
        assert block, "deploy/prometheus/prometheus.yml lost its commented authorization example"
        on = block.group(0).replace("    # ", "    ", 1).replace("    #   ", "      ")
        on = re.sub(r"credentials_file: .*", f"credentials_file: {credentials_file}", on)
        text = text.replace(block.group(0), on)
    config = yaml.safe_load(text)
    config["global"].update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    config["rule_files"] = [str(DEPLOY / path) for path in config["rule_files"]]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "warmstart"]
    job["static_configs"] = [{"targets": [target]}]
    return config


@dataclass
class Prometheus:
    workdir: Path
    target: str
    proc: subprocess.Popen | None = None
    port: int = 0
    credentials_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def start(self, timeout: float = 30) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config_for(self.target, credentials_file=self.credentials_file)))
        self.port = free_port()
        self.log_path = self.workdir / "prometheus.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; an expression Prometheus rejects fails the test with its error."""
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", f"{expr}\n-> {answer.get('errorType')}: {answer.get('error')}"
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr} has {len(result)} series"
        return float(result[0]["value"][1])

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"prometheus: {what} not met within {timeout} s (last: {last!r})")
