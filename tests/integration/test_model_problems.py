"""A model that cannot start is shown as such, with why, before any request asks for it (issue 17 item 8);
once its file is there, it starts and the problem is gone."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.integration.test_audit_server import smol_file
from tests.support import chat, smollm2


def test_a_missing_or_cut_model_file_shows_in_ps_and_models_until_the_file_is_there(start_server, tmp_path):
    ghost, cut = tmp_path / "ghost.gguf", tmp_path / "cut.gguf"
    cut.write_bytes(smol_file().read_bytes()[:1000])
    srv = start_server([smollm2(), {"name": "ghost", "engine": "llamacpp", "path": str(ghost)},
                        {"name": "cut", "engine": "llamacpp", "path": str(cut)}])
    # found when the server prepares its models, before any request
    problems = srv.wait_for(lambda: (lambda p: p if p["ghost"] and p["cut"] else None)(
        {m["id"]: m.get("problem") for m in srv.get("/v1/models")[1]["data"]}), timeout=30)
    assert problems["smollm2-135m-instruct"] is None
    assert f"model file not found: {ghost}" in problems["ghost"]
    assert "GGUF header cannot be read" in problems["cut"]

    ps = subprocess.run([sys.executable, "-m", "warmstart", "ps", "--url", srv.url], capture_output=True, text=True,
                        timeout=60)
    assert ps.returncode == 0, ps.stderr
    rows = {line.split()[0]: line for line in ps.stdout.splitlines() if line.strip()}
    assert "cannot start" in rows["ghost"] and "cannot start" in rows["cut"]
    assert "cannot start" not in rows["smollm2-135m-instruct"]
    assert f"ghost: model 'ghost' cannot be started: model file not found: {ghost}" in ps.stdout

    shutil.copyfile(smol_file(), ghost)  # the user puts the file in place: no restart needed
    status, _, body = srv.post("/v1/chat/completions", chat(model="ghost", max_tokens=4))
    assert status == 200, body
    assert srv.model("ghost")["problem"] is None and srv.model("ghost")["state"] == "warm"
