"""Group commit for the sockets of one web process.

Thousands of sockets each storing one input would each pay for a thread hop, a database
statement and a broker message. A `Coalescer` hands everything submitted while its previous
batch was running to one call of a batch function instead: with one socket active the batch is
that one item and nothing waits; under load the fixed costs are shared by the whole batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from botsite.eventloop import LoopLocal

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """Calls `batch(items)` with the items submitted while the previous call ran, one call at a
    time, and gives each submitter its own result (or the batch's exception)."""

    def __init__(self, batch: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 500) -> None:
        self.batch = batch
        self.max_batch = max_batch
        self.pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self.draining = False

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                taken, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    results = await self.batch([item for item, _ in taken])
                except BaseException as exc:  # the submitters see it as their own call's failure
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(taken, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.draining = False


class PerLoop(Generic[Item, Result]):
    """One Coalescer per event loop: a batch runs on the loop whose sockets submitted it (tests
    open and close loops; daphne has one)."""

    def __init__(self, batch: Callable[[list[Item]], Awaitable[Sequence[Result]]], max_batch: int = 500) -> None:
        self.coalescers: LoopLocal[Coalescer[Item, Result]] = LoopLocal(lambda: Coalescer(batch, max_batch))

    async def submit(self, item: Item) -> Result:
        return await self.coalescers.get().submit(item)
