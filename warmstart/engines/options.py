"""The options each engine kind accepts in a model's `options` table, with their types, and the
checks that types alone cannot express (a command line's placeholders, a regular expression)."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from warmstart.errors import ConfigError

OptionTypes = dict[str, type | tuple[type, ...]]

# llama.cpp server settings (xllamacpp's CommonParams, llama-server's flags); n_ctx is each slot's context
LLAMACPP: OptionTypes = {
    "n_ctx": int, "n_threads": int, "n_threads_batch": int, "n_batch": int, "n_ubatch": int,
    "n_gpu_layers": int, "seed": int, "use_mmap": bool, "use_mlock": bool, "flash_attn": bool,
    "chat_format": str, "embedding": bool, "pooling": str,
}
LLAMACPP_POOLING = ("mean", "cls", "last")  # an embedding's pooling; default: the model's own
# read by warmstart's llama.cpp worker itself: warmup=false skips the server's warm-up run (unset: skipped,
# llamacpp_server.start_options); repack=false
# keeps weights in the file mapping instead of copying them into llama.cpp's CPU_REPACK buffer (a start
# from the RAM tier is then a mapping, not a copy); server: a llama-server binary (a path, or a name on PATH)
# run as the engine process instead of the xllamacpp wheel (a GPU build, a distribution's package); router:
# keep that binary running in router mode, waiting for the model (a start is then POST /models/load)
LLAMACPP_OWN: OptionTypes = {"warmup": bool, "repack": bool, "server": str, "router": bool}

# vLLM server flags, passed as --flag-name VALUE (a true bool as --flag-name, a false one left out)
VLLM_FLAGS: OptionTypes = {
    "max_model_len": int, "dtype": str, "enforce_eager": bool, "max_num_seqs": int,
    "max_num_batched_tokens": int, "gpu_memory_utilization": (int, float), "tensor_parallel_size": int,
    "quantization": str, "seed": int, "block_size": int, "tokenizer": str, "trust_remote_code": bool,
    "enable_prefix_caching": bool, "chat_template": str, "kv_cache_dtype": str, "swap_space": (int, float),
    "load_format": str, "generation_config": str, "tool_call_parser": str, "enable_auto_tool_choice": bool,
}
# read by warmstart's vLLM engine: interpreter, pre-initialized runtimes, environment, more flags
VLLM_OWN: OptionTypes = {
    "python": str, "runtimes": int, "kv_cache_space_gib": int, "env": dict, "extra_args": list,
}
# any OpenAI-compatible server given as a command line
COMMAND: OptionTypes = {
    "command": list, "health_path": str, "ready_pattern": str, "env": dict,
}
COMMAND_PLACEHOLDERS = frozenset({"port", "model_path", "model_name", "host", "python"})

# read by placement on a cluster, for every engine: the bytes a replica takes once loaded, in place of the estimate
PLACEMENT: OptionTypes = {"memory_bytes": int}

BY_KIND: dict[str, OptionTypes] = {
    "llamacpp": {**LLAMACPP, **LLAMACPP_OWN, **PLACEMENT},
    "vllm": {**VLLM_FLAGS, **VLLM_OWN, **PLACEMENT},
    "command": {**COMMAND, **PLACEMENT},
}


def _strings(value: Any, where: str, what: str) -> None:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(where, value, f"must be {what}: every item a string")


def _env(options: dict[str, Any], where: str) -> None:
    env = options.get("env", {})
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}.env.{key}", value, "must map variable names to strings or numbers")


def check_vllm(options: dict[str, Any], where: str) -> None:
    _env(options, where)
    _strings(options.get("extra_args", []), f"{where}.extra_args", "a list of vLLM flags")
    if options.get("runtimes", 0) < 0 or options.get("runtimes", 0) > 8:
        raise ConfigError(f"{where}.runtimes", options["runtimes"], "must be between 0 and 8")
    if options.get("kv_cache_space_gib", 1) < 1:
        raise ConfigError(f"{where}.kv_cache_space_gib", options["kv_cache_space_gib"], "must be 1 or more")


def check_llamacpp(options: dict[str, Any], where: str) -> None:
    if options.get("router") and not options.get("server"):
        raise ConfigError(f"{where}.router", options["router"], "needs `server`: the path of a llama-server binary "
                          "with router mode (the xllamacpp wheel has none)")
    # whether it is there is checked where it runs (a config may be checked on another machine)
    if "server" in options and not options["server"].strip():
        raise ConfigError(f"{where}.server", options["server"],
                          "must name a llama-server binary: a path or a name on PATH")
    if "pooling" in options and options["pooling"] not in LLAMACPP_POOLING:
        raise ConfigError(f"{where}.pooling", options["pooling"], "must be one of " + ", ".join(LLAMACPP_POOLING))


def check_command(options: dict[str, Any], where: str) -> None:
    argv = options.get("command")
    if not argv:
        raise ConfigError(f"{where}.command", argv,
                          'is required: the server as a list, e.g. ["llama-server", "-m", "{model_path}", '
                          '"--port", "{port}"]')
    _strings(argv, f"{where}.command", "a command line as a list")
    _env(options, where)
    fields = _placeholders(argv, f"{where}.command")
    env_fields = _placeholders([str(v) for v in options.get("env", {}).values()], f"{where}.env")
    if "port" not in fields | env_fields:
        raise ConfigError(f"{where}.command", argv, "must pass {port} (in the command or an env value): "
                          "warmstart picks the port the server binds")
    health = options.get("health_path", "/v1/models")
    if not health.startswith("/"):
        raise ConfigError(f"{where}.health_path", health, "must be a path starting with /")
    if "ready_pattern" in options:
        try:
            re.compile(options["ready_pattern"])
        except re.error as exc:
            raise ConfigError(f"{where}.ready_pattern", options["ready_pattern"],
                              f"is not a valid regular expression: {exc}") from None


def _placeholders(values: list[str], where: str) -> set[str]:
    fields: set[str] = set()
    for value in values:
        try:
            fields |= {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ConfigError(where, value, f"has a bad placeholder ({exc}); write {{{{ for a brace") from None
    unknown = fields - COMMAND_PLACEHOLDERS
    if unknown:
        raise ConfigError(where, values, f"unknown placeholder {{{sorted(unknown)[0]}}}; known: "
                          + ", ".join("{" + p + "}" for p in sorted(COMMAND_PLACEHOLDERS)))
    return fields


CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "llamacpp": check_llamacpp, "vllm": check_vllm, "command": check_command}
