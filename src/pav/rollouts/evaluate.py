"""Sample solutions for held-out problems and measure them: pass@k, the kinds of steps taken and,
per problem, how many samples were correct and how concentrated the samples were."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from pav.core.records import Problem
from pav.policies.base import Policy
from pav.rollouts.estimates import pass_at_n
from pav.rollouts.label import Sampling, sample_seed_solutions
from pav.tasks.base import Task


def evaluate_policy(
    policy: Policy, task: Task, problems: Sequence[Problem], n: int, ks: Sequence[int], seed: int, *,
    max_new_tokens: int, per_problem: bool = False,
) -> dict[str, Any]:
    """pass@k (unbiased, from n samples per problem, averaged over problems) and the step mix; with
    ``per_problem``, also ``problems``: one row per problem (`problem_coverage`). Samples are drawn
    from the policy's own distribution (temperature 1, no nucleus cut), as pass@k is defined."""
    start = time.perf_counter()
    solutions, stats = sample_seed_solutions(policy, task, problems, n, Sampling(1.0, 1.0, max_new_tokens), seed)
    seconds = time.perf_counter() - start
    rows = problem_coverage(problems, solutions)
    out: dict[str, Any] = {f"pass@{k}": float(np.mean([pass_at_n(n, r["correct"], k) for r in rows]))
                           for k in ks if k <= n}
    kinds: Counter[str] = Counter()
    analyse = getattr(task, "analyse", None)
    if analyse is not None:
        by_id = {p.problem_id: p for p in problems}
        for s in solutions:
            kinds.update(a.label for a in analyse(by_id[s.problem_id], s.steps).steps)
    total = sum(kinds.values())
    out["step_mix"] = {k: v / total for k, v in sorted(kinds.items())} if total else {}
    out["mean_steps"] = float(np.mean([len(s.steps) for s in solutions]))
    out["samples"] = len(solutions)
    out["tokens_generated"] = stats.tokens_generated
    out["generated_tokens_per_second"] = stats.tokens_generated / seconds
    out["seconds"] = seconds
    if per_problem:
        out["problems"] = rows
    return out


def problem_coverage(problems: Sequence[Problem], solutions: Sequence[Any]) -> list[dict[str, Any]]:
    """Per problem, in order: its question, the number of samples and of correct ones, and the most
    frequent solution (steps joined by `` | ``; ties: the first sampled) with its share of the samples,
    which tells a policy that has collapsed onto one solution (share near 1) from a diverse one."""
    by_id: dict[str, list[Any]] = {p.problem_id: [] for p in problems}
    for s in solutions:
        by_id[s.problem_id].append(s)
    rows = []
    for p in problems:
        sols = by_id[p.problem_id]
        texts = Counter(" | ".join(s.steps) for s in sols)
        top, count = texts.most_common(1)[0] if texts else ("", 0)
        rows.append({"problem_id": p.problem_id, "question": p.question, "samples": len(sols),
                     "correct": sum(s.outcome == 1.0 for s in sols), "top": top,
                     "top_share": count / len(sols) if sols else 0.0})
    return rows
