"""Merge concurrent scoring requests into verifier batches (dynamic batching).

Requests put their solutions on one queue; a single worker takes what is waiting (up to
``max_batch`` solutions, waiting at most ``max_wait_s`` for more once it has some), scores it in
one `Scorer.score` call on one background thread (torch runs one batch at a time), and hands each
request its own slice. A queue holding ``max_queue`` solutions refuses more at once
(`Overloaded`), so overload is answered quickly instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


class Overloaded(RuntimeError):
    """The queue is full; the caller should answer 429."""


class ScoringFailed(RuntimeError):
    """The verifier raised on a batch; every request in it gets this."""


@dataclass
class _Job:
    prompts: Sequence[str]
    steps: Sequence[Sequence[str]]
    future: asyncio.Future


@dataclass
class BatchStats:
    batches: int = 0
    solutions: int = 0
    seconds: float = 0.0
    largest: int = 0


class Batcher:
    def __init__(self, score: Callable[[Sequence[str], Sequence[Sequence[str]]], list[Any]], *,
                 max_batch: int = 64, max_wait_s: float = 0.005, max_queue: int = 1024) -> None:
        self._score, self.max_batch, self.max_wait_s, self.max_queue = score, max_batch, max_wait_s, max_queue
        self._queue: asyncio.Queue[_Job] | None = None
        self._queued = 0  # solutions waiting
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pav-score")
        self._task: asyncio.Task | None = None
        self.stats = BatchStats()

    @property
    def queued(self) -> int:
        return self._queued

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def score(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[Any]:
        """Scores of these solutions, batched with whatever else is waiting; raises `Overloaded`."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        if self._queued + len(prompts) > self.max_queue:
            raise Overloaded(f"{self._queued} solutions are waiting")
        job = _Job(prompts, steps, asyncio.get_running_loop().create_future())
        self._queued += len(prompts)
        await self._queue.put(job)
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].prompts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                try:
                    job = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.prompts)
            self._queued -= size
            prompts = [p for j in jobs for p in j.prompts]
            steps = [s for j in jobs for s in j.steps]
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, self._score, prompts, steps)
            except asyncio.CancelledError:
                raise
            except BaseException:  # incl. a Rust panic from a tokenizer: find the request(s) that caused it
                await self._one_by_one(jobs)
                continue
            self._record(size, time.perf_counter() - start)
            at = 0
            for j in jobs:
                if not j.future.done():  # a request that gave up (client gone) is skipped
                    j.future.set_result(results[at: at + len(j.prompts)])
                at += len(j.prompts)

    async def _one_by_one(self, jobs: list[_Job]) -> None:
        """After a failed batch: each request alone, so one bad request fails only itself."""
        loop = asyncio.get_running_loop()
        for j in jobs:
            try:
                result = await loop.run_in_executor(self._pool, self._score, j.prompts, j.steps)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not j.future.done():
                    j.future.set_exception(ScoringFailed(f"{type(exc).__name__}: {exc}"))
                continue
            if not j.future.done():
                j.future.set_result(result)

    def _record(self, size: int, seconds: float) -> None:
        s = self.stats
        s.batches, s.solutions, s.seconds, s.largest = s.batches + 1, s.solutions + size, s.seconds + seconds, \
            max(s.largest, size)
