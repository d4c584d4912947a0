from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Server, config_text, free_port, smollm2


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
