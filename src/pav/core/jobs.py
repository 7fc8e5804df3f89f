"""Run independent jobs in worker processes, with per-job progress bars and cached results.

A job is a picklable top-level function `fn(progress, **kwargs) -> dict` whose result is JSON.
Results are written to `<cache_dir>/<name>.json` as each job ends, so a crashed or interrupted
stage keeps every finished job and a rerun only does what is missing. Jobs may name others in
`after`; they start once those have finished. Each worker process uses one torch/BLAS thread
(on a small machine several single-threaded processes beat one multi-threaded one).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pav.core.io import write_json

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[..., dict[str, Any]]
    total: int  # progress units the job reports, for its bar
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


def run_jobs(jobs: Sequence[Job], cache_dir: Path, workers: int = 2, show: bool = True) -> dict[str, dict]:
    """Run `jobs` on `workers` processes (0: in this process); returns {name: result}."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    results = {j.name: json.loads(_cached(cache_dir, j).read_text()) for j in jobs if _cached(cache_dir, j).exists()}
    todo = [j for j in jobs if j.name not in results]
    if results:
        log.info("reusing %d finished job(s): %s", len(results), ", ".join(sorted(results)))
    with _ProgressBars(todo, show) as bars:
        if workers == 0:
            for job in _topological(todo, set(results)):
                results[job.name] = _finish(cache_dir, job, job.fn(bars.callback(job.name), **job.kwargs))
            return results
        _run_pool(todo, cache_dir, workers, results, bars)
    return results


def _run_pool(todo: list[Job], cache_dir: Path, workers: int, results: dict, bars: _ProgressBars) -> None:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
        updates = manager.Queue()
        pending: dict[Future, Job] = {}
        waiting = list(todo)
        while waiting or pending:
            for job in [j for j in waiting if all(d in results for d in j.after)]:
                waiting.remove(job)
                pending[pool.submit(_call, job, updates)] = job
            if not pending:
                raise ValueError(f"unsatisfiable job dependencies: {[j.name for j in waiting]}")
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            bars.drain(updates)
            for fut in done:
                job = pending.pop(fut)
                results[job.name] = _finish(cache_dir, job, fut.result())
        bars.drain(updates)


def _call(job: Job, updates: Any) -> dict[str, Any]:
    return job.fn(lambda n: updates.put((job.name, n)), **job.kwargs)


def _finish(cache_dir: Path, job: Job, result: dict[str, Any]) -> dict[str, Any]:
    write_json(_cached(cache_dir, job), result)
    log.info("job %s finished", job.name)
    return result


def _cached(cache_dir: Path, job: Job) -> Path:
    return cache_dir / f"{job.name}.json"


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def _topological(jobs: list[Job], done: set[str]) -> list[Job]:
    order, seen, waiting = [], set(done), list(jobs)
    while waiting:
        ready = [j for j in waiting if all(d in seen for d in j.after)]
        if not ready:
            raise ValueError(f"unsatisfiable job dependencies: {[j.name for j in waiting]}")
        for j in ready:
            waiting.remove(j)
            seen.add(j.name)
            order.append(j)
    return order


class _ProgressBars:
    """One rich progress bar per job; silent when `show` is false."""

    def __init__(self, jobs: Sequence[Job], show: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            disable=not show,
        )
        self._tasks = {j.name: self._progress.add_task(j.name, total=j.total) for j in jobs}

    def __enter__(self) -> _ProgressBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def callback(self, name: str) -> Progress:
        return lambda n: self._progress.advance(self._tasks[name], n)

    def drain(self, updates: Any) -> None:
        while True:
            try:
                name, n = updates.get_nowait()
            except queue.Empty:
                return
            self._progress.advance(self._tasks[name], n)
