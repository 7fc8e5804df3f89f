"""`pav search` results → summary numbers, two figures and report.md (from job results only).

The reference for the paper's ratios is ORM best-of-N (PAV-as-ORM best-of-N when no ORM was
given). Compute is generated policy tokens per problem (the paper, §4.1 and App. C, `pav.core.compute`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pav.search.compare import efficiency_ratio, gains_at_equal_compute, paired_difference

LABELS = {"orm": "ORM best-of-N", "pav_as_orm": "PAV-as-ORM best-of-N", "majority": "majority vote",
          "weighted_majority": "ORM-weighted majority", "pqv_beam": "PQV beam (α = 0)", "pav_beam": "PAV beam"}
PAPER = {"compute_efficiency": "1.5–5× (Gemma 27B–2B)", "gain": "+8 to +10 points"}


@dataclass(frozen=True)
class SearchSummary:
    """``summary.json`` of a `pav search` run (`summarize`); the nested values are plain JSON."""
    STAGES = ("search",)
    alpha: float  # of PAV beam search
    alpha_chosen_by: str
    alpha_width: int
    k: int
    prover: str
    problems: int
    val_problems: int
    ns: list[int]
    curves: dict[str, Any]  # method -> one point per N: accuracy (± se), compute
    pass_at: list[Any]
    headline: dict[str, Any]  # compute-efficiency ratios, gains at equal compute
    checks: list[Any]
    alpha_sweep: list[Any]
    prover_sweep: dict[str, Any]
    paper: dict[str, str]
GOALS = {"gain": 0.10, "compute_efficiency": 5.0}


def _point(result: dict) -> dict:
    """A beam job's result as a curve point: its per-problem outcomes stay out of the curves."""
    return {k: v for k, v in result.items() if k != "outcomes"}


def _xy(points: list[dict]) -> tuple[list[float], list[float]]:
    return [p["generated"] for p in points], [p["accuracy"] for p in points]


NOT_MEASURABLE = "not measurable at this size"


def efficiency_text(headline: dict, key: str = "compute_efficiency", digits: int = 2) -> str:
    """A compute-efficiency ratio as text: "not measurable at this size" when the reference never
    solves a problem (a ratio to reach accuracy 0 means nothing), "not reached" when the method
    never reaches the reference's accuracy."""
    value = headline[key]
    if value is not None:
        return f"{value:.{digits}f}×"
    return NOT_MEASURABLE if not headline.get("reference_accuracy", 1.0) > 0 else "not reached"


def _safe(fn, *args):
    """A ratio, or None when a curve's compute does not increase with N (it is then undefined)."""
    try:
        return fn(*args)
    except ValueError:
        return None


def alpha_sweep(grid, results: dict[str, dict]) -> list[dict[str, Any]]:
    """One point per α of the validation sweep. Every α searched the same problems with the same
    seeds, so each point also carries ``vs_zero``: its accuracy minus α = 0's, paired by problem
    (mean, SE, problems), where α = 0 is in the grid and the runs kept their outcomes. Separating
    two α values takes that SE, not the points' own, which ignore the pairing."""
    runs = {a: results[f"alpha_{a:g}"] for a in grid}
    zero = runs.get(0.0, {}).get("outcomes")
    return [{**{k: r[k] for k in ("alpha", "accuracy", "accuracy_se", "generated")},
             "vs_zero": None if zero is None or r.get("outcomes") is None
             else paired_difference([r["outcomes"]], [zero])} for r in runs.values()]


def alpha_margin(sweep: list[dict[str, Any]], alpha: float) -> dict | None:
    """The chosen α's paired difference over α = 0 on the validation problems (`alpha_sweep`), or
    None: α = 0 chosen, no α = 0 in the grid, no outcomes, or too few problems for a standard error."""
    d = next((p["vs_zero"] for p in sweep if p["alpha"] == alpha), None)
    return None if alpha == 0 or not d or d["se"] is None else d


def summarize(cfg, alpha: float, results: dict[str, dict]) -> dict[str, Any]:
    a = f"{alpha:g}"
    curves: dict[str, list[dict]] = dict(results["best_of_n"]["curves"])
    curves["pqv_beam"] = [_point(results[f"pqv_beam_N{n}"]) for n in cfg.ns]
    curves["pav_beam"] = [_point(results[f"pav_beam_N{n}_a{a}"]) for n in cfg.ns]
    outcomes = {m: [results[name].get("outcomes") for name in names] for m, names in (
        ("pqv_beam", [f"pqv_beam_N{n}" for n in cfg.ns]), ("pav_beam", [f"pav_beam_N{n}_a{a}" for n in cfg.ns]))}
    ref_name = "orm" if "orm" in curves else "pav_as_orm"
    ref = curves[ref_name]
    pass_at = [{**p, "generated": r["generated"]} for p, r in zip(results["best_of_n"]["pass_at"], ref)]
    gains = _safe(gains_at_equal_compute, _xy(ref), _xy(curves["pav_beam"])) or []
    known = [g for g in gains if g is not None]
    over_pqv = [p["accuracy"] - q["accuracy"] for p, q in zip(curves["pav_beam"], curves["pqv_beam"])]
    best = max(range(len(ref)), key=lambda i: (ref[i]["accuracy"], -i))  # the reference's most accurate N
    ref_best = (_xy(ref)[0][: best + 1], _xy(ref)[1][: best + 1])
    headline = {
        "reference": ref_name,
        "reference_accuracy": ref[-1]["accuracy"],
        "compute_efficiency": _safe(efficiency_ratio, _xy(ref), _xy(curves["pav_beam"])),
        "compute_efficiency_pqv_beam": _safe(efficiency_ratio, _xy(ref), _xy(curves["pqv_beam"])),
        "reference_best": {"n": ref[best]["n"], "accuracy": ref[best]["accuracy"], "generated": ref[best]["generated"]},
        "compute_efficiency_vs_reference_best": _safe(efficiency_ratio, ref_best, _xy(curves["pav_beam"])),
        "compute_efficiency_vs_pqv_beam": _safe(efficiency_ratio, _xy(curves["pqv_beam"]), _xy(curves["pav_beam"])),
        "gains_at_equal_compute": [{"n": p["n"], "gain": g} for p, g in zip(curves["pav_beam"], gains)],
        "mean_gain": float(np.mean(known)) if known else None,
        "max_gain": float(np.max(known)) if known else None,
        "gain_at_equal_n": [{"n": p["n"], "gain": p["accuracy"] - r["accuracy"]} for p, r in zip(curves["pav_beam"], ref)],
        "pav_minus_pqv_beam": [{"n": n, "gain": g} for n, g in zip(cfg.ns, over_pqv)],
        "pav_above_pqv_beam": sum(g > 0 for g in over_pqv) / len(over_pqv),
        "pav_minus_pqv_paired": None if any(o is None for v in outcomes.values() for o in v)  # runs before outcomes were kept
        else paired_difference(outcomes["pav_beam"], outcomes["pqv_beam"]),
    }
    paired = headline["pav_minus_pqv_paired"]
    checks = [
        {"name": "PAV beam vs ORM: mean accuracy gain at equal compute", "value": headline["mean_gain"],
         "target": f">= +{100 * GOALS['gain']:.0f} points", "passed": None if headline["mean_gain"] is None
         else headline["mean_gain"] >= GOALS["gain"]},
        {"name": f"compute to match ORM best-of-{max(cfg.ns)} (ratio)", "value": headline["compute_efficiency"],
         "target": f">= {GOALS['compute_efficiency']:g}x", "passed": headline["compute_efficiency"] is not None
         and headline["compute_efficiency"] >= GOALS["compute_efficiency"]},
        {"name": f"compute to match ORM at its most accurate N = {ref[best]['n']} (ratio)",
         "value": headline["compute_efficiency_vs_reference_best"], "target": f">= {GOALS['compute_efficiency']:g}x",
         "passed": headline["compute_efficiency_vs_reference_best"] is not None
         and headline["compute_efficiency_vs_reference_best"] >= GOALS["compute_efficiency"]},
        {"name": "PAV beam above PQV beam (share of N)", "value": headline["pav_above_pqv_beam"],
         "target": "1.0", "passed": headline["pav_above_pqv_beam"] == 1.0},
        {"name": "PAV beam − PQV beam, mean over N, paired by problem (points; pass: 2 SE above 0)",
         "value": None if paired is None else 100 * paired["mean"],
         "target": "> 2 SE" if paired is None or paired["se"] is None else f"> {200 * paired['se']:.1f}",
         "passed": None if paired is None or paired["se"] is None else paired["mean"] > 2 * paired["se"]},
    ]
    sweep = alpha_sweep(cfg.alpha_grid, results) if cfg.alpha is None else []
    provers = {}
    for k in cfg.prover_ks:
        provers[str(k)] = [results[f"pav_beam_N{n}_a{a}"] if k == cfg.k and n in cfg.ns else
                           results[f"prover_K{k}_N{n}_a{a}"] for n in cfg.prover_ns]
    return {"alpha": alpha, "alpha_chosen_by": "given" if cfg.alpha is not None else "validation sweep",
            "alpha_width": cfg.alpha_width, "k": cfg.k, "prover": cfg.prover, "problems": cfg.problems,
            "val_problems": cfg.val_problems, "ns": list(cfg.ns),
            "curves": curves, "pass_at": pass_at, "headline": headline, "checks": checks,
            "alpha_sweep": sweep, "prover_sweep": provers, "paper": PAPER}


def prover_name(summary: dict) -> str:
    """The prover of PAV beam search in words: whose Best-of-K, and where A^μ came from."""
    base, prover = _prover_base(summary), summary.get("prover", "")
    how = (" (exact A^μ of the task's expert; Q̂^π from the PQV)" if prover == "expert"
           else f" (A^μ from the verifier {prover}; Q̂^π from the PQV)" if prover else "")
    return f"Best-of-{summary['k']}({base}){how}"


def _prover_base(summary: dict) -> str:
    prover = summary.get("prover", "")
    return "π" if not prover else "expert" if prover == "expert" else "μ"


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5))
    styles = {"orm": ("C0", "o", "-"), "pav_as_orm": ("C1", "s", "-"), "majority": ("C7", "^", ":"),
              "weighted_majority": ("C4", "v", ":"), "pqv_beam": ("C2", "D", "--"), "pav_beam": ("C3", "*", "-")}
    for name, points in summary["curves"].items():
        color, marker, line = styles[name]
        x, y = _xy(points)
        ax.errorbar(x, y, yerr=[p["accuracy_se"] for p in points], color=color, marker=marker, linestyle=line,
                    capsize=2, markersize=6 if marker != "*" else 10, label=LABELS[name])
    x, y = _xy(summary["pass_at"])
    ax.plot(x, y, color="0.5", linestyle="--", label="Pass@N (oracle ceiling)")
    beam = summary["curves"]["pav_beam"]
    ax.plot([p["generated"] for p in beam], [p["pass_complete"] for p in beam], color="C3", linestyle=":",
            label="PAV beam, oracle pick among its N complete solutions")
    for p in summary["curves"]["pav_beam"]:
        ax.annotate(f"N={p['n']}", (p["generated"], p["accuracy"]), textcoords="offset points", xytext=(4, -11),
                    fontsize=7, color="C3")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compute: policy tokens generated per problem (log2)")
    ax.set_ylabel(f"accuracy on {summary['problems']} held-out problems")
    h = summary["headline"]
    eff = efficiency_text(h, digits=1)
    gain = "n/a" if h["mean_gain"] is None else f"{100 * h['mean_gain']:+.1f} pts"
    ax.set_title(f"Test-time search, PAV beam with α = {summary['alpha']:g}, prover {prover_name(summary)}\n"
                 f"compute to match ORM best-of-{summary['ns'][-1]}: {eff} less; mean gain at equal compute: {gain}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweeps(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    sweep = summary["alpha_sweep"]
    if sweep:
        left.errorbar([s["alpha"] for s in sweep], [s["accuracy"] for s in sweep],
                      yerr=[s["accuracy_se"] for s in sweep], marker="o", capsize=2, color="C3")
        left.axvline(summary["alpha"], color="0.5", linestyle=":", label=f"chosen α = {summary['alpha']:g}")
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, f"α = {summary['alpha']:g} given; no sweep", ha="center", transform=left.transAxes)
    left.set_xlabel(r"$\alpha$ in $\hat{Q}^\pi + \alpha\,\hat{A}^\mu$")
    left.set_ylabel(f"accuracy ({summary['val_problems']} validation problems)")
    left.set_title(f"α sweep at beam width {summary.get('alpha_width', 16)}", fontsize=9)
    left.grid(alpha=0.3)
    for i, (k, points) in enumerate(summary["prover_sweep"].items()):
        right.plot([p["n"] for p in points], [p["accuracy"] for p in points], marker="o", color=f"C{i}",
                   label=f"Bo{k}" + (f" (K = 1: μ = {_prover_base(summary)})" if k == "1" else ""))
    right.set_xscale("log", base=2)
    right.set_xlabel("beam width N (log2)")
    right.set_ylabel("accuracy (test problems)")
    right.set_title(f"PAV beam search by prover strength μ = Best-of-K({_prover_base(summary)})", fontsize=9)
    right.grid(alpha=0.3)
    if summary["prover_sweep"]:
        right.legend(fontsize=8)
    else:
        right.text(0.5, 0.5, "no prover sweep (prover_ks is empty)", ha="center", transform=right.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _f(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.1f}" if pct else f"{x:.3f}"


def write_report(summary: dict[str, Any], run_dir: Path) -> None:
    plot_curves(summary, run_dir / "search_curves.png")
    plot_sweeps(summary, run_dir / "search_sweeps.png")
    h = summary["headline"]
    eff = efficiency_text(h)
    lines = ["# Test-time search: best-of-N against beam search with the effective reward", "",
             f"{summary['problems']} held-out problems; PAV beam uses α = {summary['alpha']:g} "
             f"({summary['alpha_chosen_by']}) and prover {prover_name(summary)}. "
             "Compute = policy tokens generated per problem.", "",
             "![curves](search_curves.png)", "",
             "| measured | here | paper | goal | met |", "|---|---|---|---|---|",
             f"| compute PAV beam needs to match {LABELS[h['reference']]} at N = {summary['ns'][-1]} | {eff} | "
             f"{PAPER['compute_efficiency']} | ≥ 5× | {'yes' if summary['checks'][1]['passed'] else 'no'} |",
             f"| mean accuracy gain over {LABELS[h['reference']]} at equal compute | "
             f"{_f(h['mean_gain'], True)} points | {PAPER['gain']} | ≥ +10 | "
             f"{'—' if summary['checks'][0]['passed'] is None else ('yes' if summary['checks'][0]['passed'] else 'no')} |",
             f"| N where PAV beam beats PQV beam | {h['pav_above_pqv_beam']:.0%} | all N | all N | "
             f"{'yes' if summary['checks'][3]['passed'] else 'no'} |",
             *_paired_row(h.get("pav_minus_pqv_paired")), "",
             f"The reference is most accurate at N = {h['reference_best']['n']} "
             f"({h['reference_best']['accuracy']:.3f}); PAV beam search "
             + (f"reaches that accuracy with {h['compute_efficiency_vs_reference_best']:.2f}× less compute"
                if h["compute_efficiency_vs_reference_best"] is not None else "does not reach it at any width tried")
             + ". Where a curve falls as N grows, the search over-optimises an imperfect verifier.", "",
             "## Accuracy (± standard error over problems) and compute per problem", "",
             "| method | " + " | ".join(f"N={n}" for n in summary["ns"]) + " |",
             "|---|" + "---|" * len(summary["ns"])]
    for name, points in summary["curves"].items():
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{p['accuracy']:.3f} ± {p['accuracy_se']:.3f}"
                                                          for p in points) + " |")
    lines.append("| Pass@N | " + " | ".join(f"{p['accuracy']:.3f}" for p in summary["pass_at"]) + " |")
    for name in ("pqv_beam", "pav_beam"):
        lines.append(f"| {LABELS[name]}: some complete solution correct | " +
                     " | ".join(f"{p['pass_complete']:.3f}" for p in summary["curves"][name]) + " |")
    lines += ["", "| generated tokens / problem | " + " | ".join(f"N={n}" for n in summary["ns"]) + " |",
              "|---|" + "---|" * len(summary["ns"])]
    for name, points in summary["curves"].items():
        lines.append(f"| {LABELS[name]} | " + " | ".join(f"{p['generated']:.0f}" for p in points) + " |")
    beam = summary["curves"]["pav_beam"][-1]
    lines += ["", f"At N = {beam['n']} PAV beam search also encoded {beam['encoded']:.0f} context tokens and its "
              f"verifier read {beam['scored']:.0f} tokens per problem.", "",
              "## α sweep and prover sweep", "", "![sweeps](search_sweeps.png)", ""]
    if summary["alpha_sweep"]:
        lines += ["| α | " + " | ".join(f"{s['alpha']:g}" for s in summary["alpha_sweep"]) + " |",
                  "|---|" + "---|" * len(summary["alpha_sweep"]),
                  "| accuracy | " + " | ".join(f"{s['accuracy']:.3f}" for s in summary["alpha_sweep"]) + " |"]
        if any(s.get("vs_zero") and s["vs_zero"]["se"] is not None for s in summary["alpha_sweep"]):
            lines.append("| − α = 0, paired by problem (points ± SE) | " + " | ".join(
                paired_points(s.get("vs_zero")) for s in summary["alpha_sweep"]) + " |")
        lines.append("")
    if summary["prover_sweep"]:
        ns = [p["n"] for p in next(iter(summary["prover_sweep"].values()))]
        lines += ["| prover | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        lines += [f"| Bo{k} | " + " | ".join(f"{p['accuracy']:.3f}" for p in pts) + " |"
                  for k, pts in summary["prover_sweep"].items()]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def paired_points(paired: dict | None) -> str:
    """A `paired_difference` in points, "+2.0 ± 1.4"; "—" without one (or without its SE)."""
    if not paired or paired["se"] is None:
        return "—"
    return f"{100 * paired['mean']:+.1f} ± {100 * paired['se']:.1f}"


def _paired_row(paired: dict | None) -> list[str]:
    if not paired or paired["se"] is None:
        return []
    m, se = 100 * paired["mean"], 100 * paired["se"]
    return [f"| PAV beam − PQV beam, mean over N, paired by problem ({paired['problems']} problems) | "
            f"{m:+.1f} ± {se:.1f} points | PAV above | > 2 SE | {'yes' if m > 2 * se else 'no'} |"]
