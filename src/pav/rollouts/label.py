"""`pav label`: Monte-Carlo step labels for seed solutions of the base policy (the paper, §4.2 and App. D).

For every problem, `n_cov` seed solutions are sampled from the base policy π; every prefix of a
seed solution (prefix_len = steps kept, 0 = question only) gets `n_mc` rollouts from the rollout
policy (π itself, or another checkpoint acting as prover μ), and its record keeps the raw counts
`n_correct` / `n_rollouts`. Q̂, confidence intervals, advantages and Best-of-K values are derived
from those counts when read (`pav.rollouts.views`), never stored as the only copy. The complete
solution's prefix carries its checked outcome as one "rollout" of zero length.

Strategies:
- `all`: all prefixes of i.i.d. seeds.
- `first_pit` (§4.3, after Luo et al. 2024): for an incorrect seed, binary-search the first prefix
  whose Q̂ is 0 (a pit: on the built-in task, after an invalid step no continuation succeeds) and
  label only the prefixes up to it; correct seeds keep all prefixes. The search runs in rounds
  that batch one probe per seed solution of the shard.

Resumable and idempotent: problems are cut into shards; each shard draws its randomness from
`derive_seed(seed, shard)` alone and is written with an atomic rename (solutions first, labels
last, labels marking the shard done), so a run killed at any moment and restarted with the same
command writes exactly the bytes an uninterrupted run writes, and a reader never sees a partial
shard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pav.core.io import write_jsonl, write_parquet
from pav.core.labelrun import shard_paths, stale_temps
from pav.core.records import Problem, Solution, StepLabel
from pav.core.seeding import derive_seed
from pav.core.progress import progress_bar
from pav.policies.base import Generation, Policy, context_tokens
from pav.tasks.base import Task, join_steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """How solutions and rollouts are sampled. No defaults: a stage's config holds them."""

    temperature: float
    top_p: float
    max_new_tokens: int  # token budget of one solution or rollout


@dataclass(frozen=True)
class LabelSettings(Sampling):
    """What a label shard needs (`pav.rollouts.stage.LabelConfig` holds the defaults)."""

    n_cov: int  # seed solutions per problem
    n_mc: int  # rollouts per prefix
    strategy: str  # "all" | "first_pit"


@dataclass(frozen=True)
class LabelSummary:
    """``summary.json`` of a `pav label` run (read with `pav.core.rundir.read_summary`): totals over the
    shards labelled by the call that finished the run, then numbers of every label on disk."""
    STAGES = ("label",)
    shards: int
    shards_written: int  # by the call that finished the run (fewer after a kill)
    prefixes: int
    rollouts: int
    tokens_generated: int
    tokens_prompt: int
    seconds: float  # of labelling in that call
    records: int  # step labels on disk
    policy_id: str
    prover_id: str
    mean_abs_adv: float | None  # mean |Â^π|; None without labels
    mean_q: float | None
    adv_by_step_kind: dict[str, Any]  # kind -> n, mean, se (the built-in task's checker; {} elsewhere)
    wall_seconds: float


@dataclass
class ShardStats:
    prefixes: int = 0
    rollouts: int = 0
    tokens_generated: int = 0
    tokens_prompt: int = 0


def context_of(task: Task, problem: Problem, steps: Sequence[str]) -> str:
    """The text a policy continues: prompt, then each kept step and its delimiter."""
    return task.prompt(problem) + join_steps(steps, task.step_delimiter)


def sample_seed_solutions(
    policy: Policy, task: Task, problems: Sequence[Problem], n: int, settings: Sampling, seed: int,
) -> tuple[list[Solution], ShardStats]:
    """n complete solutions per problem from `policy`, each split into steps and checked."""
    solutions, _, stats = sample_solutions(policy, task, problems, n, settings, seed)
    return solutions, stats


def sample_solutions(
    policy: Policy, task: Task, problems: Sequence[Problem], n: int, settings: Sampling, seed: int,
) -> tuple[list[Solution], list[Generation], ShardStats]:
    """`sample_seed_solutions` with each solution's `Generation` (its tokens, whether a budget cut it)."""
    batch = policy.sample([task.prompt(p) for p in problems], n, until="solution", max_steps=task.max_steps,
                          max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                          top_p=settings.top_p, seed=seed, is_final_step=task.is_final_step,
                          max_step_chars=task.max_step_chars)
    solutions, generations = [], []
    for p, gens in zip(problems, batch.generations):
        for j, g in enumerate(gens):
            steps = task.split_steps(g.text)[: task.max_steps]
            solutions.append(Solution(p.problem_id, f"{p.problem_id}/s{j}", tuple(steps), policy.policy_id,
                                      task.outcome(p, steps)))
            generations.append(g)
    return solutions, generations, ShardStats(tokens_generated=batch.generated_tokens, tokens_prompt=batch.prompt_tokens)


def rollout_counts(
    policy: Policy, task: Task, items: Sequence[tuple[Problem, Sequence[str]]], n_mc: int,
    settings: Sampling, seed: int,
) -> tuple[list[int], list[int], list[int], int]:
    """Successes of n_mc rollouts from each (problem, prefix steps): (n_correct, generated tokens,
    prompt tokens) per item and the call's total prompt tokens."""
    contexts = [context_of(task, p, steps) for p, steps in items]
    batch = policy.sample(contexts, n_mc, until="solution", max_steps=task.max_steps,
                          max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                          top_p=settings.top_p, seed=seed, is_final_step=task.is_final_step,
                          max_step_chars=task.max_step_chars)
    correct, generated = [], []
    for (p, steps), gens in zip(items, batch.generations):
        wins = 0
        for g in gens:
            full = (list(steps) + task.split_steps(g.text))[: task.max_steps]
            wins += int(task.outcome(p, full) == 1.0)
        correct.append(wins)
        generated.append(sum(g.n_tokens for g in gens))
    prompt = context_tokens(policy, contexts)
    return correct, generated, prompt, batch.prompt_tokens


def label_shard(
    policy: Policy, rollout_policy: Policy, task: Task, problems: Sequence[Problem],
    settings: LabelSettings, seed: int,
) -> tuple[list[Solution], list[StepLabel], ShardStats]:
    """Seed solutions and their step labels for one shard of problems."""
    solutions, stats = sample_seed_solutions(policy, task, problems, settings.n_cov, settings,
                                             derive_seed(seed, "seeds"))
    by_id = {p.problem_id: p for p in problems}
    wanted = _prefixes_to_label(rollout_policy, task, by_id, solutions, settings, seed, stats)
    labels = []
    for sol in solutions:
        for h in sorted(wanted[sol.solution_id]):
            k, gen, prompt = wanted[sol.solution_id][h]
            labels.append(StepLabel(sol.problem_id, sol.solution_id, h, k, settings.n_mc, policy.policy_id,
                                    rollout_policy.policy_id, gen, prompt))
        if max(wanted[sol.solution_id], default=-1) == len(sol.steps) - 1:  # not cut at an earlier pit
            labels.append(StepLabel(sol.problem_id, sol.solution_id, len(sol.steps), int(sol.outcome == 1.0), 1,
                                    policy.policy_id, rollout_policy.policy_id, 0, 0))
    stats.prefixes += len(labels)
    return solutions, labels, stats


def _prefixes_to_label(
    rollout_policy: Policy, task: Task, by_id: dict[str, Problem], solutions: list[Solution],
    settings: LabelSettings, seed: int, stats: ShardStats,
) -> dict[str, dict[int, tuple[int, int, int]]]:
    """{solution_id: {prefix_len: (n_correct, tokens generated, prompt tokens)}} for the strategy."""
    done: dict[str, dict[int, tuple[int, int, int]]] = {s.solution_id: {} for s in solutions}

    def run(requests: list[tuple[Solution, int]], tag: str) -> None:
        if not requests:
            return
        items = [(by_id[s.problem_id], s.steps[:h]) for s, h in requests]
        k, gen, prompt, total_prompt = rollout_counts(rollout_policy, task, items, settings.n_mc, settings,
                                                      derive_seed(seed, "mc", tag))
        for (s, h), kk, gg, pp in zip(requests, k, gen, prompt):
            done[s.solution_id][h] = (kk, gg, pp)
        stats.rollouts += settings.n_mc * len(requests)
        stats.tokens_generated += sum(gen)
        stats.tokens_prompt += total_prompt

    if settings.strategy == "all":
        run([(s, h) for s in solutions for h in range(len(s.steps))], "all")
        return done
    if settings.strategy != "first_pit":
        raise ValueError(f"unknown labelling strategy {settings.strategy!r}; choose all or first_pit")
    # binary search, per incorrect seed, for the first prefix_len whose Q̂ is 0 (lo has Q̂ > 0 or is 0)
    bounds = {s.solution_id: (0, len(s.steps)) for s in solutions if s.outcome != 1.0}
    for rnd in range(64):
        probes = [(s, (bounds[s.solution_id][0] + bounds[s.solution_id][1]) // 2) for s in solutions
                  if s.solution_id in bounds and bounds[s.solution_id][1] - bounds[s.solution_id][0] > 1]
        if not probes:
            break
        run([(s, h) for s, h in probes if h not in done[s.solution_id]], f"pit{rnd}")
        for s, h in probes:
            lo, hi = bounds[s.solution_id]
            bounds[s.solution_id] = (lo, h) if done[s.solution_id][h][0] == 0 else (h, hi)
    last = {s.solution_id: (bounds[s.solution_id][1] if s.solution_id in bounds else len(s.steps))
            for s in solutions}
    run([(s, h) for s in solutions for h in range(min(last[s.solution_id] + 1, len(s.steps)))
         if h not in done[s.solution_id]], "fill")
    for s in solutions:  # keep only prefixes up to the first pit
        done[s.solution_id] = {h: v for h, v in done[s.solution_id].items() if h <= last[s.solution_id]}
    return done


def write_shard(out: Path, shard: int, solutions: list[Solution], labels: list[StepLabel]) -> None:
    """Atomically write a shard; the labels file is written last and marks the shard done."""
    sol_path, lab_path = shard_paths(out, shard)
    sol_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(sol_path, solutions)
    write_parquet(lab_path, labels, StepLabel)


def remove_stale_temps(out: Path) -> None:
    """Delete temp files of shard writes cut short by a kill (their shards are redone)."""
    for stale in stale_temps(out):
        stale.unlink(missing_ok=True)


def label_problems(
    policy: Policy, rollout_policy: Policy, task: Task, problems: Sequence[Problem], out: Path,
    settings: LabelSettings, seed: int, shard_size: int, show_progress: bool = True,
) -> dict[str, float]:
    """Label every shard not yet on disk; returns totals over the shards written by this call."""

    shards = [problems[i:i + shard_size] for i in range(0, len(problems), shard_size)]
    remove_stale_temps(out)
    todo = [i for i in range(len(shards)) if not shard_paths(out, i)[1].exists()]
    if len(todo) < len(shards):
        log.info("label: %d of %d shards already done, resuming", len(shards) - len(todo), len(shards))
    total = ShardStats()
    start = time.perf_counter()
    bar = progress_bar(todo, desc="label shards", unit="shard", show=show_progress, log=log)
    for i in bar:
        solutions, labels, stats = label_shard(policy, rollout_policy, task, shards[i], settings,
                                               derive_seed(seed, "shard", i))
        write_shard(out, i, solutions, labels)
        for f in ("prefixes", "rollouts", "tokens_generated", "tokens_prompt"):
            setattr(total, f, getattr(total, f) + getattr(stats, f))
        bar.set_postfix(prefixes=total.prefixes, tokens=total.tokens_generated)
    return {"shards": len(shards), "shards_written": len(todo), "prefixes": total.prefixes,
            "rollouts": total.rollouts, "tokens_generated": total.tokens_generated,
            "tokens_prompt": total.tokens_prompt, "seconds": time.perf_counter() - start}


def best_of_k_counts(
    policy: Policy, task: Task, items: Sequence[tuple[Problem, Sequence[str]]], k: int, n: int,
    settings: Sampling, seed: int,
) -> list[int]:
    """Explicit Best-of-K(π) rollouts: n groups of k rollouts of π per item; a group succeeds if any
    of its rollouts does (the oracle outcome check as the re-ranker, the paper, App. D, Eq. 30). Its success
    rate estimates Q^{BoK} = 1 − (1 − Q^π)^K directly, to check the closed form."""
    contexts = [context_of(task, p, steps) for p, steps in items]
    batch = policy.sample(contexts, n * k, until="solution", max_steps=task.max_steps,
                          max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                          top_p=settings.top_p, seed=seed, is_final_step=task.is_final_step,
                          max_step_chars=task.max_step_chars)
    wins = []
    for (p, steps), gens in zip(items, batch.generations):
        ok = [task.outcome(p, (list(steps) + task.split_steps(g.text))[: task.max_steps]) == 1.0 for g in gens]
        wins.append(sum(any(ok[g * k:(g + 1) * k]) for g in range(n)))
    return wins
