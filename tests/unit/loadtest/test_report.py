from warmstart.loadtest.plan import Limits, plan
from warmstart.loadtest.report import format_summary, percentile, summarize
from warmstart.loadtest.runner import Outcome
from warmstart.loadtest.trace import TraceRequest


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99


def test_summary_splits_warm_and_cold_and_counts_errors_by_kind():
    the_plan = plan([TraceRequest(i, 10, 4) for i in range(6)], model="m", speedup=1, start=0, duration=10,
                    max_requests=10, limits=Limits())
    outcomes = [
        Outcome(0, "m", 0, sent=0.0, status=200, start="cold", wait_ms=900.0, ttft=1.0, latency=1.2, output_tokens=4),
        Outcome(1, "m", 1, sent=1.0, status=200, start="warm", wait_ms=0.2, ttft=0.05, latency=0.2, output_tokens=4),
        Outcome(2, "m", 2, sent=2.0, status=200, start="warm", wait_ms=0.1, ttft=0.03, latency=0.1, output_tokens=3),
        Outcome(3, "m", 3, sent=3.0, status=503, retry_after="2", error="503 queue_full"),
        Outcome(4, "m", 4, sent=4.5, status=200, start="warm", ttft=0.1, latency=0.3, output_tokens=2,
                error="stream_interrupted"),
        Outcome(5, "m", 5, sent=5.0, error="timeout"),
    ]
    s = summarize(outcomes, the_plan, 10.0, url="http://127.0.0.1:1", endpoint="completions", stream=True)
    assert s["requests"] == {"planned": 6, "sent": 6, "ok": 3, "errors": 3, "warm": 2, "cold": 1,
                             "refused": 1, "refused_with_retry_after": 1}
    assert s["errors"] == {"503 queue_full": 1, "stream_interrupted": 1, "timeout": 1}
    assert s["warm"]["ttft_s"]["n"] == 2 and s["warm"]["ttft_s"]["max"] == 0.05
    assert s["cold"]["ttft_s"]["p50"] == 1.0 and s["cold"]["wait_ms"]["max"] == 900.0
    assert s["throughput"] == {"requests_per_s": 0.3, "output_tokens_per_s": 1.1, "output_tokens": 11}
    assert s["client_lag_s"]["max"] == 0.5
    assert len(s["outcomes"]) == 6
    text = format_summary(s)
    assert "3 ok (2 warm, 1 cold), 3 errors" in text and "503 queue_full" in text
    assert "ttft cold (s)" in text and "sent requests up to 0.50 s late" in text
