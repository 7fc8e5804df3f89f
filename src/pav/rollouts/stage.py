"""`pav label` as a stage: resolve policies and problems, label shard by shard, summarise."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pav.core.config import knob
from pav.core.io import write_jsonl
from pav.core.labelrun import check_label_run, problems_path, read_problems, read_solutions, shard_paths
from pav.core.rundir import mark_complete, start_run
from pav.rollouts.expert import EXPERT, ExpertPolicy
from pav.rollouts.export import ExportSummary
from pav.rollouts.imports import ImportSummary
from pav.rollouts.label import LabelSettings, LabelSummary, label_problems
from pav.rollouts.views import label_arrays, read_labels
from pav.policies.load import load_policy, resolve_model_dir, weights_stamp
from pav.policies.options import LoadOptions
from pav.tasks.base import Task
from pav.tasks.build import (REJECTS_FILE, TASK_HELP, TaskConfig, build_task, check_source, check_task, is_builtin,
                              prompt_of,
                              with_absolute_options, with_prompt, with_tokenizer)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class LabelConfig:
    task: TaskConfig = knob(TaskConfig(), TASK_HELP)
    policy: str = knob("", "base policy π: a `pav sft` run directory, a model directory, or an HF model name")
    load: LoadOptions = knob(LoadOptions(), "how models are loaded: device, dtype, remote code")
    prover: str = knob("", "rollout policy: empty = π itself (Best-of-K prover values derive from these "
                           "counts); `expert`: the built-in task's noisy expert (pav.rollouts.expert); otherwise "
                           "another checkpoint (directory or name) acting as prover μ")
    problems: int = knob(200, "problems to label")
    split: Literal["train", "heldout"] = knob("train", "which split of the task's problems")
    n_cov: int = knob(4, "seed solutions sampled per problem (coverage)")
    n_mc: int = knob(16, "Monte-Carlo rollouts per prefix (label precision)")
    strategy: Literal["all", "first_pit"] = knob("all", "label all prefixes, or prefixes up to the first pit (§4.3)")
    shard_size: int = knob(25, "problems per shard (the unit of resumption)")
    temperature: float = knob(1.0, "sampling temperature of seeds and rollouts")
    top_p: float = knob(1.0, "nucleus sampling threshold")
    max_new_tokens: int = knob(200, "token budget of one seed solution or rollout")
    batch_size: int = knob(256, "rows per sampler batch (with 2+ threads or a GPU, 512-1024 label faster: "
                                "bench/label_bench.py; the labels depend on it)")
    seed: int = knob(0, "seed of problems, seed solutions and rollouts")
    threads: int = knob(1, "torch threads (in this process; workers use one each)")
    executor: Literal["local", "ray"] = knob("local", "where shards are labelled: local (this process, or `workers` "
                                             "processes) or ray (one task per shard; see pav.core.jobs)")
    workers: int = knob(0, "local: worker processes (0: this process); ray without ray_address: CPUs of the local "
                           "cluster started for the run (0: all of this machine's)")
    ray_address: str = knob("", "ray: address of a running cluster (auto, ray://HOST:10001); the run directory "
                                "and the policy must be readable at the same paths on every node")
    max_retries: int = knob(2, "ray: retries of a shard whose worker died")

    def __post_init__(self) -> None:
        if self.problems < 1 or self.n_cov < 1 or self.n_mc < 1 or self.shard_size < 1:
            raise ValueError("problems, n_cov, n_mc and shard_size must be >= 1")
        if self.workers < 0 or self.max_retries < 0:
            raise ValueError("workers and max_retries must be >= 0")
        if self.prover == EXPERT and not is_builtin(self.task):
            raise ValueError(f"prover=expert is the built-in task's noisy expert; task {self.task.source} has none")


def advantage_by_step_kind(task: Task, problems, run_dir: Path, labels, adv: np.ndarray) -> dict[str, Any]:
    """Mean Â (Eq. 2 on Q̂) and its standard error for each kind of step the checker names
    (tasks whose checker names kinds of steps, i.e. have ``analyse``; else {})."""
    if not hasattr(task, "analyse"):
        return {}
    by_key = {(lab.solution_id, lab.prefix_len): a for lab, a in zip(labels, adv)}
    by_id = {p.problem_id: p for p in problems}
    kinds: dict[str, list[float]] = {}
    for sol in read_solutions(run_dir):
        for h, info in enumerate(task.analyse(by_id[sol.problem_id], sol.steps).steps, start=1):
            a = by_key.get((sol.solution_id, h))
            if a is not None and np.isfinite(a):
                kinds.setdefault(info.label, []).append(float(a))
    return {k: {"n": len(v), "mean": float(np.mean(v)),
                "se": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None}
            for k, v in sorted(kinds.items())}


_LOADED: dict[tuple, tuple[Any, Any, Task]] = {}  # per process: (policy, rollout policy, task) of a config


def labelling_components(cfg: LabelConfig, rejects_dir: Path | None = None) -> tuple[Any, Any, Task]:
    """(policy π, rollout policy, task) of ``cfg``, loaded once per process (workers reuse them)."""
    key = (cfg.policy, cfg.prover, weights_stamp(cfg.policy), weights_stamp(cfg.prover) if cfg.prover != EXPERT else (), cfg.batch_size,
           repr(cfg.load), repr(cfg.task))  # a policy retrained in place is loaded again
    if key not in _LOADED:
        task = build_task(cfg.task, rejects_dir=rejects_dir, check=False)  # read once; rejects listed in rejects_dir
        policy = load_policy(cfg.policy, cfg.batch_size, task.step_delimiter, cfg.load)
        task = with_tokenizer(task, policy.tokenizer)  # chat templates
        check_task(task, cfg.task.source)
        _LOADED[key] = policy, _rollout_policy(cfg, task, policy), task
    elif rejects_dir is not None and hasattr(_LOADED[key][2], "rejects"):
        _LOADED[key][2].rejects.write(Path(rejects_dir) / REJECTS_FILE)
    return _LOADED[key]


def _rollout_policy(cfg: LabelConfig, task: Task, policy):
    """The prover μ whose rollouts label the prefixes: π itself, the task's expert, or a checkpoint."""
    if not cfg.prover:
        return policy
    if cfg.prover == EXPERT:
        return ExpertPolicy(task)
    return load_policy(cfg.prover, cfg.batch_size, task.step_delimiter, cfg.load)


def _settings(cfg: LabelConfig) -> LabelSettings:
    return LabelSettings(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                         n_cov=cfg.n_cov, n_mc=cfg.n_mc, strategy=cfg.strategy)


def job_label_shard(progress, *, cfg: LabelConfig, problems: list, shard: int, run_dir: str) -> dict[str, int]:
    """One shard as a job (`pav.core.jobs`): label it and write it under its own key by atomic
    rename, so a retried or repeated shard writes the same bytes to the same names."""
    from dataclasses import asdict

    from pav.core.seeding import derive_seed
    from pav.rollouts.label import label_shard, write_shard

    import torch

    torch.set_num_threads(1)
    policy, rollout_policy, task = labelling_components(cfg)
    solutions, labels, stats = label_shard(policy, rollout_policy, task, problems, _settings(cfg),
                                           derive_seed(cfg.seed, "shard", shard))
    write_shard(Path(run_dir), shard, solutions, labels)
    progress(1)
    return asdict(stats)


def _label_with_jobs(cfg: LabelConfig, problems: list, run_dir: Path, show_progress: bool) -> dict[str, float]:
    """Shards as jobs on worker processes or a Ray cluster; totals over the shards labelled now."""
    import time

    from pav.core.jobs import Executor, Job, run_jobs, with_absolute_paths
    from pav.rollouts.label import remove_stale_temps

    start = time.perf_counter()
    remove_stale_temps(run_dir)
    shards = [problems[i:i + cfg.shard_size] for i in range(0, len(problems), cfg.shard_size)]
    todo = [i for i in range(len(shards)) if not shard_paths(run_dir, i)[1].exists()]
    paths = ("policy",) + (("prover",) if cfg.prover != EXPERT else ())  # a name, not a path
    cfg = with_absolute_options(with_absolute_paths(cfg, *paths))  # for workers elsewhere
    jobs = [Job(f"shard-{i:05d}", job_label_shard, 1, {"cfg": cfg, "problems": shards[i], "shard": i,
                                                      "run_dir": str(run_dir.resolve())}) for i in todo]
    executor = Executor(cfg.executor, cfg.workers, cfg.ray_address, cfg.max_retries)
    results = run_jobs(jobs, run_dir / "jobs", executor, show_progress)
    keys = ("prefixes", "rollouts", "tokens_generated", "tokens_prompt")
    return {"shards": len(shards), "shards_written": len(todo),
            **{k: sum(results[j.name][k] for j in jobs) for k in keys}, "seconds": time.perf_counter() - start}


def run_label(cfg: LabelConfig, out: str | Path | None, overwrite: bool = False, show_progress: bool = True) -> LabelSummary:
    """Label into a run directory; a killed run continues from its finished shards."""
    import time

    import torch

    if not cfg.policy:
        raise ValueError("label needs a base policy: --set policy=runs/sft-.../ (a `pav sft` run) or a model")
    torch.set_num_threads(cfg.threads)
    check_source(cfg.task)  # a task plug-in that cannot be imported stops the run before any work
    resolve_model_dir(cfg.policy)  # so does a policy path that does not exist or a run without a policy
    run_dir = start_run(out, "label", cfg, overwrite)
    start = time.perf_counter()
    policy, rollout_policy, task = labelling_components(cfg, rejects_dir=run_dir)
    problems = [with_prompt(p, task) for p in task.problems(cfg.problems, cfg.seed, cfg.split)]
    write_jsonl(problems_path(run_dir), problems)  # later stages read problems and prompts from here
    if cfg.executor == "local" and cfg.workers == 0:
        totals = label_problems(policy, rollout_policy, task, problems, run_dir, _settings(cfg), cfg.seed,
                                cfg.shard_size, show_progress)
    else:
        totals = _label_with_jobs(cfg, problems, run_dir, show_progress)
    labels = read_labels(run_dir)
    arr = label_arrays(labels)
    adv = arr["adv"][np.isfinite(arr["adv"])]
    summary = LabelSummary(**totals, records=len(labels), policy_id=policy.policy_id, prover_id=rollout_policy.policy_id,
                           mean_abs_adv=float(np.abs(adv).mean()) if adv.size else None,
                           mean_q=float(arr["q"].mean()) if len(labels) else None,
                           adv_by_step_kind=advantage_by_step_kind(task, problems, run_dir, labels, arr["adv"]),
                           wall_seconds=time.perf_counter() - start)
    mark_complete(run_dir, summary)
    log.info("label: %d records, %d prefixes and %d rollouts this run, %d tokens generated, %.0f s, mean |Â| %s -> %s",
             len(labels), summary.prefixes, summary.rollouts, summary.tokens_generated, summary.wall_seconds,
             "n/a" if summary.mean_abs_adv is None else f"{summary.mean_abs_adv:.3f}", run_dir)
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
               show_progress: bool = True) -> ExportSummary:
    """A label run → ``stepwise.jsonl`` (one row per labelled solution, `pav.rollouts.export`)."""
    from pav.core.io import atomic_open
    from pav.rollouts.export import stepwise_rows

    if not cfg.labels:
        raise ValueError("export-labels needs --set labels=LABEL_RUN")
    src = check_label_run(cfg.labels)
    run_dir = start_run(out, "export", cfg, overwrite)
    prompts = {p.problem_id: prompt_of(p) for p in read_problems(src)}
    solutions = read_solutions(src)
    rows = list(stepwise_rows(read_labels(src), solutions, prompts, target=cfg.target, mode=cfg.mode,
                              threshold=cfg.threshold, k=cfg.k or None))
    with atomic_open(run_dir / "stepwise.jsonl") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    flat = [v for r in rows for v in r["labels"]]
    summary = ExportSummary(format=cfg.format, rows=len(rows), steps=len(flat), solutions=len(solutions),
                            mean_label=float(np.mean(flat)) if flat else None, file=str(run_dir / "stepwise.jsonl"))
    mark_complete(run_dir, summary)
    log.info("export-labels: %d solutions, %d steps -> %s", len(rows), len(flat), run_dir / "stepwise.jsonl")
    return summary


@dataclass(frozen=True)
class ImportConfig:
    source: str = knob("", "labels to import: a .jsonl/.json/.parquet file or a `datasets` split NAME[:CONFIG]@SPLIT")
    format: Literal["trl-stepwise", "prm800k", "processbench"] = knob("trl-stepwise", "the source's format "
                                                                     "(pav.rollouts.imports)")
    soft_rollouts: int = knob(100, "a soft label p becomes round(p·n) correct of n rollouts")
    plain_template: str = knob("Question: {question}\nAnswer:\n", "prompt of PRM800K/ProcessBench problems")

    def __post_init__(self) -> None:
        if self.soft_rollouts < 1 or "{question}" not in self.plain_template:
            raise ValueError("soft_rollouts must be >= 1 and plain_template must contain {question}")


def run_import(cfg: ImportConfig, out: str | Path | None, overwrite: bool = False,
               show_progress: bool = True) -> ImportSummary:
    """Another project's step labels → a label run directory that `pav train-verifier` reads."""
    from pav.rollouts.imports import import_records
    from pav.rollouts.label import write_shard
    from pav.tasks.math_data import read_records

    if not cfg.source:
        raise ValueError("import-labels needs --set source=FILE (and --set format=...)")
    records = read_records(cfg.source)
    run_dir = start_run(out, "import", cfg, overwrite)
    render = lambda question: cfg.plain_template.replace("{question}", question)  # noqa: E731
    rows = list(import_records(records, cfg.format, cfg.source, render, cfg.soft_rollouts))
    write_jsonl(problems_path(run_dir), [p for p, _, _ in rows])
    write_shard(run_dir, 0, [s for _, s, _ in rows], [lab for _, _, labs in rows for lab in labs])
    labels = read_labels(run_dir)
    q = label_arrays(labels)["q"] if labels else np.array([])
    summary = ImportSummary(format=cfg.format, source=cfg.source, records=len(records), solutions=len(rows),
                            step_labels=len(labels), skipped_records=len(records) - len(rows),
                            mean_q=float(q.mean()) if q.size else None)
    mark_complete(run_dir, summary)
    log.info("import-labels: %d %s records -> %d solutions, %d step labels (mean Q̂ %s) -> %s", len(records),
             cfg.format, len(rows), len(labels), "n/a" if summary.mean_q is None else f"{summary.mean_q:.3f}",
             run_dir)
    return summary
