"""Token counters and the process metrics on /metrics, against a real `warmstart serve` with the real llama.cpp
engine (SmolLM2): every answer's tokens are counted as its engine counted them (chat and completions, streamed or
not, with or without `stream_options.include_usage`, and Ollama's API), and a client that did not ask for a
stream's usage does not get it."""

from __future__ import annotations

import re

import ollama
import openai
import pytest

from tests.support import smollm2

pytestmark = pytest.mark.integration
SMOL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of Norway?"}]
GREEDY = {"temperature": 0, "seed": 1}


def scrape(srv) -> str:
    status, _, raw = srv.request("GET", "/metrics")
    assert status == 200
    return raw.decode()


def counter(text: str, name: str, model: str) -> float:
    found = re.findall(rf'^{name}{{model="{model}"}} (\S+)$', text, re.M)
    return float(found[0]) if found else 0.0


def test_prompt_and_generated_tokens_are_counted_as_the_client_saw_them_on_every_route(start_server):
    embedder = smollm2(name="smol-embed", options={"n_ctx": 512, "embedding": True, "pooling": "mean"})
    srv = start_server([smollm2(keep_alive="5m"), embedder])
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    seen: list[tuple[int, int]] = []  # (prompt, generated) of each answer, as its client was told

    answer = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=9, **GREEDY)  # type: ignore[arg-type]
    assert answer.usage is not None
    seen.append((answer.usage.prompt_tokens, answer.usage.completion_tokens))

    # a stream whose client asked for its usage gets it
    chunks = list(client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=7, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))  # type: ignore[arg-type]
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    seen.append((usage.prompt_tokens, usage.completion_tokens))

    # one that did not gets no usage event (as from OpenAI), and its tokens are counted all the same: the same
    # greedy request unstreamed says how many
    plain = list(client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=5, stream=True,
                                                **GREEDY))  # type: ignore[arg-type]
    assert all(c.usage is None and c.choices for c in plain)
    same = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=5, **GREEDY)  # type: ignore[arg-type]
    assert same.usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in plain) == same.choices[0].message.content
    seen += [(same.usage.prompt_tokens, same.usage.completion_tokens)] * 2

    done = client.completions.create(model=SMOL, prompt="The capital of Norway is", max_tokens=4, **GREEDY)
    assert done.usage is not None
    seen.append((done.usage.prompt_tokens, done.usage.completion_tokens))
    streamed = list(client.completions.create(model=SMOL, prompt="The capital of Norway is", max_tokens=4,
                                              stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert streamed[-1].usage is not None
    seen.append((streamed[-1].usage.prompt_tokens, streamed[-1].usage.completion_tokens))

    with ollama.Client(host=srv.url, timeout=120) as local:
        said = local.chat(SMOL, messages=QUESTION, options={**GREEDY, "num_predict": 6})
        seen.append((said.prompt_eval_count or 0, said.eval_count or 0))
        parts = list(local.generate(SMOL, "Count: one, two,", options={**GREEDY, "num_predict": 3}, stream=True))
        seen.append((parts[-1].prompt_eval_count or 0, parts[-1].eval_count or 0))

    assert all(p > 0 and g > 0 for p, g in seen), seen
    text = scrape(srv)
    assert counter(text, "warmstart_prompt_tokens_total", SMOL) == sum(p for p, _ in seen)
    assert counter(text, "warmstart_generation_tokens_total", SMOL) == sum(g for _, g in seen)

    # embeddings count their input as prompt tokens, and generate none
    vectors = client.embeddings.create(model="smol-embed", input=["Oslo is the capital of Norway.", "Paris"])
    assert vectors.usage.prompt_tokens > 0
    assert counter(text := scrape(srv), "warmstart_prompt_tokens_total", "smol-embed") == vectors.usage.prompt_tokens
    assert counter(text, "warmstart_generation_tokens_total", "smol-embed") == 0

    # a refused request counts no tokens
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=-1)
    assert counter(scrape(srv), "warmstart_prompt_tokens_total", SMOL) == sum(p for p, _ in seen)


def test_metrics_carry_the_process_metrics_and_no_created_series(start_server):
    srv = start_server([smollm2()])
    text = scrape(srv)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        assert re.search(rf"^{name} [0-9.e+]+$", text, re.M), name
    assert float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1)) > 10 * 2**20  # type: ignore[union-attr]
    assert "# TYPE warmstart_prompt_tokens_total counter" in text or "# TYPE warmstart_prompt_tokens counter" in text
    assert "_created" not in text
