"""`pav demo`: the whole method in one command (the paper, §3–§5), on the built-in task by default
or on any task and starting model (``--preset smollm2``: SmolLM2-135M-Instruct on DeepMind arithmetic).

Each stage is an ordinary pav stage run in its own folder of the demo's run directory, fed the
outputs of the stages before it:

1. ``sft/``       the base policy π (`pav sft`);
2. ``labels/``    Monte-Carlo Q̂^π of every prefix of π's seed solutions (`pav label`); the
                  Best-of-K prover's Q^μ and A^μ follow from the same counts (Eq. 30);
3. ``prover-labels/``  the same for the RL prover μ, the built-in task's noisy expert (a policy
                  stronger than π, as the paper's cross-model provers; `pav label --set prover=expert`);
                  skipped with ``rl_prover=policy``, which another task needs (it has no expert);
4. ``pqv/``, ``orm/``, ``prover-pav/``  the PQV (whose Bo-K transform is search's PAV), the ORM and
                  the PAV of the RL prover, trained two at a time, one process each (`pav train-verifier`);
5. ``pqv-eval/``  the PQV's calibration and outcome AUROC on held-out labels (`pav eval-verifier`);
6. ``search/``    ORM best-of-N, PQV beam and PAV beam search with Pass@N (`pav search`);
7. ``rl/``        ORM-RL against PAV-RL from one RFT start over several seeds (`pav rl-compare`), A^μ
                  from the prover's PAV (``rl_prover=expert``) or from the PQV, μ = π₀ (``policy``);

then ``summary.json``, ``report.md``, ``report.html`` and the figures at the top (`pav.demo.report`).

Caching: a stage whose folder holds a finished run (``COMPLETE``) is skipped and its summary record
read (`pav.core.rundir.read_summary`: checked, typed; the verifiers stage reads each verifier's);
an unfinished one is continued, since every stage resumes on its own (label shards, verifier
checkpoints, cached search and RL jobs). The demo's ``task`` replaces each stage's own ``task``
and the pipeline fills in every path a stage reads (``policy``, ``labels``, ``verifier``, ...)
and the demo's ``workers``, so those knobs of the nested sections are ignored. With
``rl.rl.rft_steps = 0`` RL starts from π itself (no rejection fine-tuning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.io import write_json
from pav.core.jobs import Job, run_jobs
from pav.core.rundir import is_complete, mark_complete, read_summary, start_run
from pav.rl.compare import RLCompareConfig
from pav.rl.report import RLCompareSummary
from pav.rl.stage import RLConfig
from pav.rollouts.expert import EXPERT
from pav.rollouts.label import LabelSummary
from pav.rollouts.stage import LabelConfig
from pav.search.report import SearchSummary
from pav.search.stage import SearchConfig
from pav.sft.stage import SFTConfig
from pav.sft.train import SFTSummary
from pav.tasks.build import TaskConfig, check_source, is_builtin
from pav.verifier.quality import QualitySummary
from pav.verifier.train import VerifierSummary, VerifierTrainConfig

log = logging.getLogger(__name__)

TIMINGS_FILE = "stages.json"


@dataclass(frozen=True)
class DemoConfig:
    SET_BY_STAGE = ("sft.task", "label.task", "label.policy", "label.prover", "prover_label.task",
                    "prover_label.policy", "prover_label.prover", "search.task", "search.policy", "search.verifier",
                    "search.orm", "search.workers", "rl.workers", "rl.rl.task", "rl.rl.policy", "rl.rl.rft_labels",
                    "rl.rl.verifier", "rl.rl.prover")  # the demo's own task, runs and workers (pav.demo.pipeline)
    task: TaskConfig = knob(TaskConfig(), "the task of every stage: task.source and task.options.* (default: the "
                                          "built-in ModReach; its options are ModReach's knobs, e.g. task.options.n_ops)")
    sft: SFTConfig = knob(SFTConfig(threads=2), "base policy (`pav sft`)")
    label: LabelConfig = knob(LabelConfig(problems=300, n_cov=8, n_mc=4, threads=2),
                              "progress labels (`pav label`): many seeds, few rollouts each")
    verifier: VerifierTrainConfig = knob(VerifierTrainConfig(steps=1000, batch_size=32, lr=1e-3),
                                         "optimisation of the PQV (at lr 3e-4 it is under-trained: held-out MSE "
                                         "0.047 vs 0.043, PQV beam 4 points lower, mean over N = 2..16, 300 problems)")
    orm_verifier: VerifierTrainConfig = knob(VerifierTrainConfig(steps=1000, batch_size=32, lr=3e-4),
                                             "optimisation of the ORM (at lr 1e-3 it over-fits: held-out MSE 0.099 vs "
                                             "0.078, ORM best-of-64 8 points lower)")
    prover_label: LabelConfig = knob(LabelConfig(problems=1200, n_cov=8, n_mc=16, threads=2, prover="expert"),
                                     "labels of the RL prover μ (`pav label`; its rollouts are cheap: more of them)")
    prover_verifier: VerifierTrainConfig = knob(VerifierTrainConfig(steps=2000, batch_size=32, lr=3e-4),
                                                "optimisation of the RL prover's PAV (at lr 1e-3 its held-out error is "
                                                "lower but RL gained +3.0 points against +5.5 at 3e-4, 3 seeds)")
    rl_prover: Literal["expert", "policy"] = knob(
        "expert", "RL's A^μ: expert = the learned PAV of the task's noisy expert (3 seeds: +5.0 points at α = 3, where "
                  "μ = π₀'s collapses); policy = the PQV's, μ = π₀ (the paper's RL prover; use with rl.rl.alpha=0.3)")
    verifier_features: Literal["none", "logprob"] = knob(
        "logprob", "inputs of both verifiers besides the value head (see `pav train-verifier --show-config`)")
    heldout_fraction: float = knob(0.2, "share of labelled problems held out from verifier training")
    search: SearchConfig = knob(
        SearchConfig(problems=100, val_problems=50, ns=(2, 4, 8, 16, 32, 64), alpha_grid=(0.0, 0.1, 0.3, 0.5, 1.0),
                     alpha_width=8, prover_ks=()),
        "test-time search (`pav search`); the full study: `pav search` defaults")
    rl: RLCompareConfig = knob(
        RLCompareConfig(rl=RLConfig(iterations=150, rft_steps=200, eval_every=25, warmup=15, alpha=3.0)),
        "ORM-RL against PAV-RL (`pav rl-compare`)")
    workers: int = knob(2, "worker processes of the parallel stages (one torch thread each)")
    device: str = knob("", "where every stage's models run: cpu, cuda, cuda:N or auto (sets each stage's "
                       "load.device); empty: as each stage's own load.device says")


def on_device(cfg: DemoConfig, stage_cfg: Any) -> Any:
    """``stage_cfg`` with its ``load.device`` set to the demo's ``device`` (when one is given)."""
    if not cfg.device:
        return stage_cfg
    return dataclasses.replace(stage_cfg, load=dataclasses.replace(stage_cfg.load, device=cfg.device))


@dataclass(frozen=True)
class Stage:
    name: str  # the folder of its run, under the demo's run directory
    title: str
    run: Callable[[DemoConfig, Path, bool], Any]  # (cfg, demo run dir, show) -> its summary record
    record: type | None  # the record its summary.json holds (None: the verifiers', `read_verifiers`)


def _sft(cfg: DemoConfig, root: Path, show: bool) -> SFTSummary:
    from pav.sft.stage import run_sft

    return run_sft(on_device(cfg, dataclasses.replace(cfg.sft, task=cfg.task)), root / "sft", show_progress=show)


def _label(cfg: DemoConfig, root: Path, show: bool) -> LabelSummary:
    from pav.rollouts.stage import run_label

    c = dataclasses.replace(cfg.label, task=cfg.task, policy=str(root / "sft"), prover="")
    return run_label(on_device(cfg, c), root / "labels", show_progress=show)


def _prover_label(cfg: DemoConfig, root: Path, show: bool) -> LabelSummary | str:
    """The prover's label run; without one (rl_prover = policy), why not."""
    from pav.rollouts.stage import run_label

    if cfg.rl_prover != "expert":
        return f"rl_prover={cfg.rl_prover}"
    c = dataclasses.replace(cfg.prover_label, task=cfg.task, policy=str(root / "sft"), prover=EXPERT)
    return run_label(on_device(cfg, c), root / "prover-labels", show_progress=show)


VERIFIERS = {"pqv": ("labels", "pqv"), "orm": ("labels", "orm"), "prover-pav": ("prover-labels", "pqv")}  # name: (labels, view)


def verifier_config(cfg: DemoConfig, root: Path, name: str):
    from pav.verifier.stage import TrainVerifierConfig

    labels, view = VERIFIERS[name]
    return on_device(cfg, TrainVerifierConfig(labels=str(root / labels), view=view, backbone=str(root / "sft"),
                                              features=cfg.verifier_features, heldout_fraction=cfg.heldout_fraction,
                                              train={"prover-pav": cfg.prover_verifier,
                                                     "orm": cfg.orm_verifier}.get(name, cfg.verifier)))


def job_verifier(progress, cfg: DemoConfig, root: str, name: str) -> dict[str, Any]:
    from pav.verifier.stage import run_train_verifier

    out, c = Path(root) / name, verifier_config(cfg, Path(root), name)
    if is_complete(out):
        progress(c.train.steps)
    else:
        run_train_verifier(c, out, show_progress=False, progress=progress)
    return {"run": str(out)}  # its summary is the run's own (`read_verifiers`)


def _verifier_names(cfg: DemoConfig) -> list[str]:
    return ["prover-pav", "pqv", "orm"] if cfg.rl_prover == "expert" else ["pqv", "orm"]


def _verifiers(cfg: DemoConfig, root: Path, show: bool) -> dict[str, VerifierSummary]:
    """PQV, ORM and the RL prover's PAV, two at a time (the longest first); the stage's own folder
    holds only the jobs' cache and its COMPLETE marker."""
    jobs = [Job(name, job_verifier, verifier_config(cfg, root, name).train.steps,
                {"cfg": cfg, "root": str(root), "name": name}) for name in _verifier_names(cfg)]
    out = root / "verifiers"
    run_jobs(jobs, out / "jobs", min(cfg.workers, 2), show)
    mark_complete(out)
    return read_verifiers(cfg, root)


def read_verifiers(cfg: DemoConfig, root: Path) -> dict[str, VerifierSummary]:
    """The summary of each verifier run of the demo, by name."""
    return {name: read_summary(root / name, "demo", VerifierSummary) for name in _verifier_names(cfg)}


def _eval(cfg: DemoConfig, root: Path, show: bool) -> QualitySummary:
    from pav.verifier.stage import EvalVerifierConfig, run_eval_verifier

    c = EvalVerifierConfig(labels=str(root / "labels"), verifier=str(root / "pqv"),
                           heldout_fraction=cfg.heldout_fraction, k=cfg.search.k,
                           alpha=cfg.search.alpha if cfg.search.alpha is not None else EvalVerifierConfig.alpha)
    return run_eval_verifier(on_device(cfg, c), root / "pqv-eval", show_progress=show)


def _search(cfg: DemoConfig, root: Path, show: bool) -> SearchSummary:
    from pav.search.stage import run_search

    c = dataclasses.replace(cfg.search, task=cfg.task, policy=str(root / "sft"), verifier=str(root / "pqv"),
                            orm=str(root / "orm"), workers=cfg.workers)
    return run_search(on_device(cfg, c), root / "search", show_progress=show)


def _rl(cfg: DemoConfig, root: Path, show: bool) -> RLCompareSummary:
    from pav.rl.compare import run_rl_compare

    labels = str(root / "labels") if cfg.rl.rl.rft_steps > 0 else ""  # rft_steps = 0: RL starts from π itself
    prover = str(root / "prover-pav") if cfg.rl_prover == "expert" else ""
    arm = on_device(cfg, dataclasses.replace(cfg.rl.rl, task=cfg.task, policy=str(root / "sft"), rft_labels=labels,
                                             verifier=str(root / "pqv"), prover=prover))
    return run_rl_compare(dataclasses.replace(cfg.rl, rl=arm, workers=cfg.workers), root / "rl", show_progress=show)


STAGES = (
    Stage("sft", "base policy π (SFT)", _sft, SFTSummary),
    Stage("labels", "Monte-Carlo progress labels", _label, LabelSummary),
    Stage("prover-labels", "progress labels of the RL prover", _prover_label, LabelSummary),
    Stage("verifiers", "PQV, ORM and prover PAV training", _verifiers, None),
    Stage("pqv-eval", "verifier calibration", _eval, QualitySummary),
    Stage("search", "test-time search", _search, SearchSummary),
    Stage("rl", "online RL", _rl, RLCompareSummary),
)


def run_demo(cfg: DemoConfig, out: str | Path | None, overwrite: bool = False,
             show_progress: bool = True):
    """Run (or continue) every stage, then write the report; returns the demo's summary
    (`pav.demo.report.DemoSummary`)."""
    from pav.demo.report import write_report

    check_source(cfg.task)  # a task plug-in that cannot be imported stops the demo before any work
    if cfg.rl_prover == "expert" and not is_builtin(cfg.task):
        raise ValueError(f"rl_prover=expert is the built-in task's noisy expert; task {cfg.task.source} has none: "
                         "--set rl_prover=policy")
    root = start_run(out, "demo", cfg, overwrite)
    timings = _read_timings(root)
    summaries: dict[str, Any] = {}  # stage name -> its summary record
    start = time.perf_counter()
    for i, stage in enumerate(STAGES, start=1):
        folder = root / stage.name
        header = f"[{i}/{len(STAGES)}] {stage.title}"
        if is_complete(folder):
            summaries[stage.name] = (read_summary(folder, "demo", stage.record) if stage.record
                                     else read_verifiers(cfg, root))
            timings.setdefault(stage.name, {"seconds": None})["cached"] = True
            _announce(f"{header}: finished earlier, reusing {folder}", show_progress)
            continue
        _announce(f"{header} → {folder}", show_progress)
        t0 = time.perf_counter()
        summaries[stage.name] = stage.run(cfg, root, show_progress)
        timings[stage.name] = {"seconds": time.perf_counter() - t0, "cached": False}
        write_json(root / TIMINGS_FILE, timings)
    summary = write_report(cfg, root, [(st.name, st.title) for st in STAGES], summaries, timings)
    mark_complete(root, summary)  # summary.json, then the COMPLETE marker
    log.info("demo: all stages done in %.0f s this run -> %s", time.perf_counter() - start, root / "report.html")
    _print_table(summary)  # the results, on a terminal or not (progress bars are what show_progress gates)
    return summary


def _read_timings(root: Path) -> dict[str, dict[str, Any]]:
    path = root / TIMINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _announce(text: str, show: bool) -> None:
    log.info("demo %s", text)
    if show:
        from rich.console import Console

        Console(stderr=True).rule(f"[bold]{text}")


def _print_table(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    stages = Table("stage", "time", "result", title="pav demo: stages")
    for row in summary.stages:
        stages.add_row(row["title"], row["time"], row["result"])
    console.print(stages)
    head = Table("measured", "here", "paper", title="headline")
    for row in summary.headline:
        head.add_row(row["name"], row["here"], row["paper"])
    console.print(head)
