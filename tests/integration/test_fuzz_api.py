"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis) against a real server with a real,
small-context model: no 5xx, no hang, every error in OpenAI's error format with a status the schema
documents."""

from __future__ import annotations

import time

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

from tests.faults import SMOL, is_openai_error
from tests.support import smollm2

pytestmark = pytest.mark.integration
EXAMPLES = 40  # per operation and mode: enough to reach every validation branch, bounded in time
TIMEOUT = 60  # seconds a request may take; a small context keeps real generations to a few seconds


def check(documented: set[str], response) -> str | None:
    """What is wrong with one answer, or None."""
    if response.status_code >= 500:  # one client at a time: nothing should be refused as unavailable
        return f"HTTP {response.status_code}"
    if str(response.status_code) not in documented:
        return f"HTTP {response.status_code}, which the schema does not document for this operation"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code} with a body that is not JSON"
        if not is_openai_error(body):
            return f"HTTP {response.status_code} not in OpenAI's error format"
    return None


@pytest.mark.slow
def test_the_api_fuzzed_from_its_openapi_schema_answers_every_request_without_5xx(start_server):
    srv = start_server([smollm2(options={"n_ctx": 192}, keep_alive=-1)], server={"queue_deadline": "90s"})
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    raw = srv.get("/openapi.json")[1]
    problems: list[str] = []
    counts: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions",
                                               "GET /v1/models", "POST /admin/models/{model}/warm"}
    started = time.monotonic()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            documented = set(raw["paths"][op.path][op.method.lower()]["responses"])

            @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @hypothesis.given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                # half the generated requests name the real model, so they reach the engine, not only the 404
                if isinstance(case.body, dict) and "model" in case.body and counts.get(op.label, 0) % 2:
                    case.body["model"] = SMOL
                counts[op.label] = counts.get(op.label, 0) + 1
                try:
                    response = case.call(base_url=srv.url, timeout=TIMEOUT)
                except Exception as exc:  # a timeout is a hang; a dropped connection is a crash
                    problems.append(f"{op.label} {mode.value}: {type(exc).__name__}: {exc}\n  {case.as_curl_command()}")
                    return
                problem = check(documented, response)
                if problem:
                    problems.append(f"{op.label} {mode.value}: {problem}: {response.text[:300]}\n"
                                    f"  {case.as_curl_command()[:1000]}")

            try:
                fuzz()
            except hypothesis.errors.Unsatisfiable:
                pass  # an operation without parameters has no negative cases
    assert problems == [], "\n".join(problems[:10])
    assert srv.proc.poll() is None and "Traceback" not in srv.log()
    total = sum(counts.values())
    print(f"\n[reliability] schemathesis: {total} requests over {len(operations)} operations "
          f"(positive and negative, {EXAMPLES} each) in {time.monotonic() - started:.0f} s: "
          f"no 5xx, no hang, every error in OpenAI's format")
