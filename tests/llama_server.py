"""llama.cpp's own OpenAI-compatible server (llama-server) from the xllamacpp wheel, started like the
`llama-server` command: `python tests/llama_server.py --model PATH --host H --port P [--ctx N] [--alias NAME]`.
The command engine's test server: a real server warmstart knows nothing about, with no compiler needed.
It logs "listening on http://HOST:PORT" when it answers, and exits on SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait, in every thread
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--alias", default="")
    args = parser.parse_args()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.fit_params = False
    if args.alias:
        params.model_alias = {args.alias}
    server = xllamacpp.Server(params)  # noqa: F841 (it serves while it lives)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)


if __name__ == "__main__":
    main()
