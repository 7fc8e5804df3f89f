"""The ``Task`` protocol: everything the rest of pav knows about a reasoning task.

Samplers, the Monte-Carlo labeller, SFT, search and RL program against this protocol only, so a
new task is one module that implements it. A solution is a list of *steps*: lines of text without
the delimiter. The model sees ``prompt(problem)`` followed by ``step + step_delimiter`` for each
step (``join_steps``); ``split_steps`` is the inverse on sampled text. A sampler stops a solution
after a final step, after ``max_steps`` steps, or when a step reaches ``max_step_chars``
characters; ``outcome`` then grades it (the final-answer reward, ``outcome`` in STYLE.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from pav.core.records import Problem

Split = Literal["train", "heldout"]


@runtime_checkable
class Task(Protocol):
    """A source of problems with a step grammar, a grader and a noisy demonstrator."""

    name: str
    step_delimiter: str  # ends every step, the last one included ("\n")
    max_steps: int  # a sampler stops a solution after this many steps
    max_step_chars: int  # a sampler cuts a step that reaches this many characters

    def problems(self, n: int, seed: int, split: Split = "train") -> list[Problem]:
        """``n`` problems drawn deterministically from ``seed``; the two splits never share one."""
        ...

    def prompt(self, problem: Problem) -> str:
        """The text the model is conditioned on; it ends with ``step_delimiter``."""
        ...

    def split_steps(self, completion: str) -> list[str]:
        """The steps of a completion, without delimiters; a missing final delimiter is fine."""
        ...

    def is_final_step(self, step: str) -> bool:
        """Whether ``step`` ends the solution (an answer line)."""
        ...

    def answer(self, steps: Sequence[str]) -> str | None:
        """The final answer a solution states (what majority voting compares), None if it states none."""
        ...

    def outcome(self, problem: Problem, steps: Sequence[str]) -> float:
        """Final-answer reward of a solution: 1.0 if correct, else 0.0. Never raises."""
        ...

    def demonstrate(self, problem: Problem, rng: random.Random) -> list[str]:
        """One solution of the task's noisy demonstrator (SFT data); it may be wrong."""
        ...


def join_steps(steps: Sequence[str], delimiter: str = "\n") -> str:
    """Completion text of ``steps``: each step followed by the delimiter (inverse of ``split_steps``)."""
    return "".join(step + delimiter for step in steps)
