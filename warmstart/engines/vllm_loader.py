"""warmstart's fast safetensors loader as a vLLM model loader: `--load-format warmstart`.

Runs in vLLM's Python (torch and vLLM), in each process that loads weights (the CPU or GPU worker).
vLLM finds it through the `vllm.general_plugins` entry point that warmstart writes for it
(`install_plugin`, called by the vLLM engine for DATA_DIR/vllm/plugins, which is on every vLLM
process's PYTHONPATH): vLLM calls `register()` in its API server, its engine core and each worker,
spawned or forked, before any model is loaded.

The loader reads each safetensors file of the model folder with `FastLoader` (parallel chunked reads,
O_DIRECT for what is not in the page cache) and hands vLLM's `model.load_weights` views of that
buffer, as vLLM's default loader hands it views of a file mapping; `load_weights` copies them into
the model's parameters. The buffers are freed once the model has its weights: a replica serves for
hours and would otherwise hold a second copy of its weights for a reload that rarely comes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from vllm.config import ModelConfig
from vllm.config.load import LoadConfig
from vllm.logger import init_logger
from vllm.model_executor.model_loader import DefaultModelLoader, register_model_loader
from vllm.model_executor.model_loader.base_loader import BaseModelLoader

from warmstart.engines.child import die_with_starter
from warmstart.store.loader import Checkpoint, FastLoader, folder_files

LOAD_FORMAT = "warmstart"
EXTRA_KEYS = {"threads", "direct"}  # --model-loader-extra-config '{"direct": "never", "threads": 4}'
# a name under "vllm." so that vLLM's own log handler prints it, in its format, with the process prefix
logger = init_logger("vllm.model_executor.model_loader.warmstart")


@lru_cache(maxsize=4)
def fast_loader(threads: int | None = None, direct: str = "auto") -> FastLoader:
    """One FastLoader per process (and settings): its thread settings and buffer pool are reused."""
    return FastLoader(threads=threads, direct=direct)


class WarmstartModelLoader(BaseModelLoader):
    """Load a local Hugging Face folder's safetensors weights with warmstart's FastLoader."""

    def __init__(self, load_config: LoadConfig) -> None:
        super().__init__(load_config)
        extra = load_config.model_loader_extra_config or {}
        unknown = set(extra) - EXTRA_KEYS
        if unknown:
            raise ValueError(f"load format {LOAD_FORMAT!r} takes model_loader_extra_config keys "
                             f"{sorted(EXTRA_KEYS)}, not {sorted(unknown)}")
        self.threads: int | None = extra.get("threads")
        self.direct: str = extra.get("direct", "auto")

    def _folder(self, model_config: ModelConfig) -> Path:
        folder = Path(model_config.model)
        if not folder.is_dir():
            raise ValueError(f"load format {LOAD_FORMAT!r} reads a local model folder; {model_config.model!r} "
                             "is not one (download it first, or use --load-format auto)")
        return folder

    def download_model(self, model_config: ModelConfig) -> None:
        folder_files(self._folder(model_config))  # nothing to download: check the files are there

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        if getattr(model, "secondary_weights", ()) or getattr(model, "allow_patterns_overrides", None) is not None:
            # models that pick their files themselves (some multimodal ones): vLLM's own loader knows how
            logger.info("warmstart loader: %s picks its own weight files; loading with vLLM's safetensors loader",
                        type(model).__name__)
            config = dataclasses.replace(self.load_config, load_format="safetensors")
            DefaultModelLoader(config).load_weights(model, model_config)
            return
        began = time.perf_counter()
        files = folder_files(self._folder(model_config))
        loader = fast_loader(self.threads, self.direct)
        loaded: list[Checkpoint] = []

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for path in files:
                ckpt = loader.load(path)
                loaded.append(ckpt)
                yield from ckpt.torch().items()

        try:
            # every buffer is kept until load_weights returns: a model may hold a tensor past the next
            # file's read (to stack or fuse it), so no buffer is reused for another file meanwhile
            names = model.load_weights(weights())
        finally:
            for ckpt in loaded:
                ckpt.release()
            loader.pool.clear()
        took = time.perf_counter() - began
        nbytes = sum(c.stats.bytes for c in loaded)
        read_s = sum(c.stats.seconds for c in loaded)
        direct = sum(c.stats.direct_bytes for c in loaded)
        # "Loading weights took" is the line warmstart's start phases (and vLLM's users) look for
        logger.info("Loading weights took %.2f seconds (warmstart loader: %d file%s, %.2f GB read in %.2f s, "
                    "%.2f GB of it with O_DIRECT)", took, len(files), "" if len(files) == 1 else "s",
                    nbytes / 1e9, read_s, direct / 1e9)
        if model_config.quantization is None and names is not None:
            check_all_loaded(model, set(names))


def check_all_loaded(model: nn.Module, names: set[str]) -> None:
    """vLLM's default loader's check for unquantized models: every parameter came from the checkpoint,
    except those of modules whose quantization method builds them after loading."""
    for prefix, module in model.named_modules():
        method = getattr(module, "quant_method", None)
        if getattr(method, "uses_meta_device", False) or getattr(method, "process_weights_after_loading", None):
            names.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters())
    missing = {n for n, _ in model.named_parameters()} - names
    if missing:
        raise ValueError(f"Following weights were not initialized from checkpoint: {missing}")


def register() -> Any:
    """The `vllm.general_plugins` entry point: vLLM calls it once in every process it starts. Each of them also
    dies with the process that started it: vLLM's engine core does not outlive its API server, even one killed
    by SIGKILL (warmstart ends a whole engine's process group, but on a cluster node Ray kills only the
    agent's children when the agent goes, and the engine core would be left running)."""
    die_with_starter()
    return register_model_loader(LOAD_FORMAT)(WarmstartModelLoader)
