"""A client that leaves in the middle of its request: noticed (after a grace, so that a quick answer pays
nothing for it) and turned into ClientGone in the task that serves it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected; whatever it asked for is abandoned."""


async def wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# a request answered sooner than this never starts a task to listen for its client leaving: most warm answers
LISTEN_AFTER_S = 0.05


def listen_for_disconnect(request: Request, late: Callable[[], None] | None = None,
                          answered: Callable[[], bool] | None = None) -> asyncio.Future[None]:
    """A future done when the client disconnects; cancel it when the request is over. The task that listens
    starts only once the request has lasted LISTEN_AFTER_S: a warm answer usually comes first, and then no task
    is made, run or cancelled for it (on a 2-CPU machine that is CPU taken from the engine answering). `late`
    is called then too. `answered`: whether the whole answer was sent already; a client that leaves after that
    (or the end of the answer itself, which the server's `receive` reports as a disconnect) is not one that
    left in the middle."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    listener: list[asyncio.Task[None]] = []

    async def listen() -> None:
        await wait_disconnect(request)
        if not gone.done() and not (answered is not None and answered()):
            gone.set_result(None)

    def start() -> None:
        if not gone.done():
            listener.append(loop.create_task(listen()))
            if late is not None:
                late()

    timer = loop.call_later(LISTEN_AFTER_S, start)

    def over(_: asyncio.Future[None]) -> None:
        timer.cancel()
        for task in listener:
            task.cancel()

    gone.add_done_callback(over)
    return gone


async def race(awaitable: Awaitable[T], disconnect: asyncio.Future[None]) -> T:
    """Await `awaitable` unless the client disconnects first; then cancel it and raise ClientGone.

    The awaitable runs in the caller's own task (no task of its own, no asyncio.wait: both cost more CPU
    than the rest of a warm request's bookkeeping); a disconnect cancels the caller's task, and that one
    cancellation is turned into ClientGone."""
    if disconnect.done():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise ClientGone()
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def leave(future: asyncio.Future[None]) -> None:
        nonlocal gone
        if not future.cancelled():  # forward() cancels it when the request is over: not a disconnect
            gone = True
            task.cancel()

    disconnect.add_done_callback(leave)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        disconnect.remove_done_callback(leave)
