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
from pav.core.io import atomic_open, read_jsonl
from pav.core.labelrun import check_label_run, read_solutions
from pav.core.records import SCHEMA_VERSION, Problem, Solution
from pav.core.rundir import mark_complete, start_run
from pav.policies.load import resolve_model_dir
from pav.policies.options import LoadOptions
from pav.tasks.math_task import MathTaskConfig
from pav.verifier.load import load_scorer, load_verifier, verifier_dir
from pav.verifier.processbench import ProcessBenchSummary
from pav.verifier.quality import QualitySummary
from pav.verifier.scorer import ScoreSummary
from pav.verifier.train import VerifierSummary, VerifierTrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainVerifierConfig:
    labels: str = knob("", "a `pav label` run directory")
    view: Literal["pqv", "orm"] = knob("pqv", "pqv: values of every prefix; orm: outcomes of complete solutions")
    backbone: str = knob("", "backbone: a `pav sft` run, a model directory or an HF name")
    load: LoadOptions = knob(LoadOptions(), "how the backbone is loaded: device, dtype, remote code")
    features: Literal["none", "logprob"] = knob(
        "logprob", "logprob: the backbone's own frozen step log-probs are inputs too (pav.verifier.model); "
                   "none: the paper's value head alone")
    heldout_fraction: float = knob(0.2, "share of problems held out (by a hash of the question)")
    train: VerifierTrainConfig = knob(VerifierTrainConfig(), "optimisation")
    restart: bool = knob(False, "start from step 0 even if the run directory holds broken checkpoints")
    threads: int = knob(1, "torch threads")


def run_train_verifier(cfg: TrainVerifierConfig, out: str | Path | None, overwrite: bool = False,
                       show_progress: bool = True, progress=None) -> VerifierSummary | dict[str, Any]:
    """Train into a run directory; ``progress(n)``, if given, is told of every optimiser step. A
    process of a multi-process run other than the main one returns its rank's numbers."""
    import torch

    from pav.verifier.data import label_run_delimiter, load_examples, split_heldout
    from pav.verifier.distributed import Ranks
    from pav.verifier.model import ValueVerifier

    if not cfg.labels or not cfg.backbone:
        raise ValueError("train-verifier needs --set labels=LABEL_RUN and --set backbone=POLICY_RUN_OR_MODEL")
    torch.set_num_threads(cfg.threads)
    cfg.load.check_trainable("the verifier stages")
    check_label_run(cfg.labels), resolve_model_dir(cfg.backbone)  # fail before the run directory is made
    ranks = Ranks(cpu=cfg.load.resolved_device() == "cpu")  # one process, or one of `accelerate launch`'s (pav.verifier.distributed)
    if ranks.world > 1 and out is None:
        raise ValueError("a multi-process train-verifier needs --out DIR (every process must write to the same run)")
    run_dir = start_run(out, f"verifier-{cfg.view}", cfg, overwrite) if ranks.is_main else Path(out)
    ranks.barrier()  # the run directory exists before any other process reads it
    examples, rejected = load_examples(cfg.labels, cfg.view)
    train, heldout = split_heldout(examples, cfg.heldout_fraction)
    verifier = ValueVerifier.from_policy(resolve_model_dir(cfg.backbone), delimiter=label_run_delimiter(cfg.labels), seed=cfg.train.seed,
                                         features=cfg.features, **cfg.load.load_kwargs())
    from pav.verifier.train import train_verifier

    summary = train_verifier(verifier, train, heldout, run_dir, cfg.train, restart=cfg.restart,
                             show_progress=show_progress, on_step=(lambda *_: progress(1)) if progress else None,
                             ranks=ranks)
    if not ranks.is_main:
        return summary
    record = VerifierSummary(**summary, view=cfg.view, rejected_labels=rejected, verifier_dir=str(run_dir / "verifier"),
                             processes=ranks.world)
    mark_complete(run_dir, record)
    return record


@dataclass(frozen=True)
class ScoreConfig:
    solutions: str = knob("", "solutions JSONL (Solution records) to score")
    problems: str = knob("", "problems JSONL (e.g. a label run's problems.jsonl)")
    verifier: str = knob("", "the PQV: a `pav train-verifier` run or its verifier/ directory")
    k: int = knob(4, "Best-of-K prover size (0: use --set prover=... instead)")
    prover: str = knob("", "a verifier trained on the prover's own labels (when k = 0)")
    orm: str = knob("", "optional ORM for the outcome score (default: the PQV as ORM)")
    load: LoadOptions = knob(LoadOptions(), "how verifiers are loaded: device and dtype")
    alpha: float = knob(0.5, "α of the effective reward Q^π + α·A^μ")
    batch_size: int = knob(32, "solutions per forward pass")
    threads: int = knob(1, "torch threads")


def run_score(cfg: ScoreConfig, out: str | Path | None, overwrite: bool = False,
              show_progress: bool = True) -> ScoreSummary:
    import torch

    from pav.tasks.build import prompt_of

    if not (cfg.solutions and cfg.problems and cfg.verifier):
        raise ValueError("score needs --set solutions=FILE --set problems=FILE --set verifier=DIR")
    torch.set_num_threads(cfg.threads)
    cfg.load.check_trainable("the verifier stages")
    problems = {p.problem_id: p for p in read_jsonl(cfg.problems, Problem)}
    solutions = read_jsonl(cfg.solutions, Solution)
    if not solutions:
        raise ValueError(f"solutions: {cfg.solutions} holds no solutions; nothing to score")
    missing = sorted({s.problem_id for s in solutions} - set(problems))
    if missing:
        raise ValueError(f"{len(missing)} solutions name problems not in {cfg.problems}, e.g. {missing[0]}")
    run_dir = start_run(out, "score", cfg, overwrite)
    scorer = load_scorer(cfg.verifier, k=cfg.k, prover=cfg.prover, orm=cfg.orm, load=cfg.load,
                         batch_size=cfg.batch_size)
    scores = scorer.score([prompt_of(problems[s.problem_id]) for s in solutions], [s.steps for s in solutions])
    with atomic_open(run_dir / "scores.jsonl") as f:
        for sol, sc in zip(solutions, scores):
            row = {"schema_version": SCHEMA_VERSION, "kind": "step_scores", "problem_id": sol.problem_id,
                   "solution_id": sol.solution_id, "alpha": cfg.alpha, "v_base": sc.v_base,
                   "q_base": sc.q_base.tolist(), "q_prover": sc.q_prover.tolist(),
                   "adv_prover": sc.adv_prover.tolist(), "effective_reward": sc.effective_reward(cfg.alpha).tolist(),
                   "outcome": sc.outcome}
            f.write(json.dumps(row) + "\n")  # NaN marks steps past the verifier's window
    summary = ScoreSummary(solutions=len(solutions), scores=str(run_dir / "scores.jsonl"))
    mark_complete(run_dir, summary)
    log.info("score: %d solutions -> %s", len(solutions), run_dir / "scores.jsonl")
    return summary


@dataclass(frozen=True)
class EvalVerifierConfig:
    labels: str = knob("", "a `pav label` run directory (its held-out problems are evaluated)")
    processbench: str = knob("", "instead of labels: a ProcessBench file or split (pav.verifier.processbench)")
    threshold: float = knob(0.5, "ProcessBench: a step whose prefix value falls below this is the predicted error")
    prompt: MathTaskConfig = knob(MathTaskConfig(), "ProcessBench: how problems become prompts (only "
                                                    "prompt.template, plain_template, instruction apply)")
    load: LoadOptions = knob(LoadOptions(), "how the verifier is loaded: device and dtype")
    verifier: str = knob("", "a `pav train-verifier` run or its verifier/ directory")
    heldout_fraction: float = knob(0.2, "held-out share; use the value the verifier was trained with")
    k: int = knob(4, "Best-of-K prover size for the advantages of Fig. 10")
    alpha: float = knob(0.5, "α of the effective reward in Fig. 10")
    batch_size: int = knob(32, "solutions per forward pass")
    threads: int = knob(1, "torch threads")


def run_eval_verifier(cfg: EvalVerifierConfig, out: str | Path | None, overwrite: bool = False,
                      show_progress: bool = True) -> QualitySummary | ProcessBenchSummary:
    """Predictions on held-out labels → quality numbers, a PNG and report.md."""
    import numpy as np
    import torch

    from pav.verifier.quality import plot_quality, verifier_quality
    from pav.rollouts.estimates import best_of_k
    from pav.verifier.data import label_run_delimiter, load_examples, split_heldout

    if not (cfg.labels or cfg.processbench) or not cfg.verifier:
        raise ValueError("eval-verifier needs --set verifier=VERIFIER_RUN and --set labels=LABEL_RUN "
                         "(or --processbench FILE)")
    torch.set_num_threads(cfg.threads)
    cfg.load.check_trainable("the verifier stages")
    verifier_dir(cfg.verifier)  # a missing or unfinished run stops here, before the run directory is made
    if cfg.processbench:
        return _eval_processbench(cfg, start_run(out, "eval-processbench", cfg, overwrite))
    check_label_run(cfg.labels)
    run_dir = start_run(out, "eval-verifier", cfg, overwrite)
    _, heldout = split_heldout(load_examples(cfg.labels, "pqv")[0], cfg.heldout_fraction)
    outcomes = {s.solution_id: s.outcome for s in read_solutions(cfg.labels)}
    values = load_verifier(cfg.verifier, cfg.load).prefix_values([e.prompt for e in heldout], [e.steps for e in heldout],
                                                       cfg.batch_size)
    exact_values = _exact_values(cfg.labels)
    rows = []
    for ex, v in zip(heldout, values):
        q_mu = best_of_k(v.astype(np.float64), cfg.k)
        exact = exact_values(ex.prompt, ex.steps) if exact_values else None  # (H + 1,) true V of each prefix
        for h, k, n in zip(ex.prefix_lens, np.round(np.array(ex.targets) * np.array(ex.n_rollouts)), ex.n_rollouts):
            if h < len(v):
                rows.append({"solution_id": ex.solution_id, "prefix_len": int(h), "n_correct": int(k),
                             "n_rollouts": int(n), "pred": float(v[h]),
                             "adv": float(q_mu[h] - q_mu[h - 1]) if h >= 1 else float("nan"),
                             "outcome": float(outcomes[ex.solution_id] or 0.0), "complete": h == len(ex.steps),
                             **({"exact": float(exact[h])} if exact is not None else {})})
    if not rows:
        raise ValueError(f"no held-out labelled prefixes in {cfg.labels} at heldout_fraction={cfg.heldout_fraction}")
    quality = verifier_quality(rows, cfg.alpha)
    with atomic_open(run_dir / "predictions.jsonl") as f:
        f.writelines(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}) + "\n"
                     for r in rows)
    plot_quality(quality, run_dir / "verifier_quality.png")
    (run_dir / "report.md").write_text(_quality_markdown(quality), encoding="utf-8")
    summary = QualitySummary(**quality)
    mark_complete(run_dir, summary)
    log.info("eval-verifier: %d held-out prefixes, MSE %.4f (MC noise %.4f, constant %.4f), AUROC complete %s -> %s",
             quality["prefixes"], quality["mse"], quality["mc_noise"], quality["mse_constant"],
             "n/a" if quality["auroc_complete"] is None else f"{quality['auroc_complete']:.3f}", run_dir)
    if quality["exact"]:
        log.info("eval-verifier: %s", _exact_lines(quality["exact"])[0].removeprefix("- "))
    return summary


def _exact_values(labels: str):
    """``(prompt, steps) -> V of every prefix`` when the label run's rollouts came from the built-in
    task's expert (`pav label --set prover=expert`), whose values are known exactly; else None."""
    import tomllib

    from pav.core.rundir import CONFIG_FILE
    from pav.rollouts.expert import EXPERT
    from pav.tasks.modreach import make_task

    path = Path(labels) / CONFIG_FILE
    raw = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if raw.get("prover") != EXPERT:
        return None
    section = raw.get("task", {})  # runs before task.source: the ModReach knobs themselves
    task = make_task(**(section.get("options", {}) if "source" in section else section))
    return lambda prompt, steps: task.expert_values(task.parse_question(prompt), steps)


def _eval_processbench(cfg: EvalVerifierConfig, run_dir: Path) -> ProcessBenchSummary:
    """Earliest-error predictions on ProcessBench items → predictions.jsonl, summary.json, report.md."""
    import numpy as np

    from pav.tasks.math_task import render_prompt
    from pav.verifier.processbench import earliest_error, processbench_metrics, read_processbench

    items = read_processbench(cfg.processbench)
    verifier = load_verifier(cfg.verifier, cfg.load)
    prompts = [render_prompt(it.problem, cfg.prompt, verifier.tokenizer, verifier.delimiter) for it in items]
    values = verifier.prefix_values(prompts, [list(it.steps) for it in items], cfg.batch_size)
    preds = [earliest_error(v, len(it.steps), cfg.threshold) for it, v in zip(items, values)]
    summary = {"items": len(items), "threshold": cfg.threshold,
               **processbench_metrics([it.label for it in items], preds),
               "f1_by_threshold": {f"{t:.1f}": processbench_metrics(
                   [it.label for it in items],
                   [earliest_error(v, len(it.steps), t) for it, v in zip(items, values)])["f1"]
                   for t in np.arange(0.1, 1.0, 0.1)},
               "metric": "ProcessBench F1: harmonic mean of the accuracy on erroneous items (exact earliest "
                         "error step) and on correct items (no error predicted)"}
    with atomic_open(run_dir / "predictions.jsonl") as f:
        f.writelines(json.dumps({"id": it.item_id, "label": it.label, "predicted": p, "values": v.tolist()}) + "\n"
                     for it, p, v in zip(items, preds, values))
    f3 = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    (run_dir / "report.md").write_text(
        f"# ProcessBench: {cfg.processbench}\n\n{summary['metric']}.\n\n"
        f"| items | erroneous | correct | acc. erroneous | acc. correct | F1 (threshold {cfg.threshold:g}) |\n"
        f"|---|---|---|---|---|---|\n| {len(items)} | {summary['n_erroneous']} | {summary['n_correct']} | "
        f"{f3(summary['acc_erroneous'])} | {f3(summary['acc_correct'])} | {f3(summary['f1'])} |\n", encoding="utf-8")
    record = ProcessBenchSummary(**summary)
    mark_complete(run_dir, record)
    log.info("eval-verifier: ProcessBench F1 %s (harmonic mean of accuracy on erroneous items %s and on correct "
             "items %s; threshold %g), %d items -> %s", f3(summary["f1"]), f3(summary["acc_erroneous"]),
             f3(summary["acc_correct"]), cfg.threshold, len(items), run_dir)
    return record


def _quality_markdown(q: dict[str, Any]) -> str:
    f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    lines = ["# Verifier quality on held-out labels", "",
             f"- prefixes: {q['prefixes']}",
             f"- MSE against Monte-Carlo Q̂: {q['mse']:.4f}; irreducible MC noise mean Q̂(1−Q̂)/n: {q['mc_noise']:.4f}; "
             f"a constant predictor: {q['mse_constant']:.4f}",
             f"- AUROC of the complete solution's value for its outcome (verifier as ORM): {f(q['auroc_complete'])}",
             *_exact_lines(q.get("exact")),
             "", "![quality](verifier_quality.png)", "",
             "| steps in prefix | n | AUROC Q̂^π | AUROC effective reward |", "|---|---|---|---|"]
    eff = {r["prefix_len"]: r["auroc_effective"] for r in q["fig10"]}
    lines += [f"| {r['prefix_len']} | {r['n']} | {f(r['auroc'])} | {f(eff.get(r['prefix_len']))} |"
              for r in q["auroc_by_position"]]
    return "\n".join(lines) + "\n"


def _exact_lines(e: dict[str, Any] | None) -> list[str]:
    if not e:
        return []
    f = lambda x: "—" if x is None else f"{x:.3f}"  # noqa: E731
    return [f"- against the exact values (labels by the task's expert): value RMSE {f(e['rmse_value'])}, correlation "
            f"{f(e['corr_value'])} ({e['prefixes']} prefixes); step advantage RMSE {f(e['rmse_adv'])} (the true ones' "
            f"sd: {f(e['sd_adv_exact'])}), correlation {f(e['corr_adv'])}, sign right {f(e['sign_adv'])} "
            f"({e['steps']} steps)"]
