"""A safe math grader: math-verify in a pool of worker processes that can be killed.

``MathGrader.grade(prediction, gold)`` compares two *answers* (the text of a final answer, e.g.
``"\\dfrac{3}{4}"`` or ``"72"``, not whole solutions) and returns a typed `Grade`:

- ``correct`` / ``incorrect``: both answers normalised (`pav.tasks.answer_forms`: currency, units
  and words around a number, thousands separators, ``\\text{}``, ``\\boxed{}``, "The answer is",
  percent under ``policy.percent``), then math-verify's judgement (equivalent numbers, fractions,
  decimals, intervals, sets, equations with their right-hand side), then, under
  ``policy.irrational``, a decimal against an irrational value rounded to the decimal's places;
- ``ungraded-timeout``: no answer within ``deadline_s``; the worker was killed (SIGKILL) and a
  fresh one started in the background;
- ``ungraded-crash``: the worker raised on this input or died (or the gold answer is unusable).

A predicted answer longer than ``max_chars`` is ``incorrect`` at once, without a worker.

Why processes: math-verify's own timeouts use ``signal.alarm``, which works only on a process's
main thread and cannot interrupt C code in sympy, so a blow-up like ``9^{9^{9^9}}`` can hang a
thread for good. Here every comparison runs in a worker (`pav.tasks.grader_worker`) and the
parent waits on the worker's pipe with ``select`` and a deadline: the deadline holds whatever the
worker does, and the call works from any thread (or a Ray task). Each worker serves one call at a
time; callers beyond ``workers`` wait for a free one. Nothing here or in the worker evaluates
answer text as code (see the worker's docstring for how that is enforced).

POSIX only (``select`` on pipes).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from pav.tasks.answer_forms import AnswerPolicy

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a worker that is not ready by then is a broken install, not a slow answer


class Verdict(str, enum.Enum):
    CORRECT = "correct"
    INCORRECT = "incorrect"
    TIMEOUT = "ungraded-timeout"
    CRASH = "ungraded-crash"

    @property
    def graded(self) -> bool:
        return self in (Verdict.CORRECT, Verdict.INCORRECT)


@dataclass(frozen=True)
class Grade:
    verdict: Verdict
    seconds: float  # wall time of the call, waiting for a free worker included
    detail: str = ""  # why, in a few words; never the input text

    @property
    def correct(self) -> bool:
        return self.verdict is Verdict.CORRECT


class GraderError(RuntimeError):
    """The grader cannot run at all (workers fail to start)."""


class _Worker:
    """One worker process and the bytes of its stdout read so far."""

    def __init__(self, memory_mb: int) -> None:
        env = {**os.environ, "PAV_GRADER_MEMORY_MB": str(memory_mb), "PYTHONIOENCODING": "utf-8"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pav.tasks.grader_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, cwd=os.path.abspath(os.sep), start_new_session=True,
        )
        self._buffer = b""
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        try:
            reply = self.read_line(timeout)
        except (EOFError, OSError, ValueError):  # gone, or killed meanwhile (its pipes closed) by close()
            reply = None
        if reply is None or not json.loads(reply).get("ready"):
            self.kill()
            raise GraderError("a math-verify grading worker did not start; is math-verify installed? "
                              "(pip install 'math-verify[antlr4_13_2]')")
        self.ready = True

    def read_line(self, timeout: float) -> bytes | None:
        """The next line of output; None on timeout, EOFError when the worker has gone."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the grading worker closed its output")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class MathGrader:
    """A pool of ``workers`` grading processes with a hard per-call deadline; thread-safe.

    Use as a context manager (or call `close`). ``counters`` holds verdict counts, worker
    restarts and operations the workers' audit hook refused.
    """

    def __init__(self, workers: int = 2, deadline_s: float = 5.0, memory_mb: int = 2048,
                 max_chars: int = 100_000, policy: AnswerPolicy = AnswerPolicy()) -> None:
        if workers < 1 or not deadline_s > 0 or max_chars < 1:
            raise ValueError(f"workers and max_chars must be >= 1 and deadline_s > 0, got {workers}, {max_chars}, "
                             f"{deadline_s}")
        self.deadline_s = deadline_s
        self.max_chars = max_chars
        self.memory_mb = memory_mb
        self.policy = policy
        self._policy_fields = asdict(policy)
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._closed = False
        started = [self._start() for _ in range(workers)]
        for w in started:
            w.wait_ready(START_TIMEOUT_S)
            self._idle.put(w)

    def __enter__(self) -> MathGrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def grade(self, prediction: str, gold: str) -> Grade:
        """Compare one predicted answer with the gold answer; never raises on any input text."""
        start = time.monotonic()
        try:
            worker = self._idle.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise GraderError(f"no grading worker became free in {START_TIMEOUT_S:g} s") from None
        try:
            verdict, detail, blocked, healthy = self._ask(worker, prediction, gold)
        except BaseException:
            self._replace(worker)
            raise
        if healthy:
            self._idle.put(worker)
        else:
            self._replace(worker)
        with self._lock:
            self.counters[verdict.value] += 1
            self.counters["blocked_operations"] += blocked
        return Grade(verdict, time.monotonic() - start, detail)

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[Grade]:
        """`grade` each (prediction, gold) pair, all workers busy at once; results in input order."""
        pairs = list(pairs)
        with ThreadPoolExecutor(max_workers=max(1, len(self._all))) as pool:
            return list(pool.map(lambda pg: self.grade(*pg), pairs))

    def _ask(self, worker: _Worker, prediction: str, gold: str) -> tuple[Verdict, str, int, bool]:
        """(verdict, detail, refused operations, whether the worker can serve again)."""
        if not isinstance(prediction, str) or not isinstance(gold, str):
            return Verdict.CRASH, "answers must be strings", 0, True
        if len(gold) > self.max_chars:
            return Verdict.CRASH, f"gold answer over {self.max_chars} characters", 0, True
        if len(prediction) > self.max_chars:  # no answer is that long; spare the worker seconds of parsing
            return Verdict.INCORRECT, f"answer over {self.max_chars} characters", 0, True
        try:
            worker.send({"pred": prediction, "gold": gold, "policy": self._policy_fields})
        except OSError:  # a broken pipe: the worker is gone
            return Verdict.CRASH, "worker died", 0, False
        try:
            line = worker.read_line(self.deadline_s)
        except EOFError:
            return Verdict.CRASH, "worker died", 0, False
        if line is None:
            return Verdict.TIMEOUT, f"over {self.deadline_s:g} s", 0, False
        reply = json.loads(line)
        return Verdict(reply["verdict"]), str(reply.get("detail", "")), int(reply.get("blocked", 0)), True

    def _start(self) -> _Worker:
        w = _Worker(self.memory_mb)
        with self._lock:
            self._all.add(w)
        return w

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` now; a fresh one joins the idle pool once it is ready (in the background)."""
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            self.counters["worker_restarts"] += 1
            if self._closed:
                return
        threading.Thread(target=self._warm_replacement, daemon=True).start()

    def _warm_replacement(self) -> None:
        w = self._start()
        try:
            w.wait_ready(START_TIMEOUT_S)
        except GraderError:
            with self._lock:
                self._all.discard(w)
                closed = self._closed
            if not closed:  # close() kills a worker that is still starting: not an error
                log.error("a replacement grading worker failed to start")
            return
        with self._lock:
            closed = self._closed
        if closed:
            w.kill()
        else:
            self._idle.put(w)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.kill()


def verdict_table(grades: Sequence[Grade]) -> dict[str, int]:
    """Counts of each verdict, every type present (zeros included)."""
    counts = Counter(g.verdict.value for g in grades)
    return {v.value: counts.get(v.value, 0) for v in Verdict}
