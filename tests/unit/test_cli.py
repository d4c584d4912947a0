"""CLI errors are one line saying what is wrong and how to fix it; never a traceback."""

import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "warmstart", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


@pytest.mark.parametrize("toml,needle", [
    ("[server]\nport = 99999\n", "server.port = 99999"),
    ("[server\n", "not valid TOML"),
    ('[[models]]\nname = "a"\nengine = "llamacpp"\npath = "a.gguf"\n[models.options]\nn_ctx = "big"\n',
     "models[0].options.n_ctx = 'big'"),
])
def test_bad_config_is_one_line_naming_field_and_value(tmp_path, toml, needle):
    path = tmp_path / "warmstart.toml"
    path.write_text(toml)
    out = run("serve", "--config", str(path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warmstart: error: config:") and needle in lines[0]


def test_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert out.returncode == 1 and "address already in use" in out.stderr and "--port" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_command_and_bad_flag():
    out = run("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr and "Traceback" not in out.stderr
    out = run("serve", "--port", "abc")
    assert out.returncode == 2 and "--port" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_client_commands_say_how_to_reach_a_server():
    out = run("ps", "--url", "http://127.0.0.1:9")
    assert out.returncode == 1 and "warmstart serve" in out.stderr and "--url" in out.stderr


def test_help_of_every_command_prints():
    out = run("--help")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    commands = [line.split()[0] for line in out.stdout.split("COMMAND", 2)[-1].splitlines()[1:]
                if line.startswith("    ") and not line.startswith("     ") and line.split()]
    assert {"serve", "ps", "warm", "unload", "simulate", "bench", "audit", "models"} <= set(commands)
    for name in commands:
        sub = run(name, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout and "Traceback" not in sub.stderr, name


def test_client_commands_find_the_server_the_local_config_serves_and_take_the_v1_url(tmp_path):
    import os

    (tmp_path / "warmstart.toml").write_text("[server]\nport = 9\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMSTART_")}
    out = subprocess.run([sys.executable, "-m", "warmstart", "ps"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=env)
    assert out.returncode == 1 and "http://127.0.0.1:9 " in out.stderr and "warmstart.toml" in out.stderr, out.stderr
    out = run("ps", "--url", "http://127.0.0.1:9/v1")  # the OpenAI-style base URL
    assert out.returncode == 1 and "at http://127.0.0.1:9 (from --url" in out.stderr, out.stderr


def test_a_refused_key_names_the_flag_that_sends_one():
    from warmstart.cli.base import _error_text

    body = {"error": {"message": "Missing API key."}}
    assert "--api-key" in _error_text(401, body) and "--admin-key" in _error_text(403, body)


@pytest.mark.parametrize("args,flag", [
    (("serve", "--pairs", "0"), "--pairs"),  # was a ZeroDivisionError after a minute of requests
    (("serve", "--pairs", "-5"), "--pairs"),  # was "no median for empty data"
    (("serve", "--streams", "0"), "--streams"),  # was the benchmark's server refusing its own config
    (("serve", "--rounds", "x"), "--rounds"),
    (("quantize", "--starts", "0"), "--starts"),
    (("load", "--repeat", "0"), "--repeat"),
    (("image", "--runs", "-1"), "--runs"),
])
def test_a_benchmark_refuses_a_count_below_one_in_one_line_before_it_starts(args, flag):
    out = run("bench", *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"warmstart: error: argument {flag}: ")
    assert f"warmstart bench {args[0]} --help" in lines[0]
