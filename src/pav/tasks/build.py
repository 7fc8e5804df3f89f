"""Which task a stage runs on: the built-in ModReach, or a math problem set when one is given.

Every LM stage has two task sections, ``task`` (ModReach's knobs) and ``math`` (a problem set);
``math.train`` set means the math task. Runs of `pav label` store each problem's rendered prompt
in ``meta["prompt"]``, and `prompt_of` prefers it, so stages that read a label run's problems
(verifier data, exports) need no task config and no tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pav.core.records import Problem
from pav.core.rejects import TooManyRejects
from pav.tasks.base import Task
from pav.tasks.math_task import MathTask, MathTaskConfig
from pav.tasks.modreach import ModReach, ModReachConfig


def build_task(builtin: ModReachConfig, math: MathTaskConfig, tokenizer: Any = None,
               rejects_dir: str | Path | None = None) -> Task:
    """The math task when ``math.train`` is set, else ModReach; ``tokenizer`` renders chat prompts.
    With ``rejects_dir``, the problem set's malformed records are listed in its ``rejects.jsonl``
    (also when there are too many and the task is refused)."""
    if not math.train:
        return ModReach(builtin)
    try:
        task = MathTask(math)
    except TooManyRejects as exc:
        if rejects_dir is not None:
            exc.ledger.write(Path(rejects_dir) / REJECTS_FILE)
        raise
    if rejects_dir is not None:
        task.rejects.write(Path(rejects_dir) / REJECTS_FILE)
    return with_tokenizer(task, tokenizer)


def with_tokenizer(task: Task, tokenizer: Any) -> Task:
    """``task`` rendering chat prompts with ``tokenizer`` (tasks without chat prompts: unchanged)."""
    if tokenizer is not None and hasattr(task, "bind_tokenizer"):
        task.bind_tokenizer(tokenizer)
    return task


REJECTS_FILE = "rejects.jsonl"


def prompt_of(problem: Problem) -> str:
    """The prompt a label run stored with the problem, else the built-in task's (older runs)."""
    stored = problem.meta.get("prompt")
    return stored if isinstance(stored, str) else ModReach().prompt(problem)


def with_prompt(problem: Problem, task: Task) -> Problem:
    """``problem`` with ``task``'s rendered prompt in ``meta["prompt"]`` and its step delimiter in
    ``meta["step_delimiter"]``."""
    return Problem(problem.problem_id, problem.question, problem.answer,
                   {**problem.meta, "prompt": task.prompt(problem), "step_delimiter": task.step_delimiter})


def delimiter_of(problem: Problem) -> str:
    """The step delimiter a label run stored with the problem (newline for older runs)."""
    stored = problem.meta.get("step_delimiter")
    return stored if isinstance(stored, str) and stored else "\n"
