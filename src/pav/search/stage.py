"""`pav search`: best-of-N against step-level beam search on held-out problems (the paper, §4).

Problems: distinct held-out problems of the task (built-in, or `math.*`), the first ``val_problems`` for the α
sweep (validation) and the next ``problems`` for every reported curve (test); the verifiers were
trained on train-split labels. Every method searches the same test problems with the same base
policy. Work is split into jobs (`pav.core.jobs`): each runs in its own single-threaded process,
and its result is cached in the run directory as it ends, so a killed run continues where it stopped.

1. ``best_of_n``: ``max(ns)`` solutions per test problem, scored once by the PQV and the ORM; every
   best-of-N method and Pass@N is read off them (`pav.search.best_of_n`).
2. ``pqv_beam_N*``: beam search with α = 0 (Q̂^π only) at each N in ``ns``.
3. ``alpha_*``: beam search of width ``alpha_width`` on the validation problems for each α of
   ``alpha_grid`` (the paper: width 16, α ∈ {0, 0.1, …, 1}); the most accurate α is used below
   (ties: the smaller α), unless ``alpha`` is set.
4. ``pav_beam_N*``: beam search with Q̂^π + α·Â^μ, μ = Best-of-``k``(π), at each N; with ``prover`` set,
   Â^μ comes from Best-of-``k`` of another prover's verifier or of the task's exact expert instead.
5. ``prover_K*_N*``: the same with Best-of-K provers, K in ``prover_ks``, at N in ``prover_ns``.

Outputs: ``results/<job>.jsonl`` (per problem: the chosen solution, its outcome, its compute),
``jobs/<job>.json`` (each job's summary), ``summary.json`` (curves, the compute-efficiency ratio,
accuracy gains at equal compute, the α and prover sweeps), ``search_curves.png``,
``search_sweeps.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.io import atomic_open
from pav.core.jobs import Executor, Job, run_jobs, with_absolute_paths
from pav.core.records import Problem
from pav.core.rundir import mark_complete, start_run
from pav.policies.options import LoadOptions
from pav.rollouts.expert import EXPERT
from pav.search.report import SearchSummary
from pav.tasks.build import (TASK_HELP, TaskConfig, build_task, check_source, check_task, is_builtin,
                             with_absolute_options, with_tokenizer)

log = logging.getLogger(__name__)

BEST_OF_N = ("orm", "pav_as_orm", "majority", "weighted_majority")


@dataclass(frozen=True)
class SearchConfig:
    task: TaskConfig = knob(TaskConfig(), TASK_HELP)
    policy: str = knob("", "base policy π: a `pav sft` run, a model directory or an HF name")
    load: LoadOptions = knob(LoadOptions(), "how models are loaded: device, dtype, remote code")
    verifier: str = knob("", "the PQV (Q̂^π): a `pav train-verifier` run (view=pqv) or its verifier/ folder")
    orm: str = knob("", "the outcome verifier for best-of-N: a `pav train-verifier --set view=orm` run")
    problems: int = knob(200, "held-out test problems (every curve is measured on these)")
    val_problems: int = knob(100, "held-out validation problems for the α sweep (disjoint from the test ones)")
    ns: tuple[int, ...] = knob((2, 4, 8, 16, 32, 64, 128), "N: best-of-N sizes and beam widths")
    k: int = knob(4, "prover μ = Best-of-K of π, or of `prover` when set, in PAV beam search (paper: Bo4 of π)")
    prover: str = knob("", "where A^μ comes from (Q̂^π is always the PQV's): empty: Best-of-K of the PQV, μ = BoK(π); "
                           "a `pav train-verifier` run on another prover's labels (`pav label --set prover=...`): "
                           "Best-of-K of its values; `expert`: Best-of-K of the built-in task's noisy expert, exact "
                           "values (oracle ablation, `pav.verifier.exact`)")
    alpha: float | None = knob(None, "α of PAV beam search; none: the best α of the sweep")
    alpha_grid: tuple[float, ...] = knob(tuple(round(0.1 * i, 1) for i in range(11)), "α values of the sweep")
    alpha_width: int = knob(16, "beam width of the α sweep (paper: 16)")
    prover_ks: tuple[int, ...] = knob((1, 2, 4, 8, 16, 32), "Best-of-K provers of the prover sweep (empty: skip)")
    prover_ns: tuple[int, ...] = knob((4, 16, 64), "beam widths of the prover sweep")
    candidates: int = knob(3, "C: next steps sampled per beam prefix (paper: 3)")
    dedup: bool = knob(True, "merge identical candidates of a problem at a depth (see pav.search.beam)")
    step_tokens: int = knob(32, "token budget of one step in beam search")
    max_new_tokens: int = knob(200, "token budget of one best-of-N solution")
    temperature: float = knob(1.0, "sampling temperature of every method")
    top_p: float = knob(1.0, "nucleus sampling threshold of every method")
    batch_size: int = knob(256, "sampler rows per batch")
    score_batch: int = knob(64, "solutions per verifier forward pass")
    seed: int = knob(0, "seed of problems and sampling")
    workers: int = knob(2, "worker processes (one torch thread each); 0: run in this process; with executor=ray "
                           "and no ray_address: CPUs of the local cluster")
    executor: Literal["local", "ray"] = knob("local", "where jobs run: local processes or a Ray cluster")
    max_retries: int = knob(2, "ray: retries of a job whose worker died")
    ray_address: str = knob("", "ray: a running cluster (auto, ray://HOST:10001); empty: start a local one. Paths "
                                "must be readable at the same place on every node")

    def __post_init__(self) -> None:
        if self.problems < 1 or self.val_problems < 0 or not self.ns or min(self.ns) < 1:
            raise ValueError("problems and every N must be >= 1 and val_problems >= 0")
        if self.alpha is None and (not self.alpha_grid or self.val_problems < 1):
            raise ValueError("choosing α needs alpha_grid and val_problems >= 1 (or set alpha)")
        if self.k < 1 or min(self.prover_ks, default=1) < 1:
            raise ValueError("prover sizes K must be >= 1")
        if self.prover == EXPERT and not is_builtin(self.task):
            raise ValueError(f"prover=expert is the built-in task's exact expert; task {self.task.source} has none")


def split_problems(cfg: SearchConfig, rejects_dir: Path | None = None) -> tuple[list[Problem], list[Problem]]:
    """(validation, test): distinct held-out problems, validation first."""
    task, want = build_task(cfg.task, rejects_dir=rejects_dir, check=False), cfg.val_problems + cfg.problems
    seen: dict[str, Problem] = {}
    for p in task.problems(20 * want, cfg.seed, "heldout"):
        seen.setdefault(p.question, p)
        if len(seen) == want:
            break
    distinct = list(seen.values())
    if len(distinct) < want:
        raise ValueError(f"only {len(distinct)} distinct held-out problems found; ask for fewer than {want}")
    return distinct[: cfg.val_problems], distinct[cfg.val_problems:]


def _components(cfg: SearchConfig, k: int, with_orm: bool, with_prover: bool):
    """(task, policy, scorer) of a job: the task renders prompts with the policy's tokenizer; the
    prover's scorer is read only where A^μ is used (``with_prover``), so it costs only there."""
    import torch

    from pav.policies.load import load_policy
    from pav.verifier.scorer import MixedScorer
    from pav.verifier.load import load_scorer

    torch.set_num_threads(1)
    task = build_task(cfg.task, check=False)
    policy = load_policy(cfg.policy, cfg.batch_size, task.step_delimiter, cfg.load)
    task = with_tokenizer(task, policy.tokenizer)
    check_task(task, cfg.task.source)
    scorer = load_scorer(cfg.verifier, k=k, orm=cfg.orm if with_orm else "", load=cfg.load, batch_size=cfg.score_batch)
    if cfg.prover == EXPERT and with_prover:
        from pav.verifier.exact import ExpertScorer

        scorer = MixedScorer(scorer, ExpertScorer(task, k))
    elif cfg.prover and with_prover:
        scorer = MixedScorer(scorer, load_scorer(cfg.prover, k=k, load=cfg.load, batch_size=cfg.score_batch))
    return task, policy, scorer


def job_best_of_n(progress, cfg: SearchConfig, run_dir: str) -> dict[str, Any]:
    from pav.core.seeding import derive_seed
    from pav.search.best_of_n import best_of_n, pass_at, sample_and_score

    _, test = split_problems(cfg)
    task, policy, scorer = _components(cfg, cfg.k, with_orm=bool(cfg.orm), with_prover=False)
    sets = sample_and_score(policy, scorer, task, test, max(cfg.ns), derive_seed(cfg.seed, "best_of_n"),
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    with atomic_open(Path(run_dir) / "results" / "best_of_n.jsonl") as f:
        for s in sets:
            f.write(json.dumps({"problem_id": s.problem_id, "steps": s.steps, "answers": s.answers,
                                "outcome": s.outcome.tolist(), "orm": s.orm.tolist(), "pqv": s.pqv.tolist(),
                                "generated": s.generated.tolist(), "scored": s.scored.tolist(),
                                "encoded": s.encoded}) + "\n")
    methods = [m for m in BEST_OF_N if cfg.orm or m not in ("orm", "weighted_majority")]
    progress(1)
    return {"curves": {m: [best_of_n(sets, n, m) for n in cfg.ns] for m in methods},
            "pass_at": [{"n": n, "accuracy": pass_at(sets, n)} for n in cfg.ns]}


def job_beam(progress, cfg: SearchConfig, run_dir: str, name: str, split: str, width: int, alpha: float,
             k: int) -> dict[str, Any]:
    import numpy as np

    from pav.search.beam import BeamSettings, beam_search
    from pav.search.best_of_n import accuracy_stats

    val, test = split_problems(cfg)
    problems = val if split == "val" else test
    task, policy, scorer = _components(cfg, k, with_orm=False, with_prover=alpha != 0)
    settings = BeamSettings(width=width, candidates=cfg.candidates, alpha=alpha, max_steps=task.max_steps,
                            step_tokens=cfg.step_tokens, temperature=cfg.temperature, top_p=cfg.top_p, dedup=cfg.dedup)
    depths = [0]

    def on_depth() -> None:
        depths[0] += 1
        progress(1)

    results = beam_search(policy, scorer, task, problems, settings, seed=cfg.seed, on_depth=on_depth)
    outcomes = [task.outcome(p, r.steps) for p, r in zip(problems, results)]
    any_correct = [max((task.outcome(p, s) for s, _ in r.complete), default=0.0) for p, r in zip(problems, results)]
    with atomic_open(Path(run_dir) / "results" / f"{name}.jsonl") as f:
        for r, o in zip(results, outcomes):
            f.write(json.dumps({"problem_id": r.problem_id, "steps": r.steps, "outcome": o, "score": r.score,
                                "complete": len(r.complete), "depth": r.depth, **r.compute.as_dict()}) + "\n")
    progress(task.max_steps - depths[0])
    compute = {k_: float(np.mean([getattr(r.compute, k_) for r in results]))
               for k_ in ("generated", "encoded", "scored", "samples")}
    return {"n": width, "alpha": alpha, "k": k, "split": split, **accuracy_stats(outcomes), **compute,
            "pass_complete": float(np.mean(any_correct)), "outcomes": outcomes}


def _alpha_name(a: float) -> str:
    return f"{a:g}"


def run_search(cfg: SearchConfig, out: str | Path | None, overwrite: bool = False,
               show_progress: bool = True) -> SearchSummary:
    from pav.search.report import alpha_margin, alpha_sweep, efficiency_text, paired_points, summarize, write_report

    if not (cfg.policy and cfg.verifier):
        raise ValueError("search needs --set policy=SFT_RUN --set verifier=PQV_RUN (and orm=ORM_RUN for best-of-N)")
    check_source(cfg.task)  # a task plug-in that cannot be imported stops the run before any work
    run_dir = start_run(out, "search", cfg, overwrite)
    split_problems(cfg, run_dir)  # fail before starting workers when the task cannot supply the problems
    paths = ("policy", "verifier", "orm") + (("prover",) if cfg.prover != EXPERT else ())
    workers_cfg = with_absolute_options(with_absolute_paths(cfg, *paths))  # `expert` is a name, not a path
    common = {"cfg": workers_cfg, "run_dir": str(run_dir.resolve())}  # workers may start elsewhere
    depth = build_task(cfg.task, check=False).max_steps  # progress units of a beam job: its depths
    jobs = [Job("best_of_n", job_best_of_n, 1, common)]
    jobs += [Job(f"pqv_beam_N{n}", job_beam, depth, {**common, "name": f"pqv_beam_N{n}", "split": "test", "width": n,
                                                  "alpha": 0.0, "k": cfg.k}) for n in cfg.ns]
    if cfg.alpha is None:
        jobs += [Job(f"alpha_{_alpha_name(a)}", job_beam, depth,
                     {**common, "name": f"alpha_{_alpha_name(a)}", "split": "val", "width": cfg.alpha_width,
                      "alpha": a, "k": cfg.k}) for a in cfg.alpha_grid]
    executor = Executor(cfg.executor, cfg.workers, cfg.ray_address, cfg.max_retries)
    first = run_jobs(jobs, run_dir / "jobs", executor, show_progress)
    sweep = alpha_sweep(cfg.alpha_grid, first) if cfg.alpha is None else []
    alpha = cfg.alpha if cfg.alpha is not None else max(sweep, key=lambda r: (r["accuracy"], -r["alpha"]))["alpha"]
    margin = alpha_margin(sweep, alpha)
    log.info("search: PAV beam search uses alpha = %g%s", alpha, "" if cfg.alpha is not None else " (best on validation"
             + ("" if margin is None else f", {paired_points(margin)} points over alpha = 0 paired by problem") + ")")
    second, reused = [], {}
    for n in cfg.ns:
        name = f"pav_beam_N{n}_a{_alpha_name(alpha)}"
        if alpha == 0:  # Q̂^π + 0·Â^μ is the PQV's score and the seeds are the same: the run exists already
            reused[name] = first[f"pqv_beam_N{n}"]
            with atomic_open(run_dir / "results" / f"{name}.jsonl") as f:
                f.write((run_dir / "results" / f"pqv_beam_N{n}.jsonl").read_text())
            continue
        second.append(Job(name, job_beam, depth, {**common, "name": name, "split": "test", "width": n, "alpha": alpha,
                                              "k": cfg.k}))
    if reused:
        log.info("search: with alpha = 0 PAV beam search is PQV beam search; reusing its %d runs", len(reused))
    for k in cfg.prover_ks:
        for n in cfg.prover_ns:
            name = f"prover_K{k}_N{n}_a{_alpha_name(alpha)}"
            if not (k == cfg.k and n in cfg.ns):  # that one is a PAV beam run already
                second.append(Job(name, job_beam, depth, {**common, "name": name, "split": "test", "width": n,
                                                      "alpha": alpha, "k": k}))
    results = {**first, **reused, **run_jobs(second, run_dir / "jobs", executor, show_progress)}
    summary = summarize(cfg, alpha, results)
    write_report(summary, run_dir)
    record = SearchSummary(**summary)
    mark_complete(run_dir, record)
    h = summary["headline"]
    log.info("search: PAV beam vs ORM best-of-%d: compute-efficiency %s, mean accuracy gain at equal compute %s -> %s",
             max(cfg.ns), efficiency_text(h),
             "n/a" if h["mean_gain"] is None else f"{100 * h['mean_gain']:+.1f} points", run_dir)
    return record
