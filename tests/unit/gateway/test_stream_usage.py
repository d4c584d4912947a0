"""The usage event warmstart asks a stream for (to count its tokens) is taken out of what the client gets."""

from __future__ import annotations

import json

from warmstart.engines.base import Capabilities
from warmstart.gateway.access import tokens
from warmstart.gateway.protocol import ChatCompletionRequest
from warmstart.gateway.stream_usage import HiddenUsage, last_usage
from warmstart.gateway.translate import engine_body, hidden_usage

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"Oslo \\"usage\\""}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n'
DONE = b"data: [DONE]\n\n"


def feed_in_pieces(stream: bytes, size: int) -> tuple[bytes, HiddenUsage]:
    hidden = HiddenUsage()
    out = b"".join(hidden.feed(stream[i:i + size]) for i in range(0, len(stream), size))
    return out + hidden.rest(), hidden


def test_the_usage_event_is_taken_out_however_the_stream_is_cut_into_reads():
    stream = CHUNK + CHUNK + USAGE + DONE
    for size in (1, 7, 50, len(stream)):
        out, hidden = feed_in_pieces(stream, size)
        assert out == CHUNK + CHUNK + DONE, size
        assert json.loads(hidden.usage[5:])["usage"]["completion_tokens"] == 2


def test_a_stream_without_a_usage_event_passes_unchanged_and_an_unfinished_last_event_is_not_lost():
    stream = CHUNK + b'data: {"choices":[],"usage":null}\n\n' + b"data: [DONE]"
    out, hidden = feed_in_pieces(stream, 10)
    assert out == stream and hidden.usage == b""


def test_usage_is_asked_of_the_engine_only_for_a_stream_whose_client_did_not_ask_and_whose_engine_answers_it():
    caps = Capabilities(chat=True, stream_usage=True)
    stream = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                   "stream": True})
    assert hidden_usage(stream, caps) and not hidden_usage(stream, Capabilities(chat=True))
    assert json.loads(engine_body(stream, add_usage=True))["stream_options"] == {"include_usage": True}
    asked = stream.model_copy(update={"stream_options": {"include_usage": True}})
    assert not hidden_usage(asked, caps)
    assert not hidden_usage(stream.model_copy(update={"stream": False}), caps)


def test_the_last_usage_in_a_read_of_many_events_is_the_one_kept():
    """An engine reporting usage on every chunk (vLLM's continuous usage stats): a read bringing several events
    counts the tokens of the last."""
    event = b'data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":3,"completion_tokens":%d}}\n\n'
    events = b"".join(event % n for n in (1, 2, 3))
    assert tokens(last_usage(events)) == (3, 3)
    assert tokens(events) == (3, 1)  # what the first would have given
    only = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7}}\n\n'
    assert last_usage(only) == only
