"""The ``Task`` protocol: everything the rest of pav knows about a reasoning task (public API).

Samplers, the Monte-Carlo labeller, SFT, search, RL, eval-policy and serve program against this
protocol only, so a new task is one module with a factory that returns an object implementing it;
``--set task.source=my_pkg.my_module:make_task`` selects it in every stage and
``task.options.NAME=VALUE`` are the factory's keyword arguments (`pav.tasks.build`,
docs/your-task.md). Subclassing is not needed: any object with these attributes and methods is a
Task, and every stage checks that on the first training problem before it starts.

A solution is a list of *steps*: the text before each delimiter. The model sees ``prompt(problem)``
followed by ``step + step_delimiter`` for each step (``join_steps``); ``split_steps`` is the
inverse on sampled text and must follow the rule every sampler applies, `pav.tasks.split_steps`:
a blank line never becomes a step (it is kept at the start of the next one). A sampler stops a solution after a final step (``is_final_step``) or
after ``max_steps`` steps, and then cuts it at its first step that reaches ``max_step_chars``
characters, exactly that many in: the cut step, without its delimiter, is the solution's last (a budget
cut, like the token budget; `pav.policies.base.cut_over_long`); ``outcome`` then grades it (the final-answer reward Rex), and ``answer``
is what majority voting compares. ``demonstrate`` is needed only by SFT (and RFT): a task without
demonstrations can still be labelled, searched, trained with RL and evaluated from a given policy.

Optional extras a stage uses when present: ``bind_tokenizer(tokenizer)`` (render chat prompts with
the policy's template), ``analyse(problem, steps)`` (name the kind of each step in reports),
``rejects`` (a `pav.core.rejects.RejectLedger` of malformed source records, listed in the run).
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
    max_step_chars: int  # a sampled step that reaches this many characters is cut there and ends the solution

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
