"""`warmstart bench image`: warmstart's image against a naive one, built and run here with podman.

Same run, same model (the embedded SmolLM2-135M-Instruct, or `--model` of the config), same wheels, both
on the same offline network with their port relayed to loopback:
- warmstart: `warmstart image build` (minimal Debian base, no build tools, model baked in and sealed);
- naive: what a Dockerfile written without care gives: a full Debian base with python3-pip, the
  compilers and curl (as a `python:3.11` image has), `pip install` of the same packages at build, and
  the model downloaded when the container starts (from a server on the host's side of the network,
  standing in for a model hub: no registry or hub is reachable here), then hashed on its first start.
Measured: the image's size, and from `podman run` to the first token of a streamed answer, with its
phases (podman run returned, the server listening, the model's engine phases, the first token).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from warmstart.bench._harness import machine, table, write_json
from warmstart.cli.base import Parser, at_least
from warmstart.cli.image import default_cache
from warmstart.config import Config, ModelConfig
from warmstart.config_loader import load_config
from warmstart.engines.gguf import read_gguf
from warmstart.errors import ImageError
from warmstart.image import base as bases
from warmstart.image import build as builder
from warmstart.image import run as runner
from warmstart.image import tools
from warmstart.image.containerfile import toml_value
from warmstart.progress import step

MODEL = "smollm2-135m-instruct"
KEY = "bench-image-key-0123456789abcdef"
QUESTION = "What is the capital of Norway?"
PROMPT = "The capital of Norway is"  # for a model without a chat template, sent to /v1/completions
WS_TAG, NAIVE_TAG = "localhost/warmstart-bench-image:warmstart", "localhost/warmstart-bench-image:naive"
CONF = Path(__file__).resolve().parents[2] / "deploy" / "image" / "containers.conf"


def naive_containerfile(base: str, wheels_sha256: str) -> str:
    # the label keeps a cached install layer from standing in for other wheels (as in warmstart's own)
    return f"""FROM {base}
LABEL org.warmstart.wheels-sha256={wheels_sha256}
RUN --mount=type=bind,source=wheels,target=/wheels \\
    python3 -m venv /app/venv && /app/venv/bin/pip install --no-index --find-links /wheels warmstart
COPY warmstart.toml start.sh /app/
ENV PATH=/app/venv/bin:$PATH WARMSTART_CONFIG=/app/warmstart.toml
EXPOSE 8000
CMD ["sh", "/app/start.sh"]
"""


NAIVE_START = """set -e
echo "fetch_start $(date +%s.%N)"
mkdir -p /models && curl -fsS -o /models/model.gguf "$MODEL_URL"
echo "fetch_end $(date +%s.%N)"
exec warmstart serve
"""


def naive_config(model: ModelConfig) -> str:
    """The naive image's config: the model's engine options as warmstart's image bakes them, its file where
    the start script downloads it."""
    options = f"options = {toml_value(dict(model.options))}\n" if model.options else ""
    return (f'[server]\nhost = "0.0.0.0"\nport = 8000\ndata_dir = "/var/lib/warmstart"\n\n'
            f'[[models]]\nname = "{model.name}"\nengine = "llamacpp"\npath = "/models/model.gguf"\n'
            f'{options}keep_alive = "-1"\n')


def bench_model(config: Config, name: str) -> tuple[ModelConfig, Path]:
    """The model both images serve and its one GGUF file (the naive image downloads one file)."""
    from warmstart.store.sources import resolve_model_path

    model = builder.model_config(config, name)
    path = resolve_model_path(model.path, config.server.data_dir)
    if model.engine != "llamacpp" or not path.is_file():
        raise ImageError(f"bench image needs a llama.cpp model in one GGUF file; {name!r} is {model.engine} at "
                         f"{path}: pass another --model")
    return model, path


def build_images(work: Path, cache: Path, config: Config, model: ModelConfig) -> dict[str, float]:
    seconds = {}
    t = time.monotonic()
    step("building the images")
    base = bases.ensure_base(bases.BaseRecipe(), cache)
    builder.prepare(config, model.name, context=work / "ws", cache=cache, base=base)
    builder.build(work / "ws", WS_TAG)
    seconds["warmstart"] = time.monotonic() - t
    t = time.monotonic()
    naive_base = bases.ensure_base(bases.NAIVE, cache)
    ctx = work / "naive"
    builder.gather_wheels(ctx / "wheels", cache, (), strip=False)  # the wheels as pip installs them
    (ctx / "Containerfile").write_text(naive_containerfile(naive_base, builder.wheels_digest(ctx / "wheels")))
    (ctx / "warmstart.toml").write_text(naive_config(model))
    (ctx / "start.sh").write_text(NAIVE_START)
    builder.build(ctx, NAIVE_TAG)
    seconds["naive"] = time.monotonic() - t
    return seconds


class ModelServer:
    """Serves the model file over HTTP on the host's address on the offline network (the naive image's hub)."""

    def __init__(self, path: Path, host: str) -> None:
        directory = str(path.parent)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=directory, **kw)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def server_bind(self) -> None:
                # the network's bridge comes up with its first container: bind its address before it exists
                self.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
                super().server_bind()

        self.server = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/{path.name}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def first_token(url: str, deadline: float, model: str = MODEL, chat: bool = True) -> tuple[float, float | None, str]:
    """Sends the question as soon as the port answers (retrying refused connections); returns when the
    first token came, when the server first accepted the request, and the whole answer. A model without a chat
    template (`chat` false) is sent a prompt to complete instead."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": QUESTION}]} if chat else {"prompt": PROMPT}
    body = json.dumps({"model": model, **ask, "temperature": 0, "max_tokens": 24, "stream": True})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, int(port), timeout=max(1.0, deadline - time.monotonic()))
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            accepted = time.monotonic()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
            first, text = None, []
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: {"):
                    continue
                choice = json.loads(line[6:])["choices"][0]
                delta = (choice["delta"].get("content") if chat else choice.get("text")) or ""
                if delta and first is None:
                    first = time.monotonic()
                text.append(delta)
            if first is not None:
                return first, accepted, "".join(text)
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError):
            time.sleep(0.02)  # not listening yet (the relay closes what it cannot connect)
        finally:
            conn.close()
    raise RuntimeError("no first token before the deadline")


def _audit_phases(c: runner.Running) -> dict[str, float]:
    shown = c.exec(["warmstart", "audit", "show", "--json"])
    starts = [json.loads(x) for x in shown.stdout.splitlines() if x.startswith("{")]
    ok = [r for r in starts if r.get("event") == "start" and r.get("outcome") == "ok"]
    if not ok:
        return {}
    return {p["phase"]: p["seconds"] for p in ok[0]["phases"]} | {"sha256_basis": ok[0]["sha256_basis"]}


def _fetch_seconds(c: runner.Running) -> float | None:
    marks = {w[0]: float(w[1]) for w in (line.split() for line in c.logs().splitlines())
             if len(w) == 2 and w[0] in ("fetch_start", "fetch_end")}
    return marks["fetch_end"] - marks["fetch_start"] if len(marks) == 2 else None


def _listening(url: str, until: float, out: list[float]) -> None:
    """When the server first answers /readyz (polled beside the request, which the gateway may hold)."""
    while time.monotonic() < until:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    out.append(time.monotonic())
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)


def measure(tag: str, name: str, env: dict[str, str], timeout: float, model: str = MODEL,
            chat: bool = True) -> dict[str, Any]:
    with runner.offline(tag, name, env={"WARMSTART_API_KEYS": KEY, **env}) as c:
        ran = time.monotonic()
        listening: list[float] = []
        poller = threading.Thread(target=_listening, args=(c.url, ran + timeout, listening), daemon=True)
        poller.start()
        first, accepted, answer = first_token(c.url, time.monotonic() + timeout, model, chat)
        cpu = c.cpu_seconds()  # to the end of the answer (first_token reads it whole)
        poller.join(timeout)
        phases = {"podman_run": ran - c.started, "listening": (listening[0] if listening else first) - c.started,
                  "response_start": (accepted or first) - c.started, "first_token": first - c.started}
        result: dict[str, Any] = {"first_token_s": first - c.started, "answer": answer, "phases": phases,
                                  "engine": _audit_phases(c), "cpu_s": cpu}
        fetched = _fetch_seconds(c)
        if fetched is not None:
            result["phases"]["model_fetch"] = fetched
        return result


def run(runs: int, cache: Path, keep: bool, reuse: bool = False, model_name: str = MODEL,
        config_path: Path | None = None) -> dict[str, Any]:
    os.environ.setdefault("CONTAINERS_CONF", str(CONF))
    work = Path(tempfile.mkdtemp(prefix="warmstart-bench-image-"))
    try:
        config = load_config(config_path, {}, {"server.data_dir": str(work / "data")})
        model, weights = bench_model(config, model_name)
        chat = model.chat if model.chat is not None else read_gguf(weights).chat_template is not None
        if reuse and tools.image_exists(WS_TAG) and tools.image_exists(NAIVE_TAG):
            built = {"warmstart": 0.0, "naive": 0.0}  # not built in this run
        else:
            built = build_images(work, cache, config, model)
        network = runner.ensure_offline_network()
        hub = ModelServer(weights, runner.gateway_of(network))
        try:
            result: dict[str, Any] = {"model": model.name, "model_bytes": weights.stat().st_size,
                                      "request": "chat" if chat else "completion"}
            for kind, tag, env in (("warmstart", WS_TAG, {}), ("naive", NAIVE_TAG, {"MODEL_URL": hub.url})):
                samples = [measure(tag, f"warmstart-bench-{kind}", env, 300, model.name, chat) for _ in range(runs)]
                mid = sorted(samples, key=lambda s: s["first_token_s"])[len(samples) // 2]
                cpus = sorted(s["cpu_s"] for s in samples if s["cpu_s"] is not None)
                result[kind] = {"bytes": tools.image_bytes(tag), "first_token_s": mid["first_token_s"],
                                "answer": mid["answer"], "phases": mid["phases"], "engine": mid["engine"],
                                "first_token_runs_s": [s["first_token_s"] for s in samples],
                                # the container's CPU seconds to the end of the answer, median of the runs
                                "cpu_s": cpus[len(cpus) // 2] if cpus else None,
                                "cpu_runs_s": [s["cpu_s"] for s in samples],
                                "build_s": built[kind], "layers": len(tools.layers(tag))}
        finally:
            hub.close()
        ws, naive = result["warmstart"], result["naive"]
        result["ratio"] = {"bytes": ws["bytes"] / naive["bytes"],
                           "first_token_s": ws["first_token_s"] / naive["first_token_s"]}
        if ws["cpu_s"] and naive["cpu_s"]:
            result["ratio"]["cpu_s"] = ws["cpu_s"] / naive["cpu_s"]
        met = all(result["ratio"][k] <= 0.5 for k in ("bytes", "first_token_s"))
        result["target"] = {"ratio_at_most": 0.5, "met": met}
        result["runs"] = runs
        result["machine"] = machine()
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            tools.remove_image(WS_TAG)
            tools.remove_image(NAIVE_TAG)


def report(r: dict[str, Any]) -> str:
    rows = []
    for kind in ("warmstart", "naive"):
        k = r[kind]
        p = k["phases"]
        cpu = f"{k['cpu_s']:.2f} s" if k.get("cpu_s") is not None else "-"
        rows.append((kind, f"{k['bytes'] / 1e6:.0f} MB", f"{k['first_token_s']:.2f} s", cpu, f"{p['podman_run']:.2f}",
                     f"{p.get('model_fetch', 0):.2f}", f"{p['listening']:.2f}", f"{p['response_start']:.2f}",
                     " ".join(f"{n} {v:.2f}" for n, v in k["engine"].items() if isinstance(v, float)),
                     k["engine"].get("sha256_basis", "-"), k["answer"].strip()[:40]))
    head = ("IMAGE", "SIZE", "RUN->1ST TOKEN", "CPU", "RUN", "FETCH", "LISTENING", "RESPONSE", "ENGINE PHASES (s)",
            "DIGEST", "ANSWER")
    ratio = r["ratio"]
    cpu = f", CPU to the answer {ratio['cpu_s']:.2f}" if "cpu_s" in ratio else ""
    verdict = "met" if r["target"]["met"] else "missed"
    return (table(rows, head) + f"\n\n{r['model']} ({r['model_bytes'] / 1e6:.0f} MB): warmstart / naive: "
            f"size {ratio['bytes']:.2f}, run to first token "
            f"{ratio['first_token_s']:.2f}{cpu} (target: at most 0.5, size and first token: {verdict}; "
            f"median of {r['runs']} runs)")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="warmstart bench image", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--runs", type=at_least(1), default=3, help="starts of each image (the median is reported)")
    parser.add_argument("--cache", help="base tarballs and wheels (default: as `warmstart image build`)")
    parser.add_argument("--keep", action="store_true", help="keep both images afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure the images a --keep run left (no build)")
    parser.add_argument("--model", default=MODEL, help=f"a llama.cpp model of the config in one GGUF file "
                                                       f"(default {MODEL})")
    parser.add_argument("--config", help="a config naming --model (default: the embedded models)")
    args = parser.parse_args(argv)
    result = run(args.runs, Path(args.cache) if args.cache else default_cache(), args.keep or args.reuse,
                 args.reuse, args.model, Path(args.config) if args.config else None)
    print(report(result))
    write_json(args.json, result)
    return 0
