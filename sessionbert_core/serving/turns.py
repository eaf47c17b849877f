"""Turns at the served model: one prediction at a time in a worker, the waiting request with the least work first."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool


class ModelTurns:
    """One prediction at a time (torch already has every core the worker was given), and when one ends the
    waiting request with the least work goes next: a light request waits for at most the one request
    running, never for a queue of heavy ones. A turn passes on only when the model's thread has returned,
    so two predictions never overlap, whatever happened to the request that started it."""

    def __init__(self) -> None:
        self.busy = False
        self._waiting: list[tuple[float, int, asyncio.Future]] = []
        self._arrival = itertools.count()

    async def run(self, work: float, deadline: float, predict: Callable, *args):
        """`predict(*args)` in a thread at this request's turn; TimeoutError if `deadline` (time.monotonic())
        passes while it waits. `predict` itself must stop at the deadline: it is never abandoned."""
        await self._take(work, deadline)
        running = asyncio.ensure_future(run_in_threadpool(predict, *args))
        running.add_done_callback(lambda _: self._pass_on())
        return await asyncio.shield(running)  # a cancelled request still leaves the turn held until it ends

    async def _take(self, work: float, deadline: float) -> None:
        if not self.busy:
            self.busy = True
            return
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (work, next(self._arrival), turn))
        try:
            await asyncio.wait_for(asyncio.shield(turn), max(0.0, deadline - time.monotonic()))
        except BaseException:  # out of time, or cancelled
            if turn.done() and not turn.cancelled():  # handed the turn just as the wait ended: pass it on
                self._pass_on()
            turn.cancel()  # _pass_on skips it
            raise

    def _pass_on(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)  # still busy: the turn goes straight to it
                return
        self.busy = False
