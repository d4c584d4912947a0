"""Limits on what a request can make the server do, and no shell between config and engine."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request

import pytest

from tests.faults import SMOL
from tests.support import SMOLLM2, chat, smollm2

pytestmark = pytest.mark.integration


def test_a_prompt_far_beyond_the_context_is_refused_at_once_without_starting_the_model(start_server):
    srv = start_server([smollm2()])  # context 2048 tokens; the default body limit is 4 MiB
    status, _, body = srv.post("/v1/completions", {"model": SMOL, "prompt": "word " * 600_000, "max_tokens": 2})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    assert body["error"]["param"] == "prompt" and "3000000 bytes" in body["error"]["message"]
    status, _, body = srv.post("/v1/chat/completions", chat("word " * 600_000))
    assert status == 400 and body["error"]["param"] == "messages"
    model = srv.model(SMOL)
    assert model["state"] == "cold" and model["starts"] == []  # no engine tokenized megabytes to say no


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(start_server):
    srv = start_server([smollm2()], server={"max_body_bytes": 8192})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"model": "' + SMOL.encode() + b'", "prompt": "' + b"x" * 4000
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        filler = b"y" * 4096
        try:  # keep sending, as a client streaming an endless body would, until the server answers
            for _ in range(64):
                sock.sendall(f"{len(filler):x}\r\n".encode() + filler + b"\r\n")
        except OSError:
            pass
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert json.loads(payload)["error"]["code"] == "payload_too_large"
    assert srv.model(SMOL)["state"] == "cold"


def _length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1


def test_engine_options_reach_the_engine_literally_never_through_a_shell(start_server, tmp_path):
    marker = tmp_path / "pwned"
    value = (f"$(touch {marker}-subst); touch {marker}-semicolon && touch {marker}-and | tee {marker}-pipe "
             f"`touch {marker}-backtick` > {marker}-redirect '\"\\ *")
    srv = start_server([smollm2(options={"n_ctx": 256, "chat_format": value})])
    status, _, body = srv.post("/v1/chat/completions", chat(max_tokens=2))
    assert status == 200, body  # llama.cpp takes a chat format it does not know as a Jinja template
    # the server holds the whole string as its chat template, byte for byte
    engine = srv.model(SMOL)["replicas"][0]["url"]
    with urllib.request.urlopen(engine + "/props", timeout=10) as resp:
        assert json.loads(resp.read())["chat_template"] == value
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []


def test_a_command_engines_arguments_and_environment_arrive_literally(start_server, tmp_path):
    marker, record = tmp_path / "pwned", tmp_path / "argv.json"
    value = f"$(touch {marker}-subst); touch {marker}-semicolon | tee {marker}-pipe `touch {marker}-tick` > {marker}-gt"
    # braces are doubled: the command's placeholders are {port} and the like
    script = ("import json, os, sys; json.dump({{'argv': sys.argv[1:], 'env': os.environ.get('ODD')}}, "
              "open(sys.argv[1], 'w')); sys.exit(7)")
    srv = start_server([{"name": "odd", "engine": "command", "path": SMOLLM2, "options": {
        "command": [sys.executable, "-c", script, str(record), value, "--port={port}"], "env": {"ODD": value}}}])
    status, _, body = srv.post("/v1/chat/completions", chat(model="odd", max_tokens=2))
    assert status == 503 and "exited with code 7" in body["error"]["message"]
    seen = json.loads(record.read_text())
    assert seen["argv"][:2] == [str(record), value] and seen["argv"][2].startswith("--port=")
    assert seen["env"] == value
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned")) == []
