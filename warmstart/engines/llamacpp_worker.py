"""The llama.cpp engine process: loads one GGUF with llama-cpp-python and serves it over an
OpenAI-compatible HTTP API on loopback, reporting each start phase to its parent on a pipe.

Run by the pool as `python -m warmstart.engines.llamacpp_worker --model PATH --options JSON`.
Generation runs on one thread, one request at a time; a request whose client disconnects is
stopped at its next token.
"""

from __future__ import annotations

import time

_T0 = time.monotonic()  # before any import: the end of the spawn phase

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from warmstart.engines.child import die_with_parent  # noqa: E402


class _Reporter:
    def __init__(self) -> None:
        fd = os.environ.get("WARMSTART_REPORT_FD")
        self._out = os.fdopen(int(fd), "w", buffering=1) if fd else None

    def send(self, **message: object) -> None:
        if self._out is not None:
            try:
                self._out.write(json.dumps(message) + "\n")
            except OSError:
                pass

    def close(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
            self._out = None


def _without_repack() -> None:
    # llama-cpp-python has no keyword for llama_model_params.use_extra_bufts: set it on the defaults it reads
    from llama_cpp import llama_cpp as low

    defaults = low.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        p = defaults()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    report = _Reporter()
    report.send(started=_T0)
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    try:
        report.send(enter="import")
        t = time.monotonic()
        import llama_cpp
        from llama_cpp import _internals

        from warmstart.engines import llamacpp_service as service

        report.send(phase="import", seconds=time.monotonic() - t)

        # Split Llama() into weight load and KV-cache/context init by timing the context.
        ctx_seconds = [0.0]
        original = _internals.LlamaContext.__init__

        def timed_context(self, *a, **k):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            report.send(enter="kv_init")
            try:
                original(self, *a, **k)
            finally:
                ctx_seconds[0] += time.monotonic() - started

        _internals.LlamaContext.__init__ = timed_context
        if options.get("repack") is False:
            _without_repack()
        report.send(enter="load")
        t = time.monotonic()
        llm = llama_cpp.Llama(model_path=args.model, verbose=False, **service.llama_kwargs(options))
        _internals.LlamaContext.__init__ = original
        total = time.monotonic() - t
        report.send(phase="load", seconds=total - ctx_seconds[0])
        report.send(phase="kv_init", seconds=ctx_seconds[0])

        report.send(enter="warmup")
        t = time.monotonic()
        engine = service.Generator(llm, args.name, options)
        if options.get("warmup", True):
            engine.warm_up()
        report.send(phase="warmup", seconds=time.monotonic() - t)

        import socket

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by accepted connections: a response's headers and body leave at once (no Nagle wait)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((args.host, args.port))
        sock.listen(128)
        app = service.create_app(engine)
        config = uvicorn.Config(app, log_level="warning", access_log=False, loop="uvloop",
                                http="httptools", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)

        async def serve() -> None:
            import asyncio

            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.002)
            report.send(listening=sock.getsockname()[1])
            report.close()
            await task

        import uvloop

        uvloop.run(serve())
        return 0
    except Exception as exc:  # reported to the parent, which names it in the failed start
        report.send(error=f"{type(exc).__name__}: {exc}")
        print(f"llamacpp worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
