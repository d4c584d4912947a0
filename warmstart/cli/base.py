"""What every `warmstart` command shares: its one-line errors, the command registry, finding the server and
calling it, reading the config. The commands themselves are the other modules of this package."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warmstart.config import Config


class CLIError(Exception):
    """A one-line message for the user; exit status 1 (2 for bad usage or config)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (CLIError, exit status 2) naming the command's --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see `{self.prog} --help`)", status=2)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum` (a count of requests, rounds, runs)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def wrap(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return wrap


def register(sub: argparse._SubParsersAction) -> None:
    """The server and its models: serve, ps, warm, unload, hold."""
    serve = sub.add_parser("serve", help="run the gateway (default model: smollm2-135m-instruct)")
    _config_flags(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--data-dir", help="where logs, audit and history live")
    serve.add_argument("--keep-alive", help="default keep-alive for models that set none (e.g. 5m, 0, -1)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--cluster", metavar="ADDRESS",
                       help='place replicas across a Ray cluster: "auto" or HOST:PORT of its head (docs/cluster.md)')

    ps = sub.add_parser("ps", help="show models, replicas and their last cold start")
    _client_flags(ps)
    ps.add_argument("--json", action="store_true", help="print the raw JSON")

    warm = sub.add_parser("warm", help="load a model now, before requests arrive")
    _client_flags(warm)
    warm.add_argument("model")
    warm.add_argument("--keep-alive", help="how long it stays loaded when idle (e.g. 30m, -1 for ever)")
    warm.add_argument("--no-wait", action="store_true", help="return at once instead of when it is warm")

    unload = sub.add_parser("unload", help="unload a model (busy replicas finish their requests first)")
    _client_flags(unload)
    unload.add_argument("model")

    hold = sub.add_parser("hold", help="hold a model's weights in RAM now, so its next start reads memory")
    _client_flags(hold)
    hold.add_argument("model")
    hold.add_argument("--keep-alive", help="for how long (e.g. 2h; -1 until unloaded; 0 lets them go; "
                                           "default: the model's ram_keep_alive, or 1h)")


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="path to warmstart.toml (default: ./warmstart.toml if present)")


def data_dir_flags(p: argparse.ArgumentParser) -> None:
    """For commands that read a server's data directory themselves, without the server (audit, models)."""
    _config_flags(p)
    p.add_argument("--data-dir", help="the server's data directory (default: the config's server.data_dir)")


def _client_flags(p: argparse.ArgumentParser) -> None:
    _config_flags(p)
    p.add_argument("--url", help="server URL, with or without /v1 (default: $WARMSTART_URL, else the host and port "
                                 "of the config serve reads, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key, when the server requires one (default: $WARMSTART_API_KEY)")
    p.add_argument("--admin-key", help="admin key for warm, unload and hold (default: $WARMSTART_ADMIN_KEY)")


def load(args: argparse.Namespace, flags: dict[str, Any] | None = None) -> Config:
    from warmstart.config_loader import find_config_file, load_config

    path = find_config_file(getattr(args, "config", None), os.environ)
    return load_config(path, os.environ, flags or {})


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from warmstart.serve import run

    flags = {
        "server.host": args.host, "server.port": args.port, "server.data_dir": args.data_dir,
        "server.log_level": args.log_level, "defaults.keep_alive": args.keep_alive,
        "cluster.address": args.cluster,
    }
    # a reload (SIGHUP, `warmstart reload`) reads the same file, environment and flags again
    return run(load(args, flags), lambda: load(args, flags))


# ---- talking to a running server ---------------------------------------------------------------

def server_url(args: argparse.Namespace) -> str:
    return find_server(args)[0]


def find_server(args: argparse.Namespace) -> tuple[str, str]:
    """The server a client command talks to, and where that came from: --url, $WARMSTART_URL, or the
    config `serve` would read here (--config, $WARMSTART_CONFIG, ./warmstart.toml), else the default."""
    from warmstart.config_loader import find_config_file, load_config

    explicit = getattr(args, "url", None)
    if explicit or os.environ.get("WARMSTART_URL"):
        url, source = (explicit, "--url") if explicit else (os.environ["WARMSTART_URL"], "$WARMSTART_URL")
        url = url.rstrip("/")
        return (url[:-3] if url.endswith("/v1") else url), source  # the OpenAI-style base URL works too
    path = find_config_file(getattr(args, "config", None), os.environ)
    if path is None and not any(k in os.environ for k in ("WARMSTART_HOST", "WARMSTART_PORT")):
        return "http://127.0.0.1:8000", "the default"
    server = load_config(path, os.environ).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}", str(path) if path is not None else "$WARMSTART_HOST/$WARMSTART_PORT"


def call(args: argparse.Namespace, method: str, path: str, body: Any = None, timeout: float = 660) -> tuple[int, Any]:
    url = server_url(args) + path
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    admin = getattr(args, "admin_key", None) or os.environ.get("WARMSTART_ADMIN_KEY")
    api = getattr(args, "api_key", None) or os.environ.get("WARMSTART_API_KEY")
    key = (admin or api) if path.startswith("/admin/") else (api or admin)
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"null")
        except ValueError:
            payload = None
        return exc.code, payload
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        where, source = find_server(args)
        raise CLIError(f"cannot reach warmstart at {where} (from {source}: {reason}); is `warmstart serve` running? "
                       "Pass --url or set WARMSTART_URL") from None


def fetch(args: argparse.Namespace, method: str, path: str, body: Any = None, timeout: float = 660,
          ok: tuple[int, ...] = (200,)) -> Any:
    """`call`, and the server's answer when its status is one of `ok`; any other status is a CLIError
    that says what the server said and which flag would fix a refused key."""
    status, payload = call(args, method, path, body, timeout=timeout)
    if status not in ok:
        raise CLIError(_error_text(status, payload))
    return payload


def _error_text(status: int, payload: Any) -> str:
    hint = {401: "; pass --api-key (or set WARMSTART_API_KEY)",
            403: "; pass --admin-key (or set WARMSTART_ADMIN_KEY)"}.get(status, "")
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return f"{payload['error'].get('message')} (HTTP {status}){hint}"
    return f"the server answered HTTP {status}{hint}"


@command("ps")
def _ps(args: argparse.Namespace) -> int:
    from warmstart.cli_format import ps_table

    payload = fetch(args, "GET", "/v1/models", timeout=10)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(ps_table(payload["data"]))
        where, source = find_server(args)
        print(f"\nserver: {where} (from {source})")
    return 0


@command("warm")
def _warm(args: argparse.Namespace) -> int:
    from warmstart.cli_format import phases_line

    body: dict[str, Any] = {"wait": not args.no_wait}
    if args.keep_alive is not None:
        body["keep_alive"] = args.keep_alive
    status, payload = _with_progress(args, lambda: call(args, "POST", f"/admin/models/{args.model}/warm", body),
                                     quiet=args.no_wait)
    if status not in (200, 202):
        raise CLIError(_error_text(status, payload))
    last = payload.get("last_start") or {}
    line = f"{args.model}: {payload.get('state')}"
    if last and not args.no_wait:
        line += f" in {last.get('total_s', 0):.2f} s ({phases_line(last.get('phases', {}))})"
    print(line)
    return 0


@contextlib.contextmanager
def json_on_stdout(path: str | None) -> Iterator[str | None]:
    """`--json -`: the JSON alone on stdout, for a pipe. The command writes it to the file it is handed, and what
    else it prints (tables, notes) goes to stderr meanwhile; any other path is handed through unchanged."""
    if path != "-":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="warmstart-json-") as tmp:
        out = Path(tmp) / "out.json"
        with contextlib.redirect_stdout(sys.stderr):
            yield str(out)
        if out.exists():
            sys.stdout.write(out.read_text())
            sys.stdout.flush()


def _with_progress(args: argparse.Namespace, work: Callable[[], tuple[int, Any]], quiet: bool = False,
                   every: float = 0.5) -> tuple[int, Any]:
    """Run `work` (a call that waits for a start); meanwhile, after a second, say on stderr which phase the
    model's start is in (warmstart.progress), so a long start is seen to move."""
    from warmstart.progress import Progress

    if quiet:
        return work()
    result: list[tuple[int, Any]] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # raised again below, in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    with Progress(args.model) as progress:
        worker.start()
        worker.join(1.0)
        while worker.is_alive():
            try:
                status, view = call(args, "GET", f"/v1/models/{args.model}", timeout=5)
            except CLIError:
                status, view = 0, None
            replicas = (view or {}).get("replicas", []) if status == 200 else []
            starting = [r for r in replicas if r.get("state") == "starting"]
            phase = starting[0].get("phase") if starting else None
            if phase:
                progress.update(f"starting, {phase}")
            worker.join(every)
    if failure:
        raise failure[0]
    return result[0]


@command("unload")
def _unload(args: argparse.Namespace) -> int:
    payload = fetch(args, "POST", f"/admin/models/{args.model}/unload", {})
    print(f"{args.model}: {payload.get('state')} ({payload.get('stopped', 0)} replica(s) stopped)")
    return 0


@command("hold")
def _hold(args: argparse.Namespace) -> int:
    from warmstart.durations import format_duration

    body = {} if args.keep_alive is None else {"keep_alive": args.keep_alive}
    payload = fetch(args, "POST", f"/admin/models/{args.model}/ram", body)
    ram = (payload.get("tier") or {}).get("ram")
    if ram is None:
        print(f"{args.model}: {payload.get('state')}, weights on disk")
        return 0
    left = "until unloaded" if ram.get("until_s") is None else f"for {format_duration(ram['until_s'])}"
    print(f"{args.model}: {payload.get('state')}, weights held in RAM ({ram['method']}, "
          f"{ram['bytes'] / 2**30:.2f} GiB, {left}; held in {ram['hold_s']:.2f} s)")
    return 0
