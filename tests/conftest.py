from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, config_text, free_port, smollm2

pytest_plugins = ["tests.reaper"]  # servers started by tests stop when pytest is stopped


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI a test skipped because `./install.sh --test` did not install its tools is a failure:
    the install must give every real part (Prometheus, Chromium, vLLM), not quietly skip its tests."""
    _fail_missing_tools_in_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    _fail_missing_tools_in_ci((yield).get_result())  # a whole module skipped by importorskip


def _fail_missing_tools_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if os.environ.get("CI") and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if "install.sh --test" in reason or "could not import" in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, but CI installs what it needs: {reason}"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `warmstart serve` with the given models/server settings; stopped after the test."""
    servers: list[Server] = []

    def start(models: list[dict[str, Any]] | None = None, server: dict[str, Any] | None = None,
              sections: dict[str, dict[str, Any]] | None = None, env: dict[str, str] | None = None,
              data_dir: Path | None = None) -> Server:
        n = len(servers)
        config = tmp_path / f"warmstart-{n}.toml"
        config.write_text(config_text(models if models is not None else [smollm2()], server, sections))
        data = data_dir or tmp_path / f"data-{n}"
        srv = Server(config_path=config, data_dir=data, port=free_port(), env=env or {})
        servers.append(srv)
        return srv.start()

    yield start
    for srv in servers:
        srv.stop()
