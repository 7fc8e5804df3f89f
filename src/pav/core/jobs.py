"""Run independent jobs in worker processes, with per-job progress bars and cached results.

A job is a picklable top-level function `fn(progress, **kwargs) -> dict` whose result is JSON.
Results are written to `<cache_dir>/<name>.json` as each job ends, so a crashed or interrupted
stage keeps every finished job and a rerun only does what is missing. Jobs may name others in
`after`; they start once those have finished. Each worker process uses one torch/BLAS thread
(on a small machine several single-threaded processes beat one multi-threaded one).

Executors: ``local`` (``workers`` spawned processes, or this process when ``workers`` is 0) and
``ray`` (one Ray task per job, on a cluster at ``ray_address`` or a local one of ``workers`` CPUs
started for the call; 0: all of this machine's). A Ray task whose worker dies is retried up to ``max_retries`` times, so a
killed worker costs at most the job it was running; results are still written by this process,
once per job, so a retried job never leaves a duplicate. Jobs that write files themselves must
write them idempotently (keyed names, rename into place). Ray is imported only when chosen.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pav.core.io import write_json

log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[..., dict[str, Any]]
    total: int  # progress units the job reports, for its bar
    kwargs: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Executor:
    """Where jobs run: ``local`` processes (0 workers: this process) or a ``ray`` cluster."""

    kind: str  # "local" | "ray"
    workers: int  # local: worker processes; ray without an address: CPUs of the local cluster (0: all)
    ray_address: str  # ray: an existing cluster ("auto", "ray://host:10001", ...); empty: start one
    max_retries: int  # ray: retries of a job whose worker died

    def __post_init__(self) -> None:
        if self.kind not in ("local", "ray"):
            raise ValueError(f"unknown executor {self.kind!r}; choose local or ray")
        if self.workers < 0 or self.max_retries < 0:
            raise ValueError("workers and max_retries must be >= 0")


def with_absolute_paths(cfg: Any, *names: str) -> Any:
    """A frozen config with the named settings ("policy", "math.train") made absolute where they
    name an existing local path, so that workers started in another directory find them. Symbolic
    links are kept, not followed: a policy's id is named after the folder it was given as, and a
    worker must name it as this process does."""
    import dataclasses
    import os

    for name in names:
        head, _, rest = name.partition(".")
        value = getattr(cfg, head)
        if rest:
            value = with_absolute_paths(value, rest)
        elif value and Path(value).exists():
            value = os.path.abspath(value)
        cfg = dataclasses.replace(cfg, **{head: value})
    return cfg


def run_jobs(jobs: Sequence[Job], cache_dir: Path, workers: int | Executor = 2, show: bool = True) -> dict[str, dict]:
    """Run `jobs` on `workers` processes (0: in this process) or an `Executor`; returns {name: result}."""
    executor = workers if isinstance(workers, Executor) else Executor("local", workers, "", 0)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    results = {j.name: json.loads(_cached(cache_dir, j).read_text()) for j in jobs if _cached(cache_dir, j).exists()}
    todo = [j for j in jobs if j.name not in results]
    if results:
        log.info("reusing %d finished job(s): %s", len(results), ", ".join(sorted(results)))
    with _ProgressBars(todo, show) as bars:
        if executor.kind == "ray":
            _run_ray(todo, cache_dir, executor, results, bars)
        elif executor.workers == 0:
            for job in _topological(todo, set(results)):
                results[job.name] = _finish(cache_dir, job, job.fn(bars.callback(job.name), **job.kwargs))
        else:
            _run_pool(todo, cache_dir, executor.workers, results, bars)
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


def _run_ray(todo: list[Job], cache_dir: Path, executor: Executor, results: dict, bars: _ProgressBars) -> None:
    """One Ray task per job (one CPU, one torch thread each); results committed here as they end."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("the ray executor needs Ray: pip install 'pav[dist]'") from e
    started = not ray.is_initialized()
    if started:
        threads = {var: "1" for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        local_cpus = executor.workers or os.cpu_count() or 1  # 0 workers: every CPU of this machine
        ray.init(address=executor.ray_address or None, num_cpus=None if executor.ray_address else local_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": threads})
    if ray.cluster_resources().get("CPU", 0) < 1:  # a job needs one CPU: it would wait forever
        raise ValueError(f"the Ray cluster {executor.ray_address or '(local)'} has no CPUs for pav's jobs; "
                         "start it with --num-cpus N or set workers=N")
    remote = ray.remote(num_cpus=1, max_retries=executor.max_retries)(_call_ray)
    try:
        pending: dict[Any, Job] = {}
        waiting = list(todo)
        while waiting or pending:
            for job in [j for j in waiting if all(d in results for d in j.after)]:
                waiting.remove(job)
                pending[remote.remote(job)] = job
            if not pending:
                raise ValueError(f"unsatisfiable job dependencies: {[j.name for j in waiting]}")
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in done:
                job = pending.pop(ref)
                results[job.name] = _finish(cache_dir, job, ray.get(ref))  # raises once retries are spent
                bars.callback(job.name)(job.total)
    finally:
        if started:
            ray.shutdown()


def _call_ray(job: Job) -> dict[str, Any]:
    return job.fn(lambda n: None, **job.kwargs)


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
    """One rich progress bar per job; when `show` is false, a log line of every job's count every
    `LOG_EVERY_S` seconds instead (on a pipe, in CI)."""

    def __init__(self, jobs: Sequence[Job], show: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            disable=not show,
        )
        self._tasks = {j.name: self._progress.add_task(j.name, total=j.total) for j in jobs}
        self._log_at = None if show else time.monotonic() + LOG_EVERY_S

    def _advance(self, name: str, n: int) -> None:
        self._progress.advance(self._tasks[name], n)
        if self._log_at is not None and time.monotonic() >= self._log_at:
            self._log_at = time.monotonic() + LOG_EVERY_S
            tasks = self._progress.tasks
            log.info("jobs: %s", ", ".join(f"{t.description} {t.completed:.0f}/{t.total:.0f}" for t in tasks
                                          if 0 < t.completed < (t.total or 0)) or "waiting")

    def __enter__(self) -> _ProgressBars:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def callback(self, name: str) -> Progress:
        return lambda n: self._advance(name, n)

    def drain(self, updates: Any) -> None:
        while True:
            try:
                name, n = updates.get_nowait()
            except queue.Empty:
                return
            self._advance(name, n)
