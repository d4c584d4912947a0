"""The llama.cpp server's settings for one replica, on xllamacpp's real CommonParams."""

import os

import xllamacpp

from warmstart.engines.llamacpp_worker import server_params


def params(options=None, parallel=4, ctx=2048):
    return server_params(xllamacpp, "/m.gguf", "smol", options or {}, parallel, ctx, "127.0.0.1", 0)


def test_each_slot_holds_the_whole_context():
    p = params(parallel=4, ctx=2048)
    assert (p.n_parallel, p.n_ctx, p.kv_unified) == (4, 8192, False)
    assert p.model.path == "/m.gguf" and p.model_alias == {"smol"} and p.hostnames == ["127.0.0.1"]
    assert p.port == 0 and p.fit_params is False and p.endpoint_metrics is True


def test_options_map_to_the_servers_settings():
    p = params({"n_threads": 3, "n_threads_batch": 2, "n_batch": 256, "seed": 7, "warmup": False, "repack": False,
                "use_mmap": False, "use_mlock": True, "flash_attn": False, "chat_format": "chatml",
                "embedding": True, "pooling": "mean"})
    assert (p.cpuparams.n_threads, p.cpuparams_batch.n_threads, p.n_batch, p.sampling.seed) == (3, 2, 256, 7)
    assert p.warmup is False and p.no_extra_bufts is True and p.chat_template == "chatml"
    assert p.load_mode == xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_MLOCK
    assert p.flash_attn_type == xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    assert p.embedding is True and p.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN


def test_defaults_leave_llama_cpp_its_own():
    p, fresh = params(), xllamacpp.CommonParams()
    assert p.warmup is True and p.no_extra_bufts is False and p.embedding is False
    assert (p.load_mode, p.n_batch) == (fresh.load_mode, fresh.n_batch)
    half = max(1, (os.cpu_count() or 2) // 2)  # not llama-server's all: replicas would fight over the cores
    assert p.cpuparams.n_threads == p.cpuparams_batch.n_threads == half
