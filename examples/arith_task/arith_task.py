"""Multi-step arithmetic as a pav task, written only against pav's public task API (`pav.tasks`).

Select it in any stage with ``--set task.source=arith_task:make_task`` (after ``pip install -e
examples/arith_task``, or with this folder on ``PYTHONPATH``); ``task.options.*`` are the keyword
arguments of `make_task`.

A problem is a start number and ``n_ops`` operations applied left to right, e.g. ``7 +5 *2 -3``.
A solution applies one operation per line and then states the result::

    7+5=12
    12*2=24
    24-3=21
    ans 21

The text uses only digits, letters, spaces, newlines and ``+-*=``, so pav's from-scratch tiny GPT
(its character tokenizer) can learn it. The demonstrator makes an arithmetic slip (a result off by
one) with probability ``p_slip`` per line and carries on from what it wrote, so SFT on it gives a
mediocre policy whose mistakes a process verifier can localise.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from pav.tasks import Problem, Split, split_steps

_ANSWER = re.compile(r"ans (-?\d{1,9})")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class ArithTask:
    """Implements the `pav.tasks.Task` protocol (see docs/your-task.md)."""

    name = "arith"
    step_delimiter = "\n"
    max_step_chars = 24

    def __init__(self, n_ops: int = 3, max_operand: int = 9, p_slip: float = 0.1,
                 heldout_fraction: float = 0.2) -> None:
        if n_ops < 1 or max_operand < 2 or not 0 <= p_slip <= 1 or not 0 < heldout_fraction < 1:
            raise ValueError("need n_ops >= 1, max_operand >= 2, p_slip in [0, 1], heldout_fraction in (0, 1)")
        self.n_ops, self.max_operand, self.p_slip = n_ops, max_operand, p_slip
        self.heldout_fraction = heldout_fraction
        self.max_steps = n_ops + 2  # every operation, the answer, and one line of slack

    def problems(self, n: int, seed: int, split: Split = "train") -> list[Problem]:
        rng, out = random.Random(seed), []
        while len(out) < n:
            start = rng.randint(1, self.max_operand)
            ops = [(rng.choice("+-*"), rng.randint(2, self.max_operand)) for _ in range(self.n_ops)]
            question = " ".join([str(start), *(f"{op}{b}" for op, b in ops)])
            if self._split_of(question) != split:
                continue
            value = start
            for op, b in ops:
                value = _OPS[op](value, b)
            out.append(Problem(f"arith-{len(out)}-{_digest(question)[:8]}", question, str(value)))
        return out

    def prompt(self, problem: Problem) -> str:
        return problem.question + self.step_delimiter

    def split_steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)  # pav's rule: a blank line is never a step

    def is_final_step(self, step: str) -> bool:
        return _ANSWER.fullmatch(step.strip()) is not None  # a step may begin with the blank lines before it

    def answer(self, steps: Sequence[str]) -> str | None:
        for step in steps:
            m = _ANSWER.fullmatch(step.strip())
            if m:
                return str(int(m.group(1)))
        return None

    def outcome(self, problem: Problem, steps: Sequence[str]) -> float:
        return 1.0 if self.answer(steps) == problem.answer else 0.0

    def demonstrate(self, problem: Problem, rng: random.Random) -> list[str]:
        start, *ops = problem.question.split(" ")
        value, steps = int(start), []
        for token in ops:
            op, b = token[0], int(token[1:])
            result = _OPS[op](value, b)
            if rng.random() < self.p_slip:
                result += rng.choice((-1, 1))  # a slip; later lines continue from it
            steps.append(f"{value}{op}{b}={result}")
            value = result
        return steps + [f"ans {value}"]

    def _split_of(self, question: str) -> Split:
        return "heldout" if int(_digest(question), 16) / 16**16 < self.heldout_fraction else "train"


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def make_task(n_ops: int = 3, max_operand: int = 9, p_slip: float = 0.1, heldout_fraction: float = 0.2) -> ArithTask:
    """The factory ``task.source = "arith_task:make_task"`` names; ``task.options.*`` are its arguments."""
    return ArithTask(n_ops, max_operand, p_slip, heldout_fraction)
