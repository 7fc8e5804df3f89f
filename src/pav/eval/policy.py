"""How well a policy solves a task, from ``n`` sampled solutions per problem (`pav eval-policy`).

Problems are the independent units: every accuracy is a mean over problems of a per-problem value,
and its standard error is the standard deviation of those values over sqrt(problems).

- pass@k, k = 1..n: the unbiased estimator of Chen et al. (2021) from the problem's c correct of n
  (`pav.rollouts.estimates.pass_at_n`); pass@1 is c / n.
- maj@k: the n samples are cut into n // k disjoint groups of k in sampling order; each group's
  majority answer (`pav.search.select.majority_vote`: solutions without an answer do not vote, ties
  go to the answer stated first) is graded, and the problem's value is the mean over its groups —
  the same grouping as best-of-N in `pav search`.
- Per solution: steps, tokens sampled, whether it states an answer (``task.answer``), whether a
  budget cut it, whether a step holds a blank line or reaches ``task.max_step_chars`` characters
  (the sampler cut it there and ended the solution, `pav.policies.base`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pav.core.records import Problem, Solution
from pav.policies.base import Generation
from pav.rollouts.estimates import pass_at_n
from pav.search.select import majority_vote
from pav.tasks.base import Task


def sample_rows(task: Task, problems: Sequence[Problem], solutions: Sequence[Solution],
                generations: Sequence[Generation]) -> list[dict[str, Any]]:
    """One row per sampled solution (the samples file): its steps, answer, grade and shape."""
    by_id = {p.problem_id: p for p in problems}
    delim = task.step_delimiter
    rows = []
    for s, g in zip(solutions, generations, strict=True):
        p = by_id[s.problem_id]
        rows.append({"problem_id": s.problem_id, "solution_id": s.solution_id, "question": p.question,
                     "gold": p.answer, "steps": list(s.steps), "answer": task.answer(s.steps),
                     "outcome": s.outcome, "tokens": g.n_tokens, "finished": g.finished,
                     "blank_step": any(not line.strip() for step in s.steps for line in step.split(delim)),
                     "long_step": any(len(step) >= task.max_step_chars for step in s.steps)})
    return rows


@dataclass(frozen=True)
class EvalPolicySummary:
    """``summary.json`` of a `pav eval-policy` run. pass@k and maj@k (with ``_se``) for k = 1 ..
    samples_per_problem are top-level keys of the file; the record keeps them in ``metrics``."""
    STAGES = ("eval-policy",)
    REST = "metrics"  # the field that holds the file's other keys (`pav.core.rundir.read_summary`)
    policy: str
    task: str
    split: str
    problems: int
    samples_per_problem: int
    metrics: dict[str, float]  # pass@k, pass@k_se, maj@k, maj@k_se
    mean_steps: float
    mean_tokens: float
    no_answer: float
    blank_step: float
    long_step: float
    cut_by_budget: float
    tokens_generated: int
    seconds: float


def policy_metrics(rows: Sequence[dict[str, Any]], n: int) -> dict[str, Any]:
    """pass@k and maj@k for k = 1..n with standard errors, and the shape of the solutions (module
    docstring); ``rows`` are `sample_rows`, n per problem."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["problem_id"], []).append(r)
    if any(len(g) != n for g in groups.values()):
        raise ValueError(f"every problem needs exactly {n} samples")
    correct = np.array([sum(r["outcome"] == 1.0 for r in g) for g in groups.values()])  # (P,)
    out: dict[str, Any] = {"problems": len(groups), "samples_per_problem": n}
    for k in range(1, n + 1):
        out[f"pass@{k}"], out[f"pass@{k}_se"] = _mean_se([pass_at_n(n, int(c), k) for c in correct])
    for k in range(1, n + 1):
        out[f"maj@{k}"], out[f"maj@{k}_se"] = _mean_se([_majority_accuracy(g, k) for g in groups.values()])
    out["mean_steps"] = float(np.mean([len(r["steps"]) for r in rows]))
    out["mean_tokens"] = float(np.mean([r["tokens"] for r in rows]))
    out["no_answer"] = float(np.mean([r["answer"] is None for r in rows]))
    out["blank_step"] = float(np.mean([r["blank_step"] for r in rows]))
    out["long_step"] = float(np.mean([r["long_step"] for r in rows]))
    out["cut_by_budget"] = float(np.mean([not r["finished"] for r in rows]))
    return out


def _majority_accuracy(samples: Sequence[dict[str, Any]], k: int) -> float:
    """Mean grade of the majority answer over the problem's disjoint groups of ``k`` samples."""
    wins = []
    for start in range(0, len(samples) - k + 1, k):
        group = samples[start:start + k]
        wins.append(float(group[majority_vote([r["answer"] for r in group])]["outcome"] == 1.0))
    return float(np.mean(wins))


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0


def metrics_table(m: dict[str, Any], ks: Sequence[int]) -> str:
    """A markdown table of pass@k and maj@k (mean ± SE) and the solution-shape shares."""
    lines = ["| k | pass@k | maj@k |", "|---|---|---|"]
    lines += [f"| {k} | {m[f'pass@{k}']:.3f} ± {m[f'pass@{k}_se']:.3f} | {m[f'maj@{k}']:.3f} ± {m[f'maj@{k}_se']:.3f} |"
              for k in ks]
    lines += ["", "| problems | samples each | mean steps | mean tokens | no answer | blank step | over-long step "
              "| cut by budget |", "|---|---|---|---|---|---|---|---|",
              f"| {m['problems']} | {m['samples_per_problem']} | {m['mean_steps']:.2f} | {m['mean_tokens']:.1f} | "
              f"{m['no_answer']:.3f} | {m['blank_step']:.3f} | {m['long_step']:.3f} | {m['cut_by_budget']:.3f} |"]
    return "\n".join(lines)
