"""The vLLM engine's pure parts: the server's flags, its environment, what a model folder can do."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from warmstart.config import ModelConfig
from warmstart.engines.vllm import PLUGIN_DIST, VllmEngine, install_plugin
from warmstart.errors import StoreError


def model(path: Path, **options: object) -> ModelConfig:
    return ModelConfig(name="org/tiny:v1", engine="vllm", path=str(path), options=MappingProxyType(options))


def folder(tmp_path: Path, template: bool = True) -> Path:
    m = tmp_path / "model"
    m.mkdir()
    (m / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096}))
    tok = {"chat_template": "{{ messages }}"} if template else {}
    (m / "tokenizer_config.json").write_text(json.dumps(tok))
    return m


def test_options_become_flags_each_value_its_own_argument(tmp_path):
    engine = VllmEngine(tmp_path)
    cfg = model(tmp_path, enforce_eager=True, trust_remote_code=False, max_model_len=512, gpu_memory_utilization=0.5,
                runtimes=1, python="/opt/vllm/bin/python", extra_args=["--seed", "7"])
    argv = engine.argv(cfg, Path("/models/a b"), 9000)
    assert argv[:8] == ["--model", "/models/a b", "--served-model-name", "org/tiny:v1", "--host", "127.0.0.1",
                        "--port", "9000"]
    assert "--enforce-eager" in argv and "--trust-remote-code" not in argv
    assert argv[argv.index("--max-model-len") + 1] == "512"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    assert argv[-2:] == ["--seed", "7"]
    assert "--runtimes" not in argv and "--python" not in argv  # warmstart's own options stay here


def test_each_model_gets_its_own_cache_folder_sharing_model_class_facts(tmp_path):
    engine = VllmEngine(tmp_path)
    env = engine.model_env(model(tmp_path, kv_cache_space_gib=2, env={"VLLM_LOGGING_LEVEL": "DEBUG"}))
    root = tmp_path / "vllm" / "cache" / "org_tiny_v1"
    assert env["VLLM_CACHE_ROOT"] == str(root / "vllm")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_LOGGING_LEVEL"] == "DEBUG"
    link = root / "vllm" / "modelinfos"
    assert link.is_symlink() and link.resolve() == (tmp_path / "vllm" / "cache" / "_shared" / "modelinfos").resolve()


def test_every_vllm_process_keeps_home_and_temp_inside_the_data_directory(tmp_path):
    env = VllmEngine(tmp_path).base_env()
    assert env["HOME"].startswith(str(tmp_path)) and env["TMPDIR"].startswith(str(tmp_path))
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert Path(env["PYTHONPATH"].split(":")[0], "warmstart", "engines", "vllm_runtime.py").is_file()


def test_a_model_folder_tells_chat_and_context_without_loading(tmp_path):
    engine = VllmEngine(tmp_path)
    caps = engine.inspect(model(tmp_path, python="/nonexistent/python"), folder(tmp_path))
    assert caps.chat is True and caps.context_length == 4096 and caps.sleep is False
    assert any("vLLM is not installed for /nonexistent/python" in note for note in caps.notes)


def test_the_cpu_build_says_sleep_is_not_supported(tmp_path):
    caps = VllmEngine(tmp_path).inspect(model(tmp_path), folder(tmp_path))  # .venv-vllm: vllm-cpu
    assert caps.sleep is False
    assert "sleep: vLLM's sleep mode is not supported on CPU; a replica is loaded or cold" in caps.notes


def test_a_model_without_chat_template_is_completions_only(tmp_path):
    caps = VllmEngine(tmp_path).inspect(model(tmp_path, max_model_len=512), folder(tmp_path, template=False))
    assert caps.chat is False and caps.context_length == 512
    assert "completions only" in caps.notes[0]


def test_a_gguf_file_is_not_a_vllm_model_folder(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(StoreError, match="not a Hugging Face model folder"):
        VllmEngine(tmp_path).inspect(model(gguf), gguf)


def test_runtimes_are_planned_per_interpreter_with_the_largest_size(tmp_path):
    a = ModelConfig(name="a", engine="vllm", path="/m", options=MappingProxyType({"python": "/p/python"}))
    b = ModelConfig(name="b", engine="vllm", path="/m",
                    options=MappingProxyType({"python": "/p/python", "runtimes": 2}))
    c = ModelConfig(name="c", engine="vllm", path="/m",
                    options=MappingProxyType({"python": "/q/python", "runtimes": 0}))
    engine = VllmEngine(tmp_path, (a, b, c))
    assert {p: pool.size for p, pool in engine.pools.items()} == {"/p/python": 2, "/q/python": 0}
    assert engine.runtime_view(c) is None


def test_every_vllm_process_finds_warmstart_s_loader_plugin_on_its_path(tmp_path):
    import importlib.metadata as md  # what vLLM's load_general_plugins reads

    env = VllmEngine(tmp_path).base_env()
    plugins = tmp_path / "vllm" / "plugins"
    assert str(plugins) in env["PYTHONPATH"].split(":")
    [dist] = md.distributions(path=[str(plugins)])
    [entry] = dist.entry_points
    assert (entry.group, entry.name, entry.value) == (
        "vllm.general_plugins", "warmstart", "warmstart.engines.vllm_loader:register")
    assert (Path(env["PYTHONPATH"].split(":")[0]) / "warmstart" / "engines" / "vllm_loader.py").is_file()


def test_the_plugin_is_written_once_and_repaired_when_changed(tmp_path):
    folder = install_plugin(tmp_path)
    entry = folder / PLUGIN_DIST / "entry_points.txt"
    before = entry.stat().st_mtime_ns
    install_plugin(tmp_path)
    assert entry.stat().st_mtime_ns == before  # unchanged: not rewritten under a reading vLLM
    entry.write_text("[vllm.general_plugins]\n")
    install_plugin(tmp_path)
    assert "warmstart.engines.vllm_loader:register" in entry.read_text()


def test_tools_are_refused_by_name_unless_vllm_runs_with_a_tool_call_parser(tmp_path):
    engine = VllmEngine(tmp_path)
    plain = engine.inspect(model(tmp_path, python="/nonexistent/python"), folder(tmp_path))
    assert {"tools", "tool_choice", "best_of", "suffix"} <= set(plain.unsupported_fields)
    assert "echo" not in plain.unsupported_fields and plain.engine == "vLLM" and plain.stream_usage
    assert plain.max_greedy_choices == 1 and plain.max_choices > 1
    (tmp_path / "model").rename(tmp_path / "first")
    parsed = engine.inspect(model(tmp_path, python="/nonexistent/python", tool_call_parser="hermes",
                                  enable_auto_tool_choice=True), folder(tmp_path))
    assert "tools" not in parsed.unsupported_fields and "best_of" in parsed.unsupported_fields
    argv = engine.argv(model(tmp_path, tool_call_parser="hermes", enable_auto_tool_choice=True), Path("/m"), 1)
    assert argv[argv.index("--tool-call-parser") + 1] == "hermes" and "--enable-auto-tool-choice" in argv
