"""Next-token distributions of a GGUF model over a text, the way llama-perplexity computes them:
the text is cut into chunks of `n_ctx` tokens, each starting with BOS, and the second half of each
chunk is scored (its first half is context). Runs llama.cpp from the wheel in this process."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from warmstart.quant.ggml import GGMLError, llama


class Model:
    """One GGUF model loaded with llama.cpp, with a context of `n_ctx` tokens."""

    def __init__(self, path: Path, n_ctx: int = 512, threads: int | None = None) -> None:
        self.api = llama()
        self.path = Path(path)
        mparams = self.api.llama_model_default_params()
        self.model = self.api.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise GGMLError(f"llama.cpp could not load {path}")
        self.ctx = self.api.llama_init_from_model(self.model, self.api.llama_context_default_params())
        if not self.ctx:
            self.api.llama_model_free(self.model)
            raise GGMLError(f"llama.cpp could not make a context for {path}")
        self.n_ctx = min(n_ctx, int(self.api.llama_n_ctx(self.ctx)))
        n = threads or max(1, len(os.sched_getaffinity(0)))
        self.api.llama_set_n_threads(self.ctx, n, n)
        self.vocab = self.api.llama_model_get_vocab(self.model)
        self.n_vocab = int(self.api.llama_vocab_n_tokens(self.vocab))
        self.bos = int(self.api.llama_vocab_bos(self.vocab))
        self.add_bos = bool(self.api.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, text: str) -> np.ndarray:
        raw = text.encode()
        cap = len(raw) + 8
        out = (ctypes.c_int32 * cap)()
        n = self.api.llama_tokenize(self.vocab, raw, len(raw), out, cap, False, False)
        if n < 0:
            raise GGMLError(f"tokenizing needed {-n} tokens, more than {cap}")
        return np.ctypeslib.as_array(out)[:n].astype(np.int32)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits after each of `tokens` (one sequence, from position 0): shape (len, n_vocab)."""
        n = len(tokens)
        if n > self.n_ctx:
            raise GGMLError(f"{n} tokens do not fit a context of {self.n_ctx}")
        self.api.llama_memory_clear(self.api.llama_get_memory(self.ctx), True)
        batch = self.api.llama_batch_init(n, 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = int(tok)
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            batch.n_tokens = n
            rc = self.api.llama_decode(self.ctx, batch)
            if rc != 0:
                raise GGMLError(f"llama_decode failed ({rc}) on {self.path}")
            ptr = self.api.llama_get_logits(self.ctx)
            return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab)).copy()
        finally:
            self.api.llama_batch_free(batch)

    def close(self) -> None:
        if self.ctx:
            self.api.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.api.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks(tokens: np.ndarray, n_ctx: int, bos: int | None, max_chunks: int | None = None) -> Iterator[np.ndarray]:
    """llama-perplexity's chunks: n_ctx tokens each, the first replaced by BOS where the model adds one."""
    count = len(tokens) // n_ctx
    if max_chunks is not None:
        count = min(count, max_chunks)
    for i in range(count):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        yield chunk


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
