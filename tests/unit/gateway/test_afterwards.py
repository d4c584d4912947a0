"""Work put off after an answer (gateway/afterwards.py): done in the order put off, at the next `run` or once the
delay has passed, whichever comes first; one call that fails does not stop the others."""

from __future__ import annotations

import asyncio
import logging

from warmstart.gateway.afterwards import Afterwards


def test_put_off_work_is_done_in_order_at_the_next_run_and_not_again_by_the_timer():
    async def main() -> list[str]:
        done: list[str] = []
        afterwards = Afterwards(delay=0.05)
        afterwards.later(done.append, "first")
        afterwards.later(done.append, "second")
        assert afterwards.pending and done == []
        await asyncio.sleep(0)
        assert done == []  # not on the next loop step: it waits
        afterwards.run()
        assert done == ["first", "second"] and not afterwards.pending
        await asyncio.sleep(0.1)  # the timer was cancelled: nothing is done twice
        return done

    assert asyncio.run(main()) == ["first", "second"]


def test_with_nothing_read_the_work_is_done_once_the_delay_has_passed_and_a_failure_stops_nothing(caplog):
    async def main() -> tuple[list[int], list[int]]:
        done: list[int] = []
        afterwards = Afterwards(delay=0.02)

        def fail() -> None:
            raise RuntimeError("broken bookkeeping")

        afterwards.later(done.append, 1)
        afterwards.later(fail)
        afterwards.later(done.append, 2)
        await asyncio.sleep(0.005)
        early = list(done)
        for _ in range(200):
            if done:
                break
            await asyncio.sleep(0.01)
        afterwards.later(done.append, 3)  # a new delay for work put off after the timer fired
        for _ in range(200):
            if len(done) == 3:
                break
            await asyncio.sleep(0.01)
        return early, done

    with caplog.at_level(logging.ERROR, logger="warmstart.gateway"):
        early, done = asyncio.run(main())
    assert early == [] and done == [1, 2, 3]
    assert "work put off after an answer failed" in caplog.text and "broken bookkeeping" in caplog.text
