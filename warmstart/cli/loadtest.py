"""`warmstart loadtest`: replay a trace against a running server on loopback, print a table, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from warmstart.cli.base import CLIError, call, command
from warmstart.config import is_loopback
from warmstart.loadtest.plan import DEFAULT_MAX_OUTPUT, ENDPOINTS, Limits, plan
from warmstart.loadtest.trace import FORMATS, TraceError, read_trace
from warmstart.progress import Progress, step

MAX_DURATION = 3600.0
MAX_REQUESTS = 100_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loadtest", help="replay a request trace against a running server (loopback only)",
        description="Open-loop replay of a trace's arrival times and token counts against a warmstart on "
                    "loopback; prints throughput, time to first token and latency split warm/cold, and errors.")
    p.add_argument("--trace", required=True, help="trace file (e.g. shared/traces/azure-2023/azure2023_conv.csv)")
    p.add_argument("--format", default="azure", choices=FORMATS, help="trace format (default azure)")
    p.add_argument("--url", help="server URL on loopback (default: $WARMSTART_URL or http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key, when the server requires one (default: $WARMSTART_API_KEY)")
    p.add_argument("--model", help="model to send requests to (default: the server's first model)")
    p.add_argument("--speedup", type=float, default=1.0, help="trace time runs this many times faster (default 1)")
    p.add_argument("--duration", type=float, default=60.0,
                   help=f"seconds of sending, at most {MAX_DURATION:g} (default 60)")
    p.add_argument("--start", type=float, default=0.0, help="skip this many seconds of the trace (default 0)")
    p.add_argument("--max-requests", type=int, default=1000,
                   help=f"send at most this many requests, at most {MAX_REQUESTS} (default 1000)")
    p.add_argument("--max-prompt-tokens", type=int, help="cap prompts (they are always capped to the context)")
    p.add_argument("--max-output-tokens", type=int, default=DEFAULT_MAX_OUTPUT,
                   help=f"cap max_tokens (default {DEFAULT_MAX_OUTPUT})")
    p.add_argument("--endpoint", choices=sorted(ENDPOINTS), default="completions",
                   help="completions (default, works with any model) or chat")
    p.add_argument("--no-stream", action="store_true", help="ask for whole answers (time to first token = latency)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take (default 120)")
    p.add_argument("--drain", type=float, default=60.0,
                   help="seconds to wait for answers after the last send (default 60)")
    p.add_argument("--json", metavar="OUT", help="write the summary and every request's outcome as JSON")


def loopback_url(url: str) -> str:
    """The URL, if it points at loopback; a CLIError otherwise (the load test never leaves this machine)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise CLIError(f"--url {url!r} is not an http:// URL such as http://127.0.0.1:8000", status=2)
    if not is_loopback(parsed.hostname):
        raise CLIError(f"--url {url!r}: the load test sends traffic only to loopback (127.0.0.1, ::1, localhost), "
                       f"not to {parsed.hostname}", status=2)
    return url.rstrip("/")


def _check_args(args: argparse.Namespace) -> None:
    def bad(flag: str, value: Any, why: str) -> None:
        raise CLIError(f"{flag} {value}: {why}", status=2)

    if not (math.isfinite(args.speedup) and args.speedup > 0):
        bad("--speedup", args.speedup, "must be a positive number (0.5 replays at half speed)")
    if not (math.isfinite(args.duration) and 0 < args.duration <= MAX_DURATION):
        bad("--duration", args.duration, f"must be between 0 and {MAX_DURATION:g} seconds")
    if not (math.isfinite(args.start) and args.start >= 0):
        bad("--start", args.start, "must be 0 or more seconds")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        bad("--max-requests", args.max_requests, f"must be between 1 and {MAX_REQUESTS}")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        bad("--max-prompt-tokens", args.max_prompt_tokens, "must be at least 1")
    if args.max_output_tokens < 1:
        bad("--max-output-tokens", args.max_output_tokens, "must be at least 1")
    for flag, value in (("--timeout", args.timeout), ("--drain", args.drain)):
        if not (math.isfinite(value) and 0 < value <= MAX_DURATION):
            bad(flag, value, f"must be between 0 and {MAX_DURATION:g} seconds")


def _models(args: argparse.Namespace) -> list[dict[str, Any]]:
    status, payload = call(args, "GET", "/v1/models", timeout=10)
    if status == 401:
        raise CLIError("the server wants an API key: pass --api-key or set WARMSTART_API_KEY")
    if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise CLIError(f"GET /v1/models answered HTTP {status}; is {args.url} a warmstart server?")
    return payload["data"]


def _raise_open_files() -> None:
    # an open loop may hold a socket per request in flight
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


@command("loadtest")
def _loadtest(args: argparse.Namespace) -> int:
    # the replay's HTTP client (aiohttp) only here: every command, `serve` first, imports this module
    from warmstart.loadtest.report import format_summary, summarize
    from warmstart.loadtest.runner import replay

    args.url = loopback_url(args.url or os.environ.get("WARMSTART_URL") or "http://127.0.0.1:8000")
    args.api_key = args.api_key or os.environ.get("WARMSTART_API_KEY")
    args.admin_key = None
    _check_args(args)
    try:
        trace = read_trace(Path(args.trace), args.format)
    except TraceError as exc:
        raise CLIError(str(exc), status=2) from None
    models = {m.get("id"): m for m in _models(args)}
    model = args.model or next(iter(models), None)
    if model is None or model not in models:
        raise CLIError(f"the server has no model {model!r}; it serves: {', '.join(map(str, models)) or 'none'}")
    named = {r.model for r in trace if r.model} | {model}
    unknown = sorted(n for n in named if n not in models)
    if unknown:
        raise CLIError(f"the trace names models the server does not serve: {', '.join(unknown)}")
    contexts = [(models[n].get("capabilities") or {}).get("context_length") for n in named]
    known = [c for c in contexts if isinstance(c, int)]
    limits = Limits(context_length=min(known) if known else None, max_prompt_tokens=args.max_prompt_tokens,
                    max_output_tokens=args.max_output_tokens)
    the_plan = plan(trace, model=model, speedup=args.speedup, start=args.start, duration=args.duration,
                    max_requests=args.max_requests, limits=limits)
    if not the_plan.requests:
        raise CLIError(f"the trace has no requests between {args.start:g} s and "
                       f"{args.start + args.duration * args.speedup:g} s; change --start, --duration or --speedup")
    print(f"replaying {len(the_plan.requests)} requests over {args.duration:g} s (speedup {args.speedup:g}) "
          f"to {model} at {args.url}", file=sys.stderr, flush=True)
    _raise_open_files()
    stream = not args.no_stream
    with Progress("loadtest"):
        outcomes, wall = asyncio.run(replay(the_plan, url=args.url, api_key=args.api_key, endpoint=args.endpoint,
                                            stream=stream, timeout=args.timeout, drain=args.drain, progress=step))
    summary = summarize(outcomes, the_plan, wall, url=args.url, endpoint=args.endpoint, stream=stream)
    summary["trace"] = {"path": str(args.trace), "format": args.format, "requests": len(trace)}
    print(format_summary(summary))
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as exc:
            raise CLIError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    return 0
