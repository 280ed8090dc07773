"""Admission: wait (FIFO, bounded) for a running slot of the scheduler, unless the client goes away first.

Boundary: the HTTP connection's lifetime and the scheduler's slots; what runs in the slot is serving.py's.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, Callable

from fastapi import Request

from server.runtime import Runtime


async def admit(runtime: Runtime, request: Request) -> AsyncExitStack:
    """Wait (FIFO) for a running slot; the returned stack releases it. 429 when the queue is full."""
    stack = AsyncExitStack()
    waited = await unless_disconnected(request, lambda: stack.enter_async_context(runtime.scheduler.slot()))
    runtime.metrics.queue_wait.observe(waited)
    return stack


async def until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Callable[[], Any]) -> Any:
    """Run `work()` (a coroutine function) but cancel it when the client goes away; returns its result."""
    task = asyncio.ensure_future(work())
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise ClientGone()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class ClientGone(Exception):
    """The client disconnected before the response was complete."""
