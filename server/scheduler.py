"""Admission control: at most `max_running` requests generate at once, at most `max_waiting` wait behind them in
strict FIFO order, and the rest are refused at once (429) instead of piling up.

Runs on the event loop only (no locks needed). Knows nothing about models or HTTP beyond raising APIError.
"""

from __future__ import annotations

import asyncio
import collections
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from server import errors


class Scheduler:
    def __init__(self, max_running: int, max_waiting: int,
                 on_change: Callable[[int, int], None] | None = None) -> None:
        assert max_running >= 1 and max_waiting >= 0
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._on_change = on_change or (lambda running, waiting: None)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one running slot for the body; yields the seconds spent waiting in the queue.

        Raises APIError(429) when the queue is full. A waiter cancelled while queued (client gone) leaves the
        queue without taking a slot.
        """
        start = time.perf_counter()
        if self.running < self.max_running and not self._waiters:
            self.running += 1
        else:
            if len(self._waiters) >= self.max_waiting:
                raise errors.queue_full(len(self._waiters))
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self._notify()
            try:
                await waiter  # _release() hands its slot over directly: running is already counted for us
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # the slot was handed to us just as we were cancelled: pass it on
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._notify()
                raise
        self._notify()
        try:
            yield time.perf_counter() - start
        finally:
            self._release()
            self._notify()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # slot passes to the oldest waiter; running stays the same
                return
        self.running -= 1

    def _notify(self) -> None:
        self._on_change(self.running, len(self._waiters))
