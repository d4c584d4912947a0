import itertools

import pytest

from tests.faults import AZURE_CONV as AZURE
from warmstart.loadtest.trace import TraceError, read_trace


def test_azure_rows_become_times_from_the_first_request(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.6805900,374,44\n"
                    "2023-11-16 18:15:50.9951690,396,109\n"
                    "2023-11-16 18:15:46.1805900,12,3\n")  # out of order: sorted by arrival
    trace = read_trace(path, "azure")
    assert [(round(r.at, 4), r.prompt_tokens, r.output_tokens) for r in trace] == [
        (0.0, 12, 3), (0.5, 374, 44), (4.8146, 396, 109)]


def test_the_real_azure_conversation_trace_reads_whole():
    trace = read_trace(AZURE, "azure")
    assert len(trace) == 19_366 and trace[0].at == 0 and 3400 < trace[-1].at < 3600
    assert all(a.at <= b.at for a, b in itertools.pairwise(trace))


def test_jsonl_with_an_optional_model(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"t": 10.5, "prompt_tokens": 5, "output_tokens": 2}\n\n'
                    '{"t": 10, "prompt_tokens": 7, "output_tokens": 1, "model": "gemma-3-270m"}\n')
    trace = read_trace(path, "jsonl")
    assert [(r.at, r.prompt_tokens, r.output_tokens, r.model) for r in trace] == [
        (0.0, 7, 1, "gemma-3-270m"), (0.5, 5, 2, None)]


@pytest.mark.parametrize("fmt,text,message", [
    ("azure", "time,a,b\n", "not an Azure trace"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", ":2: bad TIMESTAMP"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,x,2\n", "ContextTokens must be a whole"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n", "has no requests"),
    ("jsonl", '{"t": 1, "prompt_tokens": 1}\n', ":1: output_tokens must be a whole number"),
    ("jsonl", '{"t": "soon", "prompt_tokens": 1, "output_tokens": 1}\n', "'t' must be a number"),
    ("jsonl", '{"t": 1, "prompt_tokens": -1, "output_tokens": 1}\n', "must not be negative"),
    ("jsonl", "[1, 2]\n", "expected an object"),
    ("jsonl", "{nope\n", "not valid JSON"),
])
def test_a_bad_trace_names_file_line_and_field(tmp_path, fmt, text, message):
    path = tmp_path / "bad"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        read_trace(path, fmt)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        read_trace(tmp_path / "nope.csv", "azure")
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(tmp_path / "nope.csv", "parquet")
