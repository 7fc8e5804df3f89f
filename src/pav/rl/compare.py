"""`pav rl-compare`: ORM-RL against PAV-RL from the same start policy, same sample budget, several seeds.

With ``rl.rft_labels`` (and ``rl.rft_steps > 0``) one job rejection-fine-tunes the start policy once
(``rft/``; the summary's ``rft`` says whether it did); then one job per (reward, seed)
runs `pav rl` from it into ``arms/<reward>_s<seed>/`` (a seed fixes the training problems, the
sampling and the held-out set, so arms with one seed see the same problems). Jobs are cached: a
killed comparison continues. The summary gives, per reward, held-out accuracy against samples
(mean and spread over seeds), Pass@N at the end (and the start policy's, evaluated the same way:
``start_s<seed>`` jobs), and against the first reward (ORM-RL):

- **sample-efficiency ratio**: ORM-RL's samples ÷ the samples the other reward's mean curve needs
  to reach ORM-RL's final mean accuracy (linear interpolation between evaluations; the paper's
  "5–6×"); None when it never does;
- **final accuracy gain**: the difference of final mean held-out accuracies (Pass@1 from
  ``final_samples`` samples per problem).

α defaults to 0.3: on the built-in task, with α = 1 PAV-RL collapsed in 2 of 3 seeds (with either
baseline) to malformed or premature answer lines that the small PAV over-values; at α = 0.3 no
seed collapsed. With the answer step graded (`pav.rl.rewards`), α = 3 still sent 2 of 3 seeds down
(final 0.11 and 0.24 against ORM-RL's 0.36–0.40), onto wrong arithmetic that lands on the target.
With the task's exact expert values in place of the PAV (``rl.verifier=expert``) no seed collapsed
at α = 1, 3 or 6: the learned verifier's errors, not the dense reward, are what keeps α small here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pav.core.config import knob
from pav.core.jobs import Job, run_jobs
from pav.core.metrics import read_metrics
from pav.core.rundir import mark_complete, start_run, summary_fields
from pav.rl.report import RLCompareSummary
from pav.rl.stage import PASS_AT, RLConfig, check_verifiers, runs_rft
from pav.tasks.build import check_source

log = logging.getLogger(__name__)

PAPER = {"sample_efficiency": "5–6× (Gemma 2B/9B)", "gain": "+6 to +7 points"}
GOALS = {"sample_efficiency": 6.0, "gain": 0.06}


@dataclass(frozen=True)
class RLCompareConfig:
    SET_BY_STAGE = ("rl.reward", "rl.seed")  # each arm's, from `rewards` and `seeds`
    rl: RLConfig = knob(RLConfig(), "settings shared by every arm (reward and seed are set per arm)")
    rewards: tuple[str, ...] = knob(("orm", "pav"), "rewards to compare; the first is the reference (ORM-RL)")
    seeds: tuple[int, ...] = knob((0, 1, 2), "seeds; each reward runs once per seed")
    workers: int = knob(2, "worker processes (one torch thread each); 0: run in this process")
    start_pass_at: bool = knob(True, "also evaluate the start policy like the arms' final ones, per seed (Pass@N up "
                                     "to rl.final_samples; the paper's Fig. 8a draws the SFT policy's beside them)")

    def __post_init__(self) -> None:
        if len(self.rewards) < 2 or not self.seeds:
            raise ValueError("compare needs at least two rewards and one seed")


def job_rft(progress, cfg: RLCompareConfig, run_dir: str) -> dict[str, Any]:
    import torch

    from pav.rl.stage import rft

    torch.set_num_threads(1)
    out = Path(run_dir) / "rft"
    if not (out / "config.json").is_file():
        rft(cfg.rl, out)
    progress(1)
    return {"policy": str(out)}


def job_arm(progress, cfg: RLCompareConfig, run_dir: str, reward: str, seed: int, start: str) -> dict[str, Any]:
    from pav.rl.stage import run_rl

    arm = dataclasses.replace(cfg.rl, reward=reward, seed=seed, policy=start, rft_labels="")
    out = Path(run_dir) / "arms" / f"{reward}_s{seed}"
    summary = summary_fields(run_rl(arm, out, show_progress=False, progress=progress))  # the job's result: JSON
    rows = read_metrics(out / "metrics.jsonl")
    summary["curve"] = [{"samples": r["rl/samples"], "accuracy": r["rl/heldout_accuracy"]}
                        for r in rows if "rl/heldout_accuracy" in r]
    summary["curve"].insert(0, {"samples": 0, "accuracy": summary["start_heldout_accuracy"]})
    return summary


def job_start(progress, cfg: RLCompareConfig, run_dir: str, seed: int, start: str) -> dict[str, Any]:
    from pav.rl.stage import evaluate_start

    final = evaluate_start(dataclasses.replace(cfg.rl, seed=seed), start)
    progress(1)
    return {"seed": seed, "final": final}


def samples_to_reach(samples: list[float], accuracy: list[float], target: float) -> float | None:
    """First number of samples at which the curve reaches ``target`` (linear between points)."""
    for i, (s, a) in enumerate(zip(samples, accuracy)):
        if a >= target:
            if i == 0:
                return float(s)
            s0, a0 = samples[i - 1], accuracy[i - 1]
            return float(s0 + (target - a0) / (a - a0) * (s - s0))
    return None


def coverage(ref_arms: list[dict[str, Any]], arms: list[dict[str, Any]], seeds: Sequence[int],
             examples: int = 6) -> dict[str, Any] | None:
    """Which held-out problems one reward's final policies solve at N = final_samples and the
    reference's do not, and the reverse, summed over seeds (arms of one seed share their problems).
    ``examples``: the lost problems the reference solved most often, each with both policies' most
    frequent solution. None when the arms carry no per-problem rows."""
    if not all("problems" in a["final"] for a in (*ref_arms, *arms)):
        return None
    lost, gained, total = [], 0, 0
    for seed, ra, a in zip(seeds, ref_arms, arms):
        for x, y in zip(ra["final"]["problems"], a["final"]["problems"]):
            if x["problem_id"] != y["problem_id"]:
                raise ValueError(f"seed {seed}: the arms were evaluated on different problems")
            total += 1
            gained += x["correct"] == 0 and y["correct"] > 0
            if x["correct"] > 0 and y["correct"] == 0:
                lost.append({"seed": seed, "question": x["question"], "reference_correct": x["correct"],
                             "samples": x["samples"], "reference_top": x["top"], "top": y["top"],
                             "top_share": y["top_share"]})
    lost.sort(key=lambda e: -e["reference_correct"])
    n = max((x["samples"] for a in ref_arms for x in a["final"]["problems"]), default=0)
    return {"problems": total, "n": n, "lost": len(lost), "gained": int(gained), "examples": lost[:examples]}


def run_rl_compare(cfg: RLCompareConfig, out: str | Path | None, overwrite: bool = False,
                   show_progress: bool = True) -> RLCompareSummary:
    from pav.rl.report import ratio_text, write_report

    if not cfg.rl.policy:
        raise ValueError("rl-compare needs --set rl.policy=SFT_RUN (and rl.verifier=PQV_RUN, rl.rft_labels=LABEL_RUN)")
    for r in cfg.rewards:  # a missing verifier fails now, not in every arm
        check_verifiers(dataclasses.replace(cfg.rl, reward=r))
    check_source(cfg.rl.task)  # a task plug-in that cannot be imported stops the run before any work
    run_dir = start_run(out, "rl-compare", cfg, overwrite)
    common = {"cfg": cfg, "run_dir": str(run_dir)}
    if runs_rft(cfg.rl):
        start = str(run_dir / "rft")
        jobs, after = [Job("rft", job_rft, 1, common)], ("rft",)
    else:
        from pav.policies.load import resolve_model_dir

        start, jobs, after = resolve_model_dir(cfg.rl.policy), [], ()
    jobs += [Job(f"{r}_s{s}", job_arm, cfg.rl.iterations, {**common, "reward": r, "seed": s, "start": start}, after)
             for s in cfg.seeds for r in cfg.rewards]
    if cfg.start_pass_at:
        jobs += [Job(f"start_s{s}", job_start, 1, {**common, "seed": s, "start": start}, after) for s in cfg.seeds]
    results = run_jobs(jobs, run_dir / "jobs", cfg.workers, show_progress)
    summary = summarize(cfg, results)
    write_report(summary, run_dir)
    record = RLCompareSummary(**summary)
    mark_complete(run_dir, record)
    for row in summary["comparisons"]:
        log.info("rl-compare: %s vs %s: sample efficiency %s, final accuracy gain %+.1f points -> %s", row["reward"],
                 summary["reference"], ratio_text(row, digits=1), 100 * row["gain"], run_dir)
    return record


def _top_share(runs: list[dict[str, Any]]) -> float:
    """Mean over the runs' held-out problems of the most frequent solution's share of its samples."""
    return float(np.mean([row["top_share"] for a in runs for row in a["final"]["problems"]]))


def summarize(cfg: RLCompareConfig, results: dict[str, dict]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for r in cfg.rewards:
        arms = [results[f"{r}_s{s}"] for s in cfg.seeds]
        samples = [p["samples"] for p in arms[0]["curve"]]
        acc = np.array([[p["accuracy"] for p in a["curve"]] for a in arms])  # (seeds, evals)
        final = np.array([a["final"]["pass@1"] for a in arms])
        pass_at = {f"pass@{n}": [a["final"][f"pass@{n}"] for a in arms] for n in PASS_AT if f"pass@{n}" in arms[0]["final"]}
        per[r] = {"samples": samples, "mean": acc.mean(0).tolist(), "min": acc.min(0).tolist(), "max": acc.max(0).tolist(),
                  "final": final.tolist(), "final_mean": float(final.mean()),
                  "final_sd": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
                  "pass_at": {k: float(np.mean(v)) for k, v in pass_at.items()},
                  "start_accuracy": float(np.mean([a["start_heldout_accuracy"] for a in arms])),
                  "kl_final": float(np.mean([a["last"]["rl/kl"] for a in arms])),
                  "entropy_final": float(np.mean([a["last"]["rl/entropy"] for a in arms])),
                  "steps_per_solution_final": float(np.mean([a["last"]["rl/steps_per_solution"] for a in arms]))}
        if all("problems" in a["final"] for a in arms):  # runs cached before per-problem rows have none
            per[r]["top_share"] = _top_share(arms)
    ref_name = cfg.rewards[0]
    ref = per[ref_name]
    start = None
    if all(f"start_s{s}" in results for s in cfg.seeds):  # absent with start_pass_at off, or in older runs
        starts = [results[f"start_s{s}"] for s in cfg.seeds]
        start = {"pass_at": {k: float(np.mean([a["final"][k] for a in starts])) for k in ref["pass_at"]},
                 "top_share": _top_share(starts)}
        for r in cfg.rewards:  # what RL did to coverage: the paper's "ORM-RL falls below SFT for N >= 64"
            per[r]["pass_at_vs_start"] = {k: per[r]["pass_at"][k] - start["pass_at"][k] for k in ref["pass_at"]}
            per[r]["coverage_vs_start"] = coverage(starts, [results[f"{r}_s{s}"] for s in cfg.seeds], cfg.seeds)
    comparisons = []
    for r in cfg.rewards[1:]:
        # reaching the reference's final accuracy means nothing when it is 0: the ratio is not measurable
        need = samples_to_reach(per[r]["samples"], per[r]["mean"], ref["mean"][-1]) if ref["mean"][-1] > 0 else None
        gains = [a - b for a, b in zip(per[r]["final"], ref["final"])]
        comparisons.append({
            "reward": r, "sample_efficiency": None if not need else float(ref["samples"][-1] / need),
            "measurable": bool(ref["mean"][-1] > 0),
            "samples_to_match": need, "gain": float(np.mean(gains)),
            "gain_sd": float(np.std(gains, ddof=1)) if len(gains) > 1 else 0.0,
            "pass_at_gain": {k: per[r]["pass_at"][k] - ref["pass_at"][k] for k in ref["pass_at"]},
            "coverage": coverage([results[f"{ref_name}_s{s}"] for s in cfg.seeds],
                                 [results[f"{r}_s{s}"] for s in cfg.seeds], cfg.seeds)})
    checks = []
    for c in comparisons:
        checks += [
            {"name": f"{c['reward']}-RL sample efficiency vs {ref_name}-RL", "value": c["sample_efficiency"],
             "target": f">= {GOALS['sample_efficiency']:g}x", "passed": c["sample_efficiency"] is not None
             and c["sample_efficiency"] >= GOALS["sample_efficiency"]},
            {"name": f"{c['reward']}-RL final accuracy gain", "value": c["gain"],
             "target": f">= +{100 * GOALS['gain']:.0f} points", "passed": c["gain"] >= GOALS["gain"]},
            {"name": f"{c['reward']}-RL Pass@N above {ref_name}-RL for every N <= 64 (share)",
             "value": float(np.mean([g > 0 for g in c["pass_at_gain"].values()])), "target": "1.0",
             "passed": all(g > 0 for g in c["pass_at_gain"].values())}]
    return {"reference": ref_name, "seeds": list(cfg.seeds), "alpha": cfg.rl.alpha, "k": cfg.rl.k,
            "verifier": cfg.rl.verifier, "prover": cfg.rl.prover, "baseline": cfg.rl.baseline, "rft": runs_rft(cfg.rl),
            "iterations": cfg.rl.iterations,
            "samples_per_iteration": cfg.rl.problems_per_iter * cfg.rl.samples_per_problem,
            "rewards": per, "start": start, "comparisons": comparisons, "checks": checks, "paper": PAPER}
