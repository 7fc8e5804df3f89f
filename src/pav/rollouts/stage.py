"""`pav label` as a stage: resolve policies and problems, label shard by shard, summarise."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pav.core.config import knob
from pav.core.io import write_json, write_jsonl
from pav.core.rundir import mark_complete, start_run
from pav.rollouts.label import LabelSettings, label_problems
from pav.rollouts.views import label_arrays, read_labels
from pav.tasks.modreach import ModReach, ModReachConfig

log = logging.getLogger(__name__)

PROBLEMS_FILE = "problems.jsonl"


@dataclass(frozen=True)
class LabelConfig:
    task: ModReachConfig = knob(ModReachConfig(), "the built-in ModReach task")
    policy: str = knob("", "base policy π: a `pav sft` run directory, a model directory, or an HF model name")
    prover: str = knob("", "rollout policy: empty = π itself (Best-of-K prover values derive from these "
                           "counts); otherwise another checkpoint (directory or name) acting as prover μ")
    problems: int = knob(200, "problems to label")
    split: Literal["train", "heldout"] = knob("train", "which split of the task's problems")
    n_cov: int = knob(4, "seed solutions sampled per problem (coverage)")
    n_mc: int = knob(16, "Monte-Carlo rollouts per prefix (label precision)")
    strategy: Literal["all", "first_pit"] = knob("all", "label all prefixes, or prefixes up to the first pit (§4.3)")
    shard_size: int = knob(25, "problems per shard (the unit of resumption)")
    temperature: float = knob(1.0, "sampling temperature of seeds and rollouts")
    top_p: float = knob(1.0, "nucleus sampling threshold")
    batch_size: int = knob(256, "rows per sampler batch")
    seed: int = knob(0, "seed of problems, seed solutions and rollouts")
    threads: int = knob(1, "torch threads")

    def __post_init__(self) -> None:
        if self.problems < 1 or self.n_cov < 1 or self.n_mc < 1 or self.shard_size < 1:
            raise ValueError("problems, n_cov, n_mc and shard_size must be >= 1")


def resolve_model_dir(name: str) -> str:
    """A `pav sft` run directory stands for its `policy/` folder; anything else is passed through."""
    path = Path(name)
    return str(path / "policy") if (path / "policy").is_dir() else name


def policy_id(name: str) -> str:
    """A stable id: the folder name and a hash of its weights, or the hub name."""
    path = Path(resolve_model_dir(name))
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not weights:
        return name
    h = hashlib.sha256()
    for w in weights:
        h.update(w.read_bytes())
    label = path.parent.name if path.name == "policy" else path.name
    return f"{label}@{h.hexdigest()[:12]}"


def load_policy(name: str, batch_size: int):
    from pav.policies.hf import HFPolicy, load_causal_lm

    model, tokenizer = load_causal_lm(resolve_model_dir(name))
    return HFPolicy(model, tokenizer, policy_id=policy_id(name), batch_size=batch_size)


def advantage_by_step_kind(task: ModReach, problems, run_dir: Path, labels, adv: np.ndarray) -> dict[str, Any]:
    """Mean Â (Eq. 2 on Q̂) and its standard error for each kind of step the checker names."""
    from pav.core.io import read_jsonl
    from pav.core.records import Solution

    by_key = {(lab.solution_id, lab.prefix_len): a for lab, a in zip(labels, adv)}
    by_id = {p.problem_id: p for p in problems}
    kinds: dict[str, list[float]] = {}
    for path in sorted((run_dir / "solutions").glob("shard-*.jsonl")):
        for sol in read_jsonl(path, Solution):
            for h, info in enumerate(task.analyse(by_id[sol.problem_id], sol.steps).steps, start=1):
                a = by_key.get((sol.solution_id, h))
                if a is not None and np.isfinite(a):
                    kinds.setdefault(info.label, []).append(float(a))
    return {k: {"n": len(v), "mean": float(np.mean(v)),
                "se": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None}
            for k, v in sorted(kinds.items())}


def run_label(cfg: LabelConfig, out: str | Path | None, overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Label into a run directory; a killed run continues from its finished shards."""
    import time

    import torch

    if not cfg.policy:
        raise ValueError("label needs a base policy: --set policy=runs/sft-.../ (a `pav sft` run) or a model")
    torch.set_num_threads(cfg.threads)
    run_dir = start_run(out, "label", cfg, overwrite)
    start = time.perf_counter()
    task = ModReach(cfg.task)
    policy = load_policy(cfg.policy, cfg.batch_size)
    rollout_policy = load_policy(cfg.prover, cfg.batch_size) if cfg.prover else policy
    problems = task.problems(cfg.problems, cfg.seed, cfg.split)
    write_jsonl(run_dir / PROBLEMS_FILE, problems)  # later stages read the problems from here
    settings = LabelSettings(cfg.n_cov, cfg.n_mc, cfg.strategy, cfg.temperature, cfg.top_p)
    totals = label_problems(policy, rollout_policy, task, problems, run_dir, settings, cfg.seed, cfg.shard_size,
                            show_progress)
    labels = read_labels(run_dir)
    arr = label_arrays(labels)
    adv = arr["adv"][np.isfinite(arr["adv"])]
    summary = {**totals, "records": len(labels), "policy_id": policy.policy_id, "prover_id": rollout_policy.policy_id,
               "mean_abs_adv": float(np.abs(adv).mean()) if adv.size else None,
               "mean_q": float(arr["q"].mean()) if len(labels) else None,
               "adv_by_step_kind": advantage_by_step_kind(task, problems, run_dir, labels, arr["adv"]),
               "wall_seconds": time.perf_counter() - start}
    write_json(run_dir / "summary.json", summary)
    mark_complete(run_dir)
    log.info("label: %d records, %d prefixes and %d rollouts this run, %d tokens generated, %.0f s, mean |Â| %s -> %s",
             len(labels), totals["prefixes"], totals["rollouts"], totals["tokens_generated"], summary["wall_seconds"],
             "n/a" if summary["mean_abs_adv"] is None else f"{summary['mean_abs_adv']:.3f}", run_dir)
    return summary


@dataclass(frozen=True)
class ExportConfig:
    labels: str = knob("", "a `pav label` run directory")
    format: Literal["trl-stepwise"] = knob("trl-stepwise", "TRL stepwise supervision: prompt, completions, labels")
    target: Literal["q", "adv"] = knob("q", "per step: q = Q̂ of the prefix it ends; adv = its advantage (Eq. 2)")
    mode: Literal["hard", "soft"] = knob("hard", "hard: value > threshold as a bool (TRL); soft: the value")
    threshold: float = knob(0.5, "threshold of hard labels (use 0 with target=adv: 'did the step make progress')")
    k: int = knob(0, "values under a Best-of-K prover of the labelling policy (0: the policy's own)")


def run_export(cfg: ExportConfig, out: str | Path | None, overwrite: bool = False,
               show_progress: bool = True) -> dict[str, Any]:
    """A label run → ``stepwise.jsonl`` (one row per labelled solution, `pav.rollouts.export`)."""
    from pav.core.io import atomic_open, read_jsonl
    from pav.core.records import Problem, Solution
    from pav.rollouts.export import stepwise_rows

    if not cfg.labels:
        raise ValueError("export-labels needs --set labels=LABEL_RUN")
    src = Path(cfg.labels)
    if not (src / PROBLEMS_FILE).is_file():
        raise FileNotFoundError(f"{src} is not a label run (no {PROBLEMS_FILE})")
    run_dir = start_run(out, "export", cfg, overwrite)
    task = ModReach()
    prompts = {p.problem_id: task.prompt(p) for p in read_jsonl(src / PROBLEMS_FILE, Problem)}
    solutions = [s for path in sorted((src / "solutions").glob("shard-*.jsonl")) for s in read_jsonl(path, Solution)]
    rows = list(stepwise_rows(read_labels(src), solutions, prompts, target=cfg.target, mode=cfg.mode,
                              threshold=cfg.threshold, k=cfg.k or None))
    with atomic_open(run_dir / "stepwise.jsonl") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    flat = [v for r in rows for v in r["labels"]]
    summary = {"format": cfg.format, "rows": len(rows), "steps": len(flat), "solutions": len(solutions),
               "mean_label": float(np.mean(flat)) if flat else None,  # hard labels: the share of True
               "file": str(run_dir / "stepwise.jsonl")}
    write_json(run_dir / "summary.json", summary)
    mark_complete(run_dir)
    log.info("export-labels: %d solutions, %d steps -> %s", len(rows), len(flat), run_dir / "stepwise.jsonl")
    return summary
