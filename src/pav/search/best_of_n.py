"""Best-of-N (the paper, §4.1 and App. C): sample N complete solutions per problem, score them once, pick one.

`sample_and_score` draws ``n_max`` solutions per problem in one sampler call and scores them in
one scorer call; `best_of_n` then evaluates any N ≤ n_max by cutting each problem's solutions
into ``n_max // N`` disjoint groups of N (in sampling order) and averaging over the groups, so
every N is estimated from all samples at no extra sampling cost. A group's compute is what its N
solutions cost: their sampled tokens, the prompt once, and the tokens its verifiers read.

Selection rules (`pav.search.select`): ``orm`` (the ORM's score), ``pav_as_orm`` (the PQV's value
of the complete solution, paper Fig. 5(a)), ``majority`` (the most common final answer) and
``weighted_majority`` (answers weighted by the ORM's score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pav.core.compute import Compute
from pav.core.records import Problem
from pav.policies.base import Policy, context_tokens
from pav.rollouts.estimates import pass_at_n
from pav.search.select import majority_vote, pick_max, weighted_vote
from pav.tasks.base import Task
from pav.verifier.scorer import Scorer


@dataclass
class SolutionSet:
    """n_max scored solutions of one problem, in sampling order; arrays are (n_max,)."""

    problem_id: str
    steps: list[tuple[str, ...]]
    answers: list[str | None]
    outcome: np.ndarray  # the checked final-answer reward (Rex)
    orm: np.ndarray  # the outcome verifier's score
    pqv: np.ndarray  # the PQV's value of the complete solution (PAV-as-ORM)
    generated: np.ndarray  # policy tokens sampled
    scored: np.ndarray  # verifier tokens read
    encoded: int  # prompt tokens, encoded once for all samples


SELECTORS: dict[str, Callable[[SolutionSet, np.ndarray], int]] = {
    "orm": lambda s, idx: pick_max(s.orm[idx]),
    "pav_as_orm": lambda s, idx: pick_max(s.pqv[idx]),
    "majority": lambda s, idx: majority_vote([s.answers[i] for i in idx]),
    "weighted_majority": lambda s, idx: weighted_vote([s.answers[i] for i in idx], s.orm[idx]),
}


def sample_and_score(policy: Policy, scorer: Scorer, task: Task, problems: Sequence[Problem], n_max: int,
                     seed: int, *, max_new_tokens: int, temperature: float, top_p: float) -> list[SolutionSet]:
    """``n_max`` solutions of every problem: one sampler call, one scorer call."""
    prompts = [task.prompt(p) for p in problems]
    batch = policy.sample(prompts, n_max, until="solution", max_steps=task.max_steps, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, seed=seed, is_final_step=task.is_final_step,
                          max_step_chars=task.max_step_chars)
    steps = [[tuple(task.split_steps(g.text)[: task.max_steps]) for g in gens] for gens in batch.generations]
    scores = scorer.score([pr for pr, sols in zip(prompts, steps) for _ in sols], [s for sols in steps for s in sols])
    out, prompt_tokens = [], context_tokens(policy, prompts)
    for k, (problem, prompt, sols, gens) in enumerate(zip(problems, prompts, steps, batch.generations)):
        mine = scores[k * n_max: (k + 1) * n_max]
        out.append(SolutionSet(
            problem.problem_id, sols, [task.answer(s) for s in sols],
            np.array([task.outcome(problem, s) for s in sols]),
            np.array([sc.outcome for sc in mine]),
            np.array([sc.q_base[-1] if len(sc.q_base) else sc.v_base for sc in mine]),
            np.array([g.n_tokens for g in gens]), np.array([sc.verifier_tokens for sc in mine]),
            prompt_tokens[k]))
    return out


def best_of_n(sets: Sequence[SolutionSet], n: int, method: str) -> dict:
    """Accuracy and mean compute per problem of best-of-``n`` under ``method`` (module docstring)."""
    if method not in SELECTORS:
        raise ValueError(f"unknown best-of-N method {method!r}; choose from {sorted(SELECTORS)}")
    n_max = len(sets[0].steps)
    if not 1 <= n <= n_max:
        raise ValueError(f"N must be in 1..{n_max}, got {n}")
    groups = n_max // n
    per_problem, compute = [], Compute()  # accuracy of each problem, averaged over its groups
    for s in sets:
        wins = 0.0
        for g in range(groups):
            idx = np.arange(g * n, (g + 1) * n)
            wins += s.outcome[idx[SELECTORS[method](s, idx)]]
            compute.add(generated=int(s.generated[idx].sum()), encoded=s.encoded, scored=int(s.scored[idx].sum()),
                        samples=n)
        per_problem.append(wins / groups)
    return {"method": method, "n": n, **accuracy_stats(per_problem),
            **{k: v / (len(sets) * groups) for k, v in compute.as_dict().items()}}


def accuracy_stats(per_problem: Sequence[float]) -> dict[str, float]:
    """Mean accuracy over problems and its standard error (problems are the independent units)."""
    a = np.asarray(per_problem, dtype=np.float64)
    return {"accuracy": float(a.mean()), "accuracy_se": float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0}


def pass_at(sets: Sequence[SolutionSet], n: int) -> float:
    """Pass@N, the oracle re-ranker (the ceiling): unbiased from all n_max samples, mean over problems."""
    return float(np.mean([pass_at_n(len(s.outcome), int(s.outcome.sum()), n) for s in sets]))
