"""A node agent's RAM tier keep-alive: held for the model's ram_keep_alive, then back to disk. A real agent on
a real file (no Ray: the agent is plain Python; the same RAM tier code as a single box)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from warmstart.cluster.agent import NodeAgent, model_file


async def test_a_ram_hold_runs_out_and_a_new_hold_replaces_the_deadline(tmp_path: Path) -> None:
    agent = NodeAgent("n", str(tmp_path / "n"), "127.0.0.1", ram_method="tmpfs")
    f = model_file(agent.models_dir, "m")
    f.write_bytes(b"w" * 4096)
    try:
        assert await agent.hold("m", seconds=0.3) == 4096
        assert agent.tiers() == {"m": "ram"}
        await agent.hold("m", seconds=5)  # a later hold (another keep-alive unload) moves the deadline
        await asyncio.sleep(0.6)
        assert agent.tiers() == {"m": "ram"}
        await agent.hold("m", seconds=0.1)
        await asyncio.sleep(0.5)
        assert agent.tiers() == {"m": "disk"}
    finally:
        await agent.shutdown()


async def test_the_heads_own_files_are_served_by_its_node_and_never_deleted(tmp_path: Path) -> None:
    head_file = tmp_path / "configured.gguf"
    head_file.write_bytes(b"weights")
    agent = NodeAgent("head", str(tmp_path / "head"), "127.0.0.1", seed={"m": str(head_file)})
    try:
        assert agent.tiers() == {"m": "disk"} and agent.path_of("m") == head_file
        assert await agent.read_chunk("m", 2, 3) == b"igh"
        assert await agent.drop("m") is False and head_file.read_bytes() == b"weights"
    finally:
        await agent.shutdown()


async def test_engines_an_earlier_agent_left_running_are_ended_when_the_node_gets_a_new_one(tmp_path: Path) -> None:
    # an engine's process group, recorded by an agent that is gone (its head died): the next agent ends it
    import json
    import subprocess
    import sys

    from tests.support import pid_alive

    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ledger = tmp_path / "n" / "run" / "engines"
    ledger.mkdir(parents=True)
    cmdline = Path(f"/proc/{left.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    (ledger / f"{left.pid}.json").write_text(json.dumps({"pid": left.pid, "pgid": left.pid, "cmdline": cmdline,
                                                         "replica": "m#1", "warmstart_pid": gone.pid}))
    try:
        agent = NodeAgent("n", str(tmp_path / "n"), "127.0.0.1")
        assert left.wait(10) == -9 and not pid_alive(left.pid)
        await agent.shutdown()
    finally:
        left.kill()
