"""Engine options in config: the vLLM and command engines' checks name the bad field and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.config_loader import parse_config
from warmstart.engines.command import expand
from warmstart.engines.llamacpp_server import find_binary
from warmstart.errors import ConfigError, EngineError


def model(engine: str, **options: object) -> dict:
    return {"models": [{"name": "m", "engine": engine, "path": "/models/m", "options": options}]}


def parse(raw: dict):
    return parse_config(raw, base_dir=Path("/"))


def test_a_command_with_its_placeholders_is_accepted():
    cfg = parse(model("command", command=["llama-server", "-m", "{model_path}", "--port", "{port}"],
                      health_path="/health", ready_pattern=r"server is listening on"))
    assert cfg.models[0].options["command"][0] == "llama-server"
    assert cfg.models[0].max_concurrency == 8


@pytest.mark.parametrize(("options", "field", "says"), [
    ({}, "models[0].options.command", "is required"),
    ({"command": "llama-server --port {port}"}, "models[0].options.command", "must be of type list"),
    ({"command": ["srv", "--port", 8080]}, "models[0].options.command", "every item a string"),
    ({"command": ["srv", "--model", "{model_path}"]}, "models[0].options.command", "must pass {port}"),
    ({"command": ["srv", "--port", "{port}", "{gpu}"]}, "models[0].options.command", "unknown placeholder {gpu}"),
    ({"command": ["srv", "--port", "{port"]}, "models[0].options.command", "bad placeholder"),
    ({"command": ["srv", "{port}"], "health_path": "health"}, "models[0].options.health_path", "starting with /"),
    ({"command": ["srv", "{port}"], "ready_pattern": "(unclosed"}, "models[0].options.ready_pattern",
     "not a valid regular expression"),
    ({"command": ["srv", "{port}"], "env": {"BAD-NAME": "1"}}, "models[0].options.env.BAD-NAME", "variable names"),
    ({"command": ["srv", "{port}"], "shell": True}, "models[0].options.shell", "unknown option"),
])
def test_a_bad_command_option_names_its_field(options, field, says):
    with pytest.raises(ConfigError) as err:
        parse(model("command", **options))
    assert err.value.field == field
    assert says in str(err.value)


@pytest.mark.parametrize(("options", "field", "says"), [
    ({"runtimes": 9}, "models[0].options.runtimes", "between 0 and 8"),
    ({"runtimes": True}, "models[0].options.runtimes", "must be of type int"),
    ({"extra_args": ["--seed", 1]}, "models[0].options.extra_args", "every item a string"),
    ({"kv_cache_space_gib": 0}, "models[0].options.kv_cache_space_gib", "1 or more"),
    ({"enforce_eager": "yes"}, "models[0].options.enforce_eager", "must be of type bool"),
    ({"n_ctx": 2048}, "models[0].options.n_ctx", "unknown option for engine vllm"),
    ({"memory_bytes": 0}, "models[0].options.memory_bytes", "positive number of bytes"),
    ({"memory_bytes": "4G"}, "models[0].options.memory_bytes", "must be of type int"),
])
def test_a_bad_vllm_option_names_its_field(options, field, says):
    with pytest.raises(ConfigError) as err:
        parse(model("vllm", **options))
    assert err.value.field == field
    assert says in str(err.value)


@pytest.mark.parametrize(("options", "field", "says"), [
    ({"router": True}, "models[0].options.router", "needs `server`"),
    ({"server": " "}, "models[0].options.server", "must name a llama-server binary"),
    ({"server": "/bin/true", "router": "yes"}, "models[0].options.router", "must be of type bool"),
])
def test_a_bad_llama_server_option_names_its_field(options, field, says):
    with pytest.raises(ConfigError) as err:
        parse(model("llamacpp", **options))
    assert err.value.field == field
    assert says in str(err.value)


def test_a_llama_server_binary_is_checked_where_it_runs_not_in_the_config():
    cfg = parse(model("llamacpp", server="/no/such/llama-server", router=True))
    assert cfg.models[0].options == {"server": "/no/such/llama-server", "router": True}
    with pytest.raises(EngineError, match=r"server = '/no/such/llama-server' is not an executable.*llama\.cpp-tools"):
        find_binary("/no/such/llama-server")
    assert find_binary("true").endswith("/true")


def test_the_port_may_be_passed_in_an_environment_variable():
    cfg = parse(model("command", command=["ollama", "serve"], env={"OLLAMA_HOST": "{host}:{port}"}))
    assert cfg.models[0].options["env"]["OLLAMA_HOST"] == "{host}:{port}"
    with pytest.raises(ConfigError, match="unknown placeholder"):
        parse(model("command", command=["ollama", "serve"], env={"OLLAMA_HOST": "{hots}:{port}"}))


def test_placeholders_fill_inside_their_own_argument_and_never_split_it():
    argv = expand(["srv", "--model={model_path}", "--port", "{port}", "--alias", "{model_name}", "{{literal}}"],
                  {"model_path": "/m/a b.gguf", "port": "9000", "model_name": "x; rm -rf /", "host": "127.0.0.1",
                   "python": "/usr/bin/python3"})
    assert argv == ["srv", "--model=/m/a b.gguf", "--port", "9000", "--alias", "x; rm -rf /", "{literal}"]
