"""`warmstart ps` text: the pre-initialized runtimes appear once per pool, with their memory."""

from __future__ import annotations

from warmstart.cli_format import ps_table

POOL = {"engine": "vllm", "size": 1, "ready": 1, "starting": 0, "pids": [42], "rss_bytes": 640 * 2**20,
        "import_s": [19.0], "handed_out": 2, "spawned": 3, "failures_in_a_row": 0, "last_error": None}


def model(name: str, pool: dict | None) -> dict:
    return {"id": name, "engine": "vllm", "state": "cold", "replicas": [], "queue_depth": 0, "last_start": None,
            "runtime_pool": pool}


def test_runtime_pools_are_listed_once_with_their_memory():
    text = ps_table([model("a", POOL), model("b", POOL), model("c", None)])
    assert text.count("vllm: 1 ready, 0 starting, 640 MiB resident, 2 handed out") == 1
    assert "pre-initialized runtimes" in text


def test_no_runtime_section_without_runtimes():
    assert "pre-initialized" not in ps_table([model("c", None)])
