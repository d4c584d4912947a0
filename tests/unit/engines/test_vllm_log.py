"""Reading vLLM's start-up log into phases, on lines copied from real vLLM 0.32 (CPU) starts."""

from __future__ import annotations

from warmstart.engines.vllm_log import PhaseClock, last_error, marker_of, split_lines

CPU_START = [
    (9.4, "(APIServer pid=9957) INFO 11-22 12:16:48 [api_utils.py:286] non-default args: {'host': '127.0.0.1'}"),
    (19.4, "(APIServer pid=9957) INFO 11-22 12:16:58 [model.py:733] Resolved architecture: LlamaForCausalLM"),
    (28.8, "(EngineCore pid=10385) INFO 11-22 12:17:07 [core.py:133] Initializing a V1 LLM engine (v0.32.0)"),
    (37.8, "(Worker pid=10532) INFO 11-22 12:17:16 [cpu_model_runner.py:68] Starting to load model /tmp/wv/tiny..."),
    (38.0, "(Worker pid=10532) INFO 11-22 12:17:16 [default_loader.py:501] Loading weights took 0.01 seconds"),
    (38.8, "(EngineCore pid=10385) INFO 11-22 12:17:17 [kv_cache_utils.py:2327] CPU KV cache size: 1,048,576 tokens"),
    (41.5, "(EngineCore pid=10385) INFO 11-22 12:17:20 [core.py:402] init engine (profile, create kv cache, "
           "warmup model) took 2.75 s"),
    (42.4, "(APIServer pid=9957) INFO 11-22 12:17:21 [entry.py:140] Starting vLLM server on http://127.0.0.1:18123"),
]
# the order on a GPU: compile during the memory profile, KV cache, then CUDA-graph capture
GPU_START = [
    (5.0, "INFO 05-01 10:00:05 [api_server.py:1043] vLLM API server version 0.9.1"),
    (9.0, "(VllmWorker rank=0) INFO [gpu_model_runner.py:1595] Starting to load model meta-llama/Llama-3.2-1B..."),
    (15.0, "INFO [gpu_model_runner.py:1624] Model loading took 2.3 GiB and 5.9 seconds"),
    (30.0, "INFO [backends.py:420] Compiling a graph for dynamic shape takes 12.1 s"),
    (33.0, "INFO [monitor.py:34] torch.compile takes 15.2 s in total"),
    (35.0, "INFO [kv_cache_utils.py:716] GPU KV cache size: 1,048,576 tokens"),
    (52.0, "INFO [gpu_model_runner.py:2048] Graph capturing finished in 17 secs, took 0.5 GiB"),
    (52.5, "INFO [core.py:171] init engine (profile, create kv cache, warmup model) took 37.5 seconds"),
]


def run(lines, started=0.0, imported_before=False):
    done, entered = [], []
    clock = PhaseClock(started, lambda name, s: done.append((name, round(s, 3))), entered.append,
                       imported_before=imported_before)
    for at, line in lines:
        clock.feed(line, at)
    return done, entered, clock


def test_a_cpu_start_is_split_at_each_line_that_ends_a_step():
    done, entered, clock = run(CPU_START)
    assert done == [("import", 9.4), ("engine_init", 28.4), ("load", 0.2), ("kv_init", 0.8), ("warmup", 2.7)]
    assert entered == ["engine_init", "load", "kv_init", "warmup"]
    assert clock.last == 41.5  # `ready` runs from here to the first good health check


def test_a_gpu_start_counts_compile_and_graph_capture_as_compile():
    done, _, _ = run(GPU_START)
    names = [name for name, _ in done]
    assert names == ["import", "engine_init", "load", "compile", "compile", "kv_init", "compile", "warmup"]
    compile_total = sum(s for name, s in done if name == "compile")
    assert compile_total == 15.0 + 3.0 + 17.0


def test_a_cpu_start_that_compiles_reports_the_compile_run():
    lines = CPU_START[:5] + [
        (38.1, "(Worker pid=29423) INFO 11-22 13:50:56 [cpu_model_runner.py:87] "
               "Warming up model for the compilation..."),
        (144.0, "(Worker pid=29423) INFO 11-22 13:52:42 [decorators.py:743] [backbone] saved AOT compiled function"),
        (144.5, "(Worker pid=29423) INFO 11-22 13:52:43 [cpu_model_runner.py:91] Warming up done."),
    ] + CPU_START[5:]
    lines[5 + 3:] = [(at + 106.0, line) for at, line in lines[5 + 3:]]
    done, _, _ = run(lines)
    assert [name for name, _ in done] == ["import", "engine_init", "load", "compile", "kv_init", "warmup"]
    assert dict(done)["compile"] == 106.5


def test_a_runtime_that_imported_before_the_model_came_reports_no_import_phase():
    done, _, _ = run(CPU_START, started=9.0, imported_before=True)
    assert done[0] == ("engine_init", 28.8)
    assert "import" not in [name for name, _ in done]


def test_lines_that_end_nothing_are_not_markers():
    assert marker_of("INFO:     Application startup complete.") is None
    assert marker_of("Loading safetensors checkpoint shards: 100% Completed | 1/1") is None
    assert marker_of("(Worker pid=1) INFO [default_loader.py:501] Loading weights took 0.25 seconds") == "load"


def test_the_last_error_of_a_failed_start_is_named():
    log = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
           "OSError: Can't load the configuration of '/models/missing'\n"
           "RuntimeError: Engine core initialization failed. See root cause above.\n")
    assert last_error(log) == "RuntimeError: Engine core initialization failed. See root cause above."
    assert last_error("INFO all good\n") is None


def test_split_lines_keeps_an_incomplete_tail_for_the_next_read():
    lines, tail = split_lines(b"one\ntwo\r\nthr")
    assert lines == ["one", "two"] and tail == b"thr"
    lines, tail = split_lines(tail + b"ee\n")
    assert lines == ["three"] and tail == b""
