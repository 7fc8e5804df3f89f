"""`pav train-verifier` and `pav score`: verifiers from label runs, and scores for solutions files.

- train-verifier: a label run directory → a PQV (``view=pqv``: Q̂^π of every labelled prefix; the
  PAV of a Best-of-K prover is derived from it when scoring) or an ORM (``view=orm``: the checked
  outcome of each complete solution). A prover that is another model gets its own PQV trained on
  a label run whose rollouts it ran (`pav label --set prover=...`).
- score: a solutions JSONL (`Solution` records) and its problems → per step q_base, q_prover,
  adv_prover, effective_reward(alpha) and an outcome score, one JSON object per solution.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.io import atomic_open, read_jsonl, write_json
from pav.core.records import SCHEMA_VERSION, Problem, Solution
from pav.core.rundir import mark_complete, start_run
from pav.verifier.train import VerifierTrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainVerifierConfig:
    labels: str = knob("", "a `pav label` run directory")
    view: Literal["pqv", "orm"] = knob("pqv", "pqv: values of every prefix; orm: outcomes of complete solutions")
    backbone: str = knob("", "backbone: a `pav sft` run, a model directory or an HF name")
    heldout_fraction: float = knob(0.2, "share of problems held out (by a hash of the question)")
    train: VerifierTrainConfig = knob(VerifierTrainConfig(), "optimisation")
    restart: bool = knob(False, "start from step 0 even if the run directory holds broken checkpoints")
    threads: int = knob(1, "torch threads")


def run_train_verifier(cfg: TrainVerifierConfig, out: str | Path | None, overwrite: bool = False,
                       show_progress: bool = True) -> dict[str, Any]:
    import torch

    from pav.verifier.data import load_examples, split_heldout
    from pav.verifier.model import ValueVerifier

    if not cfg.labels or not cfg.backbone:
        raise ValueError("train-verifier needs --set labels=LABEL_RUN and --set backbone=POLICY_RUN_OR_MODEL")
    torch.set_num_threads(cfg.threads)
    run_dir = start_run(out, f"verifier-{cfg.view}", cfg, overwrite)
    examples, rejected = load_examples(cfg.labels, cfg.view)
    train, heldout = split_heldout(examples, cfg.heldout_fraction)
    backbone = Path(cfg.backbone) / "policy" if (Path(cfg.backbone) / "policy").is_dir() else cfg.backbone
    verifier = ValueVerifier.from_policy(str(backbone), seed=cfg.train.seed)
    from pav.verifier.train import train_verifier

    summary = train_verifier(verifier, train, heldout, run_dir, cfg.train, restart=cfg.restart,
                             show_progress=show_progress)
    summary.update(view=cfg.view, rejected_labels=rejected, verifier_dir=str(run_dir / "verifier"))
    write_json(run_dir / "summary.json", summary)
    mark_complete(run_dir)
    return summary


@dataclass(frozen=True)
class ScoreConfig:
    solutions: str = knob("", "solutions JSONL (Solution records) to score")
    problems: str = knob("", "problems JSONL (e.g. a label run's problems.jsonl)")
    verifier: str = knob("", "the PQV: a `pav train-verifier` run or its verifier/ directory")
    k: int = knob(4, "Best-of-K prover size (0: use --set prover=... instead)")
    prover: str = knob("", "a verifier trained on the prover's own labels (when k = 0)")
    orm: str = knob("", "optional ORM for the outcome score (default: the PQV as ORM)")
    alpha: float = knob(0.5, "α of the effective reward Q^π + α·A^μ")
    batch_size: int = knob(32, "solutions per forward pass")
    threads: int = knob(1, "torch threads")


def load_verifier(path: str):
    from pav.verifier.model import ValueVerifier

    p = Path(path)
    return ValueVerifier.load(p / "verifier" if (p / "verifier").is_dir() else p)


def run_score(cfg: ScoreConfig, out: str | Path | None, overwrite: bool = False,
              show_progress: bool = True) -> dict[str, Any]:
    import torch

    from pav.tasks.modreach import ModReach
    from pav.verifier.scorer import VerifierScorer

    if not (cfg.solutions and cfg.problems and cfg.verifier):
        raise ValueError("score needs --set solutions=FILE --set problems=FILE --set verifier=DIR")
    torch.set_num_threads(cfg.threads)
    run_dir = start_run(out, "score", cfg, overwrite)
    scorer = VerifierScorer(load_verifier(cfg.verifier), k=cfg.k or None,
                            prover=load_verifier(cfg.prover) if not cfg.k else None,
                            orm=load_verifier(cfg.orm) if cfg.orm else None, batch_size=cfg.batch_size)
    task = ModReach()
    problems = {p.problem_id: p for p in read_jsonl(cfg.problems, Problem)}
    solutions = read_jsonl(cfg.solutions, Solution)
    missing = sorted({s.problem_id for s in solutions} - set(problems))
    if missing:
        raise ValueError(f"{len(missing)} solutions name problems not in {cfg.problems}, e.g. {missing[0]}")
    scores = scorer.score([task.prompt(problems[s.problem_id]) for s in solutions], [s.steps for s in solutions])
    with atomic_open(run_dir / "scores.jsonl") as f:
        for sol, sc in zip(solutions, scores):
            row = {"schema_version": SCHEMA_VERSION, "kind": "step_scores", "problem_id": sol.problem_id,
                   "solution_id": sol.solution_id, "alpha": cfg.alpha, "v_base": sc.v_base,
                   "q_base": sc.q_base.tolist(), "q_prover": sc.q_prover.tolist(),
                   "adv_prover": sc.adv_prover.tolist(), "effective_reward": sc.effective_reward(cfg.alpha).tolist(),
                   "outcome": sc.outcome}
            f.write(json.dumps(row) + "\n")  # NaN marks steps past the verifier's window
    summary = {"solutions": len(solutions), "scores": str(run_dir / "scores.jsonl")}
    write_json(run_dir / "summary.json", summary)
    mark_complete(run_dir)
    log.info("score: %d solutions -> %s", len(solutions), run_dir / "scores.jsonl")
    return summary
