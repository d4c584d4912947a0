#!/usr/bin/env bash
# llama-server itself (llama.cpp's server binary, router mode included) for the tests of the `llamacpp` engine's
# system-binary mode (option `server`): built from Debian sid's prebuilt packages into .cache/llama-server,
# relocated so it runs on this older Debian without a compiler (see scripts/llama-server-from-sid.py).
# Idempotent: returns at once when the pinned build is there and runs. On Debian trixie/sid,
# `apt install llama.cpp-tools` gives /usr/bin/llama-server, which a user simply points the option at.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python scripts/llama-server-from-sid.py .cache/llama-server
