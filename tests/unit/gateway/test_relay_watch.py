"""The relay's two per-request guards, in one event loop: `race` (a client that leaves abandons what its
request awaits) and `Watch` (an engine silent too long is asked its health check, and failed if it does
not answer)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from warmstart.gateway.disconnect import ClientGone, race
from warmstart.gateway.liveness import Watch


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_race_returns_the_result_and_leaves_no_cancellation_behind() -> None:
    async def main() -> str:
        disconnect: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        value = await race(asyncio.sleep(0.01, "answer"), disconnect)
        disconnect.cancel()  # the request is over (forward() does this): not a disconnect
        await asyncio.sleep(0.01)  # a stray cancellation would raise here
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return value

    assert run(main()) == "answer"


def test_a_disconnect_cancels_what_was_awaited_and_raises_client_gone() -> None:
    cancelled = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        disconnect: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.02, disconnect.set_result, None)
        with pytest.raises(ClientGone):
            await race(work(), disconnect)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.01)  # the task goes on normally

    run(main())
    assert cancelled == [True]


def test_a_client_already_gone_starts_nothing() -> None:
    started = []

    async def work() -> None:
        started.append(True)

    async def main() -> None:
        disconnect: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        disconnect.set_result(None)
        with pytest.raises(ClientGone):
            await race(work(), disconnect)

    run(main())
    assert started == []


def test_cancelling_the_request_itself_stays_a_cancellation() -> None:
    async def main() -> None:
        disconnect: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        inner = asyncio.ensure_future(race(asyncio.sleep(10), disconnect))
        await asyncio.sleep(0.01)
        inner.cancel()  # e.g. the server shutting down: not the client leaving
        with pytest.raises(asyncio.CancelledError):
            await inner
        assert not disconnect.done() and not disconnect._callbacks  # type: ignore[attr-defined]

    run(main())


class _Liveness:
    def __init__(self, answer: str | None, timeout: float) -> None:
        self.answer, self.engine_timeout, self.probes = answer, timeout, 0

    async def probe(self, lease: Any) -> str | None:
        self.probes += 1
        return self.answer


async def _until(done: Any, limit: float = 10.0) -> None:
    """Let the loop run until `done()` (bounded: a slow machine only waits longer)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def _lease() -> Any:
    failed: list[str] = []
    return SimpleNamespace(replica=SimpleNamespace(id="r1"), fail=failed.append, failed=failed)


def test_a_silent_engine_that_fails_its_health_check_is_failed() -> None:
    async def main() -> tuple[Any, Watch]:
        lease = _lease()
        watch = Watch(_Liveness("its health check timed out", 0.05), lease)  # type: ignore[arg-type]
        await _until(lambda: lease.failed)
        watch.close()
        return lease, watch

    lease, watch = run(main())
    assert lease.failed == ["the engine sent nothing for 0.05 s and its health check timed out"]
    assert watch.reason == lease.failed[0]


def test_a_silent_engine_that_answers_its_health_check_gets_more_time() -> None:
    async def main() -> tuple[Any, _Liveness]:
        lease, liveness = _lease(), _Liveness(None, 0.05)
        watch = Watch(liveness, lease)  # type: ignore[arg-type]
        await _until(lambda: liveness.probes >= 3)
        watch.close()
        return lease, liveness

    lease, liveness = run(main())
    assert lease.failed == [] and liveness.probes >= 2  # asked again after each further silence


def test_an_engine_that_sends_bytes_is_never_asked() -> None:
    async def main() -> tuple[Any, _Liveness]:
        lease, liveness = _lease(), _Liveness("dead", 2.0)
        watch = Watch(liveness, lease)  # type: ignore[arg-type]
        for _ in range(150):  # 3 s of bytes, 20 ms apart, against a 2 s limit
            await asyncio.sleep(0.02)
            watch.progress()
        watch.close()
        return lease, liveness

    lease, liveness = run(main())
    assert lease.failed == [] and liveness.probes == 0


def test_an_unarmed_watch_waits_for_arm_and_then_keeps_the_same_deadline() -> None:
    """The relay makes a request's watch unarmed and arms it once the request outlasts the disconnect grace:
    nothing is asked before; once armed, the engine is asked `engine_timeout` after its last progress, not
    after the arming."""
    async def main() -> tuple[Any, _Liveness, float]:
        loop = asyncio.get_running_loop()
        lease, liveness = _lease(), _Liveness("dead", 0.3)
        watch = Watch(liveness, lease, armed=False)  # type: ignore[arg-type]
        await asyncio.sleep(0.6)  # past the deadline: unarmed, nothing asked
        assert liveness.probes == 0 and lease.failed == []
        watch.progress()
        await asyncio.sleep(0.25)
        watch.arm()  # 0.05 s before the deadline the progress set; from the arming it would be 0.3 s
        armed = loop.time()
        await _until(lambda: lease.failed)
        watch.close()
        return lease, liveness, loop.time() - armed

    lease, liveness, after = run(main())
    assert liveness.probes == 1 and lease.failed == ["the engine sent nothing for 0.3 s and dead"]
    assert after < 0.2  # asked about 0.05 s after the arming, not 0.3 s


def test_a_closed_watch_asks_nothing() -> None:
    async def main() -> tuple[Any, _Liveness]:
        lease, liveness = _lease(), _Liveness("dead", 0.01)
        Watch(liveness, lease).close()  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        return lease, liveness

    lease, liveness = run(main())
    assert lease.failed == [] and liveness.probes == 0


def test_an_answer_settles_after_it_is_sent_and_when_sending_fails() -> None:
    from warmstart.gateway.relay import Answer

    events: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    async def broken(message: dict[str, Any]) -> None:
        raise OSError("the client went away")

    async def main() -> None:
        answer = Answer(b'{"ok":1}', 200, {"x-warmstart-start": "warm"}, lambda: events.append("settled"))
        assert events == []  # nothing given back before the answer leaves
        await answer({}, None, send)  # type: ignore[arg-type]
        assert dict(answer.raw_headers)[b"content-length"] == b"8"
        with pytest.raises(OSError):
            await Answer(b"{}", 200, {}, lambda: events.append("settled too"))({}, None, broken)  # type: ignore[arg-type]

    run(main())
    assert events == ["http.response.start", "http.response.body", "settled", "settled too"]
