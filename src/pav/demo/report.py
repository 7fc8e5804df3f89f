"""The demo's report: ``summary.json``, ``report.md``, a self-contained ``report.html`` and two figures.

Everything is read from the stages' own summaries and outputs (no model runs here):

- ``demo_main.png``: the two headlines side by side, accuracy vs compute of test-time search and
  held-out accuracy vs training samples of RL;
- ``labels.png``: the distributions of Q̂^π and of the Best-of-K prover's advantage Â^μ over all
  labelled prefixes, and mean advantage by the kind of step the task's checker names;
- the stages' figures (verifier calibration, search curves and sweeps, RL curves), linked from
  report.md and embedded in report.html.

The headline table puts each measured ratio beside the paper's (the paper, §4.1 and §5).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pav.core.config import flatten
from pav.core.rundir import summary_fields
from pav.rl.report import ratio_text
from pav.search.report import efficiency_text
from pav.tasks.build import is_builtin

SEARCH_PAPER = {"compute_efficiency": "1.5–5×", "gain": "+8 to +10 points"}
RL_PAPER = {"sample_efficiency": "5–6×", "gain": "+6 to +7 points", "pass_at": "higher Pass@N for N ≤ 128"}
STEP_KINDS = ("progress", "no_progress", "regress", "error", "after_error", "answer_ok", "answer_bad")


VERIFIER_NAMES = {"pqv": "PQV (Q^π of π)", "orm": "ORM", "prover-pav": "PAV of the RL prover (the task's expert)"}


@dataclass(frozen=True)
class DemoSummary:
    """``summary.json`` of a `pav demo` run. Typed at the top level only: each value is plain JSON,
    copied from the stages' own summary records (`write_report`) or computed here."""
    STAGES = ("demo",)
    stages: list[Any]  # one row per stage: name, title, seconds, cached, time, result
    total_seconds: float
    headline: list[Any]  # each ratio of the paper: measured here, beside the paper's
    base_policy: dict[str, Any]  # the SFT summary's held-out numbers and its gate
    labels: dict[str, Any]  # the label summary's counts and the distributions of Q̂ and Â
    verifiers: dict[str, Any]  # name -> that verifier run's summary
    calibration: dict[str, Any]  # the eval-verifier summary
    search: dict[str, Any]  # the search summary, less its sweeps over provers
    rl: dict[str, Any]  # the rl-compare summary
    settings: dict[str, Any]  # the demo's config, flattened


def _pts(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}") + " points"


def _alpha_margin(search: dict) -> str:
    """": +2.0 ± 1.4 points over α = 0, paired by problem" for the sweep's chosen α, or nothing."""
    from pav.search.report import alpha_margin, paired_points

    margin = alpha_margin(search.get("alpha_sweep", []), search["alpha"])
    return "" if margin is None else f": {paired_points(margin)} points over α = 0, paired by problem"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _gate(gate: dict[str, Any]) -> str:
    if gate["passed"] is None:
        return "— (" + "; ".join(gate["reasons"]) + ")"
    return "passed" if gate["passed"] else "missed: " + "; ".join(gate["reasons"])


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------- numbers


def label_statistics(cfg, task, root: Path, label_summary) -> dict[str, Any]:
    """Distributions of Q̂^π and Â^μ (μ = Best-of-K(π)) and mean Â by step kind (from ``task``'s
    checker, ``analyse``, when it has one), from the label run (mean Â^π by step kind is the label
    stage's own, ``label_summary``)."""
    from pav.core.labelrun import read_problems
    from pav.rollouts.stage import advantage_by_step_kind
    from pav.rollouts.views import label_arrays, read_labels

    k = cfg.search.k
    labels = read_labels(root / "labels")
    base, prover = label_arrays(labels), label_arrays(labels, k=k)
    problems = read_problems(root / "labels")
    adv_base = base["adv"][np.isfinite(base["adv"])]
    adv_prover = prover["adv"][np.isfinite(prover["adv"])]
    edges = np.linspace(0, 1, 21)
    adv_edges = np.linspace(-1, 1, 41)
    return {
        "k": k, "prefixes": len(labels),
        "q_base": {"mean": float(base["q"].mean()), "hist": np.histogram(base["q"], edges)[0].tolist(),
                   "edges": edges.tolist()},
        "adv_base": {"mean_abs": float(np.abs(adv_base).mean()), "hist": np.histogram(adv_base, adv_edges)[0].tolist()},
        "adv_prover": {"mean_abs": float(np.abs(adv_prover).mean()),
                       "hist": np.histogram(adv_prover, adv_edges)[0].tolist()},
        "adv_edges": adv_edges.tolist(),
        "by_kind_base": label_summary.adv_by_step_kind,
        "by_kind_prover": advantage_by_step_kind(task, problems, root / "labels", labels, prover["adv"]),
    }


def headline(search: dict[str, Any], rl: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per ratio of the paper: what was measured here, with spreads, beside the paper's."""
    h = search["headline"]
    gains = [g["gain"] for g in h["gains_at_equal_compute"] if g["gain"] is not None]
    nmax = search["ns"][-1]
    rows = [
        {"name": f"search: compute PAV beam needs to match ORM best-of-{nmax} (ratio)",
         "value": h["compute_efficiency"], "here": efficiency_text(h),
         "paper": SEARCH_PAPER["compute_efficiency"]},
        {"name": f"search: the same against ORM at its most accurate N = {h['reference_best']['n']}",
         "value": h["compute_efficiency_vs_reference_best"],
         "here": efficiency_text(h, "compute_efficiency_vs_reference_best"),
         "paper": SEARCH_PAPER["compute_efficiency"]},
        {"name": "search: accuracy gain of PAV beam over ORM best-of-N at equal compute (mean over N; range)",
         "value": h["mean_gain"], "paper": SEARCH_PAPER["gain"],
         "here": _pts(h["mean_gain"]) + (f" ({100 * min(gains):+.1f} … {100 * max(gains):+.1f})" if gains else "")},
        {"name": "search: share of N where PAV beam beats PQV beam (α = 0)", "value": h["pav_above_pqv_beam"],
         "here": f"{h['pav_above_pqv_beam']:.0%}", "paper": "all N (Fig. 5a)"},
    ]
    paired = h.get("pav_minus_pqv_paired")
    if paired and paired["se"] is not None:
        rows.append({"name": "search: PAV beam − PQV beam, mean over N, paired by problem (± SE)",
                     "value": paired["mean"], "spread": paired["se"], "here": _pts(paired["mean"], paired["se"]),
                     "paper": "above at every N (Fig. 5a)"})
    ref = rl["reference"]
    for c in rl["comparisons"]:
        n_seeds = len(rl["seeds"])
        rows += [
            {"name": f"RL: sample efficiency of {c['reward']}-RL over {ref}-RL ({n_seeds} seeds, mean curves)",
             "value": c["sample_efficiency"], "here": ratio_text(c),
             "paper": RL_PAPER["sample_efficiency"]},
            {"name": f"RL: final accuracy gain of {c['reward']}-RL (mean ± sd over {n_seeds} seeds)",
             "value": c["gain"], "spread": c["gain_sd"], "here": _pts(c["gain"], c["gain_sd"]),
             "paper": RL_PAPER["gain"]},
            {"name": f"RL: Pass@N gain after RL, N = 1 … {max(int(n.split('@')[1]) for n in c['pass_at_gain'])}",
             "value": float(np.mean(list(c["pass_at_gain"].values()))),
             "here": ", ".join(f"{100 * g:+.1f}" for g in c["pass_at_gain"].values()) + " points",
             "paper": RL_PAPER["pass_at"]},
        ]
        cov = c.get("coverage")
        if cov:  # `pav.rl.compare.coverage`; absent in runs from before per-problem rows
            shares = [rl["rewards"][r].get("top_share") for r in (c["reward"], ref)]
            here = f"{cov['lost']} lost, {cov['gained']} gained of {cov['problems']}"
            if None not in shares:
                here += f"; most frequent solution {shares[0]:.0%} of samples vs {shares[1]:.0%}"
            rows.append({"name": f"RL: (problem, seed) pairs {ref}-RL solves at N = {cov['n']} and {c['reward']}-RL "
                                 "does not (lost), and the reverse", "value": cov["lost"] - cov["gained"], "here": here,
                         "paper": "more problems solved at large N (Fig. 8)"})
    start = rl.get("start")
    if start:  # absent in runs from before the start policy was evaluated
        n = max(start["pass_at"], key=lambda k: int(k.split("@")[1]))
        names = [rl["reference"], *(c["reward"] for c in rl["comparisons"])]
        start_policy = "start policy (RFT)" if rl["rft"] else "start policy (SFT)"  # no RFT: RL starts from the sft stage
        rows.append({"name": f"RL: Pass@{n.split('@')[1]} of the {start_policy}, then after "
                             + " and ".join(f"{r}-RL" for r in names),
                     "value": rl["rewards"][names[-1]]["pass_at"][n] - start["pass_at"][n],
                     "here": f"{start['pass_at'][n]:.3f} → " + ", ".join(f"{rl['rewards'][r]['pass_at'][n]:.3f}"
                                                                   for r in names),
                     "paper": "ORM-RL falls below the SFT policy for N ≥ 64; PAV-RL does not (Fig. 8a)"})
    return rows


def stage_rows(stages: list[tuple[str, str]], summaries: dict[str, Any],
               timings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (folder name, title) of the pipeline: time, reused or not, a one-line result
    (``summaries``: each stage's summary record; a skipped stage's: why)."""

    def result(name: str, s: Any) -> str:
        if isinstance(s, str):  # skipped
            return s
        if name == "sft":
            q = s.heldout
            text = f"pass@1 {_num(q['pass@1'])}, pass@64 {_num(q.get('pass@64'))}"
            return text if s.gate["passed"] is None else text + (
                " (gate passed)" if s.gate["passed"] else " (GATE MISSED: " + "; ".join(s.gate["reasons"]) + ")")
        if name == "labels":
            return (f"{s.records} prefixes, {s.rollouts} rollouts, {s.tokens_generated / 1e6:.2f} M tokens "
                    f"generated; mean absolute Â^π {_num(s.mean_abs_adv)}")
        if name == "prover-labels":
            return (f"{s.records} prefixes, {s.rollouts} rollouts of {s.prover_id}; mean Q̂^μ {_num(s.mean_q)}, "
                    f"mean absolute Â^μ {_num(s.mean_abs_adv)}")
        if name == "verifiers":
            return "; ".join(f"{VERIFIER_NAMES[v]} held-out MSE {_num(s[v].heldout_mse, 4)} (noise floor "
                             f"{_num(s[v].heldout_noise_floor, 4)})" for v in ("pqv", "orm", "prover-pav") if v in s)
        if name == "pqv-eval":
            auc = s.auroc_complete
            return f"PQV MSE {s.mse:.4f} vs constant {s.mse_constant:.4f}; outcome AUROC " + \
                ("—" if auc is None else f"{auc:.3f}")
        if name == "search":
            top = lambda m: max(p["accuracy"] for p in s.curves[m])  # noqa: E731
            return (f"best accuracy: ORM best-of-N {top('orm'):.3f}, PQV beam {top('pqv_beam'):.3f}, "
                    f"PAV beam {top('pav_beam'):.3f} (α = {s.alpha:g})")
        if name == "rl":
            return "; ".join(f"{r} final {d['final_mean']:.3f} ± {d['final_sd']:.3f}" for r, d in s.rewards.items())
        return ""

    rows = []
    for name, title in stages:
        t = timings.get(name, {})
        rows.append({"name": name, "title": title, "seconds": t.get("seconds"), "cached": t.get("cached", False),
                     "time": _time(t.get("seconds")) + (" (earlier run)" if t.get("cached") else ""),
                     "result": result(name, summaries[name])})
    return rows


# ------------------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_main(search: dict[str, Any], rl: dict[str, Any], path: Path) -> None:
    """Search accuracy vs compute (left) and RL accuracy vs samples (right): the paper's two headlines."""
    from pav.rl.report import draw_accuracy
    from pav.search.report import LABELS

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    styles = {"orm": ("C0", "o", "-"), "pqv_beam": ("C2", "D", "--"), "pav_beam": ("C3", "*", "-")}
    for name, (color, marker, line) in styles.items():
        pts = search["curves"][name]
        left.errorbar([p["generated"] for p in pts], [p["accuracy"] for p in pts], yerr=[p["accuracy_se"] for p in pts],
                      color=color, marker=marker, linestyle=line, capsize=2, markersize=9 if marker == "*" else 5,
                      label=LABELS[name] + ("" if name != "pav_beam" else f" (α = {search['alpha']:g}" +
                                            (": the same search as PQV beam)" if search["alpha"] == 0 else ")")))
    pa = search["pass_at"]
    left.plot([p["generated"] for p in pa], [p["accuracy"] for p in pa], color="0.5", linestyle="--",
              label="Pass@N (ceiling)")
    left.set_xscale("log", base=2)
    left.set_xlabel("compute: policy tokens generated per problem (log2)")
    left.set_ylabel(f"accuracy on {search['problems']} held-out problems")
    left.set_title(f"Test-time search, N = {search['ns'][0]} … {search['ns'][-1]} (± s.e.)", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="upper left")
    draw_accuracy(right, rl)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_labels(stats: dict[str, Any], path: Path) -> None:
    """Q̂^π histogram, Â^π and Â^μ histograms, and mean Â by step kind (± s.e.)."""
    plt = _pyplot()
    kinds = [k for k in STEP_KINDS if k in stats["by_kind_base"]]  # none: the task's checker names no kinds of step
    fig, axes = plt.subplots(1, 3 if kinds else 2, figsize=(14 if kinds else 9.5, 4.2))
    edges = np.array(stats["q_base"]["edges"])
    axes[0].bar(edges[:-1], stats["q_base"]["hist"], width=np.diff(edges), align="edge", color="C0", edgecolor="w")
    axes[0].set_yscale("log")
    axes[0].set_xlabel(r"Monte-Carlo $\hat{Q}^\pi$ of a prefix")
    axes[0].set_ylabel("labelled prefixes (log)")
    axes[0].set_title(f"{stats['prefixes']} prefixes, mean {stats['q_base']['mean']:.3f}", fontsize=10)
    adv_edges = np.array(stats["adv_edges"])
    centers = (adv_edges[:-1] + adv_edges[1:]) / 2
    w = (adv_edges[1] - adv_edges[0]) / 2
    axes[1].bar(centers - w / 2, stats["adv_base"]["hist"], width=w, color="C0",
                label=rf"$\hat{{A}}^\pi$ (mean |·| {stats['adv_base']['mean_abs']:.3f})")
    axes[1].bar(centers + w / 2, stats["adv_prover"]["hist"], width=w, color="C3",
                label=rf"$\hat{{A}}^\mu$, μ = Bo{stats['k']} (mean |·| {stats['adv_prover']['mean_abs']:.3f})")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("advantage of the step ending a prefix (Eq. 2)")
    axes[1].set_ylabel("steps (log)")
    axes[1].set_title("progress under the base policy and the prover", fontsize=10)
    axes[1].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
    if kinds:
        _plot_kinds(axes[2], stats, kinds)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_kinds(ax, stats: dict[str, Any], kinds: list[str]) -> None:
    x = np.arange(len(kinds))
    for off, key, color, label in ((-0.2, "by_kind_base", "C0", r"$\hat{A}^\pi$"),
                                   (0.2, "by_kind_prover", "C3", rf"$\hat{{A}}^\mu$ (Bo{stats['k']})")):
        d = stats[key]
        ax.bar(x + off, [d[k]["mean"] for k in kinds], width=0.4, color=color, label=label,
               yerr=[d[k]["se"] or 0.0 for k in kinds], capsize=2)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.set_xticks(x, [k.replace("_", " ") for k in kinds], rotation=25, fontsize=8)
    ax.set_ylabel("mean advantage (± s.e.)")
    ax.set_title("mean advantage by the kind of step (task's checker)", fontsize=10)
    ax.legend(fontsize=8)


# ------------------------------------------------------------------------------------- writing


def write_report(cfg, root: Path, stages: list[tuple[str, str]], summaries: dict[str, Any],
                 timings: dict[str, dict[str, Any]]) -> DemoSummary:
    """report.md, report.html and the demo's figures; returns the summary (the caller writes summary.json).
    ``stages``: (folder name, title) of each stage in pipeline order; ``summaries``: each stage's
    summary record (`pav.demo.pipeline.STAGES`). `headline` and the figures read the search and RL
    summaries as the JSON their files hold."""
    sft, lab, search, rl = summaries["sft"], summaries["labels"], summaries["search"], summaries["rl"]
    search_json, rl_json = summary_fields(search), summary_fields(rl)
    from pav.tasks.build import build_task

    task = build_task(cfg.task, check=False)
    labels = label_statistics(cfg, task, root, lab)
    plot_main(search_json, rl_json, root / "demo_main.png")
    plot_labels(labels, root / "labels.png")
    summary = {
        "stages": stage_rows(stages, summaries, timings),
        "total_seconds": sum(t["seconds"] for t in timings.values() if t.get("seconds") is not None),
        "headline": headline(search_json, rl_json),
        "base_policy": sft.heldout | {"gate": sft.gate},
        "labels": {"records": lab.records, "prefixes": lab.prefixes, "rollouts": lab.rollouts,
                   "tokens_generated": lab.tokens_generated, "tokens_prompt": lab.tokens_prompt, "mean_q": lab.mean_q,
                   "mean_abs_adv": lab.mean_abs_adv, **labels},
        "verifiers": {name: summary_fields(v) for name, v in summaries["verifiers"].items()},
        "calibration": summary_fields(summaries["pqv-eval"]),
        "search": {k: search_json[k] for k in ("alpha", "alpha_chosen_by", "k", "problems", "val_problems", "ns",
                                               "curves", "pass_at", "headline", "checks", "alpha_sweep")},
        "rl": rl_json,
        "settings": flatten(cfg),
    }
    text = markdown_report(cfg, summary, task)
    (root / "report.md").write_text(text, encoding="utf-8")
    (root / "report.html").write_text(html_report(text, root), encoding="utf-8")
    return DemoSummary(**summary)


def markdown_report(cfg, s: dict[str, Any], task) -> str:
    q, lab, cal, srch, rl = s["base_policy"], s["labels"], s["calibration"], s["search"], s["rl"]
    total = s["total_seconds"]
    builtin = is_builtin(cfg.task)
    lines = [
        f"# pav demo: rewarding progress on {'the built-in task' if builtin else task.name}", "",
        "One command ran the whole method of Setlur et al. (arXiv 2410.08146) on "
        + ("ModReach-10, a small multi-step task with unrecoverable mistakes and steps that make no progress: "
           "a tiny GPT-2 base policy π" if builtin else
           f"{task.name} with the base policy π fine-tuned from {Path(cfg.sft.init).name}")
        + ", Monte-Carlo progress labels, a process verifier (PQV, whose Best-of-"
        f"{srch['k']} transform gives the PAV's advantages) and an outcome verifier (ORM), then test-time search "
        "and online RL with each. Every number below was measured in this run "
        f"({_time(total)} of stage time); `summary.json` holds them all.", "",
        "![the two headlines](demo_main.png)", "",
        "## Headline: measured here beside the paper", "",
        "| measured | here | paper |", "|---|---|---|",
        *[f"| {r['name']} | {r['here']} | {r['paper']} |" for r in s["headline"]], "",
        "The paper's numbers are for Gemma 2B–27B on MATH with a 9B-scale verifier; here everything is a "
        "small model on a CPU, so read the table as a measurement of this run, not as a reproduction.", "",
        "## The pipeline", "",
        "| stage | time | result |", "|---|---|---|",
        *[f"| {r['title']} (`{r['name']}/`) | {r['time']} | {r['result']} |" for r in s["stages"]], "",
        "Key settings (all of them: `config.toml`):", "",
        "- task: " + (f"ModReach, modulus {task.cfg.modulus}, {task.cfg.n_ops} operations, distance "
                      f"{task.cfg.d_min}–{task.cfg.d_max}" if builtin else
                      task.name + "".join(f", {k} = {v}" for k, v in cfg.task.options.items())),
        "- base policy: " + (f"{Path(cfg.sft.init).name}" if cfg.sft.init else
                             f"GPT-2, {cfg.sft.model.n_layer} layers × {cfg.sft.model.n_embd} wide")
        + f", {cfg.sft.steps} SFT steps of batch {cfg.sft.batch_size}",
        f"- labels: {cfg.label.problems} training problems, {cfg.label.n_cov} seed solutions each, "
        f"{cfg.label.n_mc} rollouts per prefix; prover μ = Best-of-{srch['k']}(π)",
        f"- verifiers: PQV {cfg.verifier.steps} steps of batch {cfg.verifier.batch_size}, lr {cfg.verifier.lr:g}; "
        f"ORM {cfg.orm_verifier.steps} steps of batch {cfg.orm_verifier.batch_size}, lr {cfg.orm_verifier.lr:g}; "
        f"{cfg.heldout_fraction:.0%} of labelled problems held out",
        f"- search: {srch['problems']} test and {srch['val_problems']} validation problems, N ∈ {srch['ns']}, "
        f"C = {cfg.search.candidates} candidates per beam prefix, α = {srch['alpha']:g} ({srch['alpha_chosen_by']}"
        + (f" at beam width {cfg.search.alpha_width}{_alpha_margin(srch)})" if cfg.search.alpha is None else ")"),
        f"- RL: {rl['iterations']} iterations × {rl['samples_per_iteration']} samples, seeds {rl['seeds']}, "
        f"α = {rl['alpha']:g}, baseline {rl['baseline']}, A^μ "
        + (f"from the learned PAV of the task's noisy expert (`prover-pav/`, trained on {cfg.prover_label.problems} "
           f"problems × {cfg.prover_label.n_cov} seed solutions × {cfg.prover_label.n_mc} expert rollouts per prefix)"
           if rl.get("prover") else f"from the PQV, μ = Best-of-{rl['k']}(π₀)"), "",
        "## Base policy", "",
        "| pass@1 | pass@8 | pass@64 | mean steps | quality gate |", "|---|---|---|---|---|",
        f"| {_num(q['pass@1'])} | {_num(q.get('pass@8'))} | {_num(q.get('pass@64'))} | "
        f"{q['mean_steps']:.2f} | {_gate(q['gate'])} |", "",
        *(["Kinds of steps π writes on held-out problems: " +
           ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in q["step_mix"].items()) + ".", ""]
          if q["step_mix"] else []),
        "## Progress labels", "",
        f"{lab['records']} labelled prefixes from {lab['rollouts']} rollouts: {lab['tokens_generated'] / 1e6:.2f} M "
        f"tokens generated and {lab['tokens_prompt'] / 1e6:.2f} M prompt tokens encoded. Mean Q̂^π "
        f"{_num(lab['mean_q'])}; mean absolute Â^π {lab['adv_base']['mean_abs']:.3f} and Â^μ "
        f"{lab['adv_prover']['mean_abs']:.3f} under μ = Bo{lab['k']}.", "",
        "![labels](labels.png)", "",
        *(["| step kind | n | mean Â^π | mean Â^μ |", "|---|---|---|---|",
           *[f"| {k.replace('_', ' ')} | {lab['by_kind_base'][k]['n']} | {lab['by_kind_base'][k]['mean']:+.3f} | "
             f"{lab['by_kind_prover'][k]['mean']:+.3f} |" for k in STEP_KINDS if k in lab["by_kind_base"]], ""]
          if lab["by_kind_base"] else []),
        "## Verifiers", "",
        "| verifier | held-out MSE | Monte-Carlo noise floor | constant predictor |", "|---|---|---|---|",
        *[f"| {name} | {_num(s['verifiers'][v].get('heldout_mse'), 4)} | "
          f"{_num(s['verifiers'][v].get('heldout_noise_floor'), 4)} | "
          f"{_num(s['verifiers'][v].get('heldout_mse_constant'), 4)} |" for v, name in VERIFIER_NAMES.items()
          if v in s["verifiers"]], "",
        f"The PQV on {cal['prefixes']} held-out prefixes: MSE {cal['mse']:.4f} against Q̂ (noise {cal['mc_noise']:.4f}), "
        "outcome AUROC of the complete solution's value "
        + ("—" if cal["auroc_complete"] is None else f"{cal['auroc_complete']:.3f}") + ".", "",
        "![calibration](pqv-eval/verifier_quality.png)", "",
        "## Test-time search", "",
        "![search](search/search_curves.png)", "",
        "| method | " + " | ".join(f"N={n}" for n in srch["ns"]) + " |", "|---|" + "---|" * len(srch["ns"]),
    ]
    from pav.search.report import LABELS

    for name, pts in srch["curves"].items():
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{p['accuracy']:.3f}" for p in pts) + " |")
    lines.append("| Pass@N | " + " | ".join(f"{p['accuracy']:.3f}" for p in srch["pass_at"]) + " |")
    lines += ["", "![sweeps](search/search_sweeps.png)", "",
              "## Online RL", "", "![rl](rl/rl_curves.png)", "",
              "| reward | start | final (mean ± sd) | KL to start | entropy | steps / solution |",
              "|---|---|---|---|---|---|"]
    for r, d in rl["rewards"].items():
        lines.append(f"| {r} | {d['start_accuracy']:.3f} | {d['final_mean']:.3f} ± {d['final_sd']:.3f} | "
                     f"{d['kl_final']:.4f} | {d['entropy_final']:.3f} | {d['steps_per_solution_final']:.2f} |")
    lines += ["", "Each stage's own `report.md` (in `search/`, `rl/`, `pqv-eval/`) has the full tables.", ""]
    return "\n".join(lines)


HTML_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}h1,h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def html_report(markdown_text: str, root: Path) -> str:
    """report.md as one HTML file, every image embedded as a data URI (it opens anywhere, alone)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match) -> str:
        src = match.group(1)
        path = root / src
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pav demo report</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n")

