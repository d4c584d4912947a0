"""Listening for a client that leaves: no task for a request answered within the grace, a leave noticed after."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from warmstart.gateway import disconnect as relay


def _request(messages: asyncio.Queue[dict[str, object]]) -> Request:
    async def receive() -> dict[str, object]:
        return await messages.get()
    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


async def test_a_request_over_within_the_grace_never_starts_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(relay, "wait_disconnect", lambda request: calls.append(request) or asyncio.sleep(3600))
    gone = relay.listen_for_disconnect(_request(asyncio.Queue()))
    await asyncio.sleep(relay.LISTEN_AFTER_S / 5)
    gone.cancel()  # the answer was sent: the request is over
    await asyncio.sleep(relay.LISTEN_AFTER_S * 2)
    assert calls == []


async def test_a_client_that_leaves_later_is_noticed_and_the_listener_ends() -> None:
    messages: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    gone = relay.listen_for_disconnect(_request(messages))
    await asyncio.sleep(relay.LISTEN_AFTER_S * 2)  # a long request: the listener is running by now
    before = len(asyncio.all_tasks())
    await messages.put({"type": "http.disconnect"})
    await asyncio.wait_for(gone, 5)
    assert gone.result() is None
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == before - 1  # the listener finished


async def test_a_request_over_after_the_grace_cancels_its_listener() -> None:
    gone = relay.listen_for_disconnect(_request(asyncio.Queue()))
    await asyncio.sleep(relay.LISTEN_AFTER_S * 2)
    listening = len(asyncio.all_tasks())
    gone.cancel()
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == listening - 1
