from types import SimpleNamespace

import pytest

from warmstart.engines.llamacpp_service import _text_messages, check_body

GEN = SimpleNamespace(n_vocab=100)


def chat(*messages, **extra):
    return {"messages": list(messages), **extra}


@pytest.mark.parametrize("kind,body,param", [
    ("completion", {"prompt": ""}, "prompt"),
    ("completion", {"prompt": [""]}, "prompt"),
    ("completion", {"prompt": [1, 100]}, "prompt"),  # outside the vocabulary
    ("completion", {"prompt": [1, True]}, "prompt"),
    ("completion", {"prompt": "hi", "logit_bias": {"x": 1}}, "logit_bias"),
    ("completion", {"prompt": "hi", "logit_bias": {"5": "much"}}, "logit_bias"),
    ("completion", {"prompt": "hi", "logit_bias": {"100": 1}}, "logit_bias"),
    ("completion", {"prompt": "hi", "top_k": 2.5}, "top_k"),
    ("completion", {"prompt": "hi", "min_p": True}, "min_p"),
    ("completion", {"prompt": "hi", "stop": [1]}, "stop"),
    ("chat", chat({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}), "messages[0].content"),
    ("chat", chat({"role": "user", "content": 5}), "messages[0].content"),
    ("chat", chat({"role": "user", "content": "a"}, "b"), "messages[1]"),
])
def test_a_clients_mistake_is_named_before_generation(kind, body, param):
    problem = check_body(GEN, kind, body)
    assert problem is not None and problem[1] == param and problem[0]


@pytest.mark.parametrize("kind,body", [
    ("completion", {"prompt": "hi", "logit_bias": {"5": -100, "99": 2.5}, "top_k": 3, "temperature": 0}),
    ("completion", {"prompt": [0, 99]}),
    ("completion", {"prompt": ["hi"]}),
    ("chat", chat({"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant"})),
])
def test_valid_requests_pass(kind, body):
    assert check_body(GEN, kind, body) is None


def test_missing_content_is_empty_text_and_text_parts_are_joined():
    assert _text_messages([{"role": "assistant"}, {"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == [
        {"role": "assistant", "content": ""}, {"role": "user", "content": "ab"}]
