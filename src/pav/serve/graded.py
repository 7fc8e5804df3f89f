"""Step rewards of finished responses, with the checked outcome on the final step when a gold answer is given.

What `pav serve`'s /openrlhf route, the OpenRLHF ``reward_func`` file, the verl reward manager and
TRL's `PAVReward` share. A trainer hands over a prompt, a complete response and often a gold answer
(OpenRLHF's ``labels``, verl's ``ground_truth``, a TRL dataset column). The response is finished,
so its value is known exactly once it is graded: with a gold answer the final step's Q^π is the
checked outcome (Rex) and its A^μ = outcome − Q̂^μ(prefix before it), as `pav rl` does for an
answer step (``graded_final``, `pav.rl.rewards`); every earlier step keeps the verifier's
Q̂^π + α·Â^μ. Without a gold answer all steps keep the verifier's values.

A gold answer is graded by the task the verifier was trained on (`pav.tasks.build.TaskConfig`,
the built-in task by default): a task whose prompt states the whole problem (the built-in one,
``parse_question``) grades the steps against that problem, and the gold answer must be its answer;
any other task (the math task, a plug-in) grades against ``Problem(answer=gold)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from pav.core.records import Problem
from pav.serve.reduce import reduce_steps

EXTRA_LOGS = ("pav/steps", "pav/step_min", "pav/step_last", "pav/step_mean", "pav/graded", "pav/outcome")


class GoldAnswerError(ValueError):
    """A gold answer the task cannot grade against this prompt (the message says why)."""


def load_task(task: Any = None, tokenizer: Any = None) -> Any:
    """A `Task` from a Task, a `TaskConfig`, a factory name ``module:function``, or None (the built-in task)."""
    from pav.tasks.build import TaskConfig, build_task, task_config

    if task is None or isinstance(task, str):
        task = task_config(task) if task else TaskConfig()
    if isinstance(task, TaskConfig):
        return build_task(task, tokenizer, check=False)
    return task


def gold_problem(task: Any, prompt: str, gold: str) -> Problem:
    """The problem a gold answer belongs to (module docstring); raises `GoldAnswerError`."""
    parse = getattr(task, "parse_question", None)
    if parse is None:
        return Problem("gold", prompt, gold.strip(), {"prompt": prompt})
    try:
        problem = parse(prompt)
    except ValueError:
        raise GoldAnswerError(f"the prompt is not a problem of the task {getattr(task, 'name', '?')!r}; serve the "
                              "verifier's own task (task.source=...)") from None
    if problem.answer != gold.strip():
        raise GoldAnswerError("the label is not the answer of the problem its prompt states")
    return problem


def checked_outcome(task: Any, prompt: str, steps: Sequence[str], gold: str | None) -> float | None:
    """Rex of a finished response against ``gold`` (None without a gold answer)."""
    if gold is None or not str(gold).strip():
        return None
    return float(task.outcome(gold_problem(task, prompt, str(gold)), list(steps)))


def with_outcome(scores: Any, outcome: float | None) -> Any:
    """``scores`` (a `StepScores`) with the checked outcome on the final step (module docstring)."""
    if outcome is None or len(scores.q_base) == 0:
        return scores
    q_base, q_prover, adv = (np.array(a, dtype=np.float64) for a in (scores.q_base, scores.q_prover, scores.adv_prover))
    before = q_prover[-1] - adv[-1]  # Q̂^μ of the prefix before the final step (NaN past the window)
    q_base[-1], q_prover[-1], adv[-1] = outcome, outcome, outcome - before
    return dataclasses.replace(scores, q_base=q_base, q_prover=q_prover, adv_prover=adv, outcome=float(outcome))


def extra_logs(step_rewards: np.ndarray, outcome: float | None) -> dict[str, float]:
    """Per-response numbers a trainer logs beside the reward (OpenRLHF's ``extra_logs``, verl's
    ``reward_extra_info``): the same keys for every response, so they stack into columns."""
    return {"pav/steps": float(len(step_rewards)),
            "pav/step_min": reduce_steps(step_rewards, np.nan, "min"),
            "pav/step_last": reduce_steps(step_rewards, np.nan, "last"),
            "pav/step_mean": reduce_steps(step_rewards, np.nan, "mean"),
            "pav/graded": float(outcome is not None), "pav/outcome": float(outcome) if outcome is not None else 0.0}
