"""`pav rl-compare` figures and report.md, from the comparison's summary only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS = {"orm": "ORM-RL (outcome only)", "pav": "PAV-RL (outcome + α·A^μ)", "pqv": "outcome + α·Q^π",
          "prover-q": "outcome + α·Q^μ (App. G)"}
PLOT_LABELS = {"orm": "ORM-RL (outcome only)", "pav": r"PAV-RL (outcome + $\alpha A^\mu$)",
               "pqv": r"outcome + $\alpha Q^\pi$", "prover-q": r"outcome + $\alpha Q^\mu$ (App. G)"}

NOT_MEASURABLE = "not measurable at this size"


@dataclass(frozen=True)
class RLCompareSummary:
    """``summary.json`` of a `pav rl-compare` run (`pav.rl.compare.summarize`); nested values are plain JSON."""
    STAGES = ("rl-compare",)
    reference: str  # the first reward (ORM-RL)
    seeds: list[int]
    alpha: float
    k: int
    verifier: str
    prover: str
    baseline: str
    rft: bool  # the start policy was rejection-fine-tuned (`pav.rl.stage.runs_rft`); the report says "(RFT)" only then
    iterations: int
    samples_per_iteration: int
    rewards: dict[str, Any]  # reward -> curves over seeds, final accuracy, Pass@N, KL, entropy
    start: dict[str, Any] | None  # the start policy's Pass@N (None with start_pass_at off)
    comparisons: list[Any]  # each reward against the reference: sample efficiency, gain, coverage
    checks: list[Any]
    paper: dict[str, str]


def ratio_text(comparison: dict, digits: int = 2) -> str:
    """A comparison's sample-efficiency ratio as text; "not measurable at this size" when the
    reference arm ends at accuracy 0, "not reached" when the other arm never reaches it."""
    value = comparison["sample_efficiency"]
    if value is not None:
        return f"{value:.{digits}f}×"
    return "not reached" if comparison.get("measurable", True) else NOT_MEASURABLE


def start_name(summary: dict[str, Any]) -> str:
    """The start policy as the report names it: "(RFT)" only when RL started from a rejection-fine-tuned policy."""
    return "start policy (RFT)" if summary["rft"] else "start policy"


def draw_accuracy(ax, summary: dict[str, Any]) -> None:
    """Held-out accuracy against training samples: mean over seeds, band min … max, one line per reward."""
    for i, (r, d) in enumerate(summary["rewards"].items()):
        ax.plot(d["samples"], d["mean"], color=f"C{i}", marker="o", markersize=3,
                label=f"{PLOT_LABELS.get(r, r)}: final {d['final_mean']:.3f} ± {d['final_sd']:.3f}")
        ax.fill_between(d["samples"], d["min"], d["max"], color=f"C{i}", alpha=0.15)
    ax.set_xlabel("training samples (solutions sampled)")
    ax.set_ylabel("held-out accuracy (pass@1)")
    ax.set_title(f"RL from the same {'RFT ' if summary['rft'] else ''}start; mean of {len(summary['seeds'])} seeds, "
                 "band = min..max", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    draw_accuracy(left, summary)
    for i, (r, d) in enumerate(summary["rewards"].items()):
        ns = [int(k.split("@")[1]) for k in d["pass_at"]]
        right.plot(ns, list(d["pass_at"].values()), color=f"C{i}", marker="o", label=PLOT_LABELS.get(r, r))
    if summary.get("start"):
        pa = summary["start"]["pass_at"]
        right.plot([int(k.split("@")[1]) for k in pa], list(pa.values()), color="0.5", linestyle="--", marker=".",
                   label=f"{start_name(summary)}, before RL")
    right.set_xscale("log", base=2)
    right.set_xlabel("N (log2)")
    right.set_ylabel("held-out Pass@N after RL")
    right.set_title("Pass@N of the final policies (mean over seeds)", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summary: dict[str, Any], run_dir: Path) -> None:
    plot_curves(summary, run_dir / "rl_curves.png")
    ref = summary["reference"]
    prover = (f"Bo{summary['k']} of the task's expert, exact values (no verifier)" if summary.get("verifier") == "expert"
              else f"Bo{summary['k']}(μ) through the prover verifier {summary['prover']}" if summary.get("prover")
              else f"Bo{summary['k']}(π₀) through the PQV")
    lines = ["# Online RL: outcome rewards against dense progress rewards", "",
             f"{summary['iterations']} iterations × {summary['samples_per_iteration']} samples, seeds "
             f"{summary['seeds']}, α = {summary['alpha']:g}, prover {prover}, baseline {summary['baseline']}.", "",
             "![curves](rl_curves.png)", "",
             "| reward | start | final (mean ± sd over seeds) | KL to start | entropy | steps / solution |",
             "|---|---|---|---|---|---|"]
    for r, d in summary["rewards"].items():
        lines.append(f"| {LABELS.get(r, r)} | {d['start_accuracy']:.3f} | {d['final_mean']:.3f} ± {d['final_sd']:.3f} | "
                     f"{d['kl_final']:.4f} | {d['entropy_final']:.3f} | {d['steps_per_solution_final']:.2f} |")
    lines += ["", f"| against {LABELS.get(ref, ref)} | here | paper | goal |", "|---|---|---|---|"]
    for c in summary["comparisons"]:
        eff = ratio_text(c)
        lines.append(f"| {LABELS.get(c['reward'], c['reward'])}: sample efficiency | {eff} | "
                     f"{summary['paper']['sample_efficiency']} | ≥ 6× |")
        lines.append(f"| {LABELS.get(c['reward'], c['reward'])}: final accuracy gain | {100 * c['gain']:+.1f} ± "
                     f"{100 * c['gain_sd']:.1f} points | {summary['paper']['gain']} | ≥ +6 |")
    first = next(iter(summary["rewards"].values()))
    ns = list(first["pass_at"])
    lines += ["", "| Pass@N after RL | " + " | ".join(ns) + " |", "|---|" + "---|" * len(ns)]
    for r, d in summary["rewards"].items():
        lines.append(f"| {LABELS.get(r, r)} | " + " | ".join(f"{d['pass_at'][n]:.3f}" for n in ns) + " |")
    if summary.get("start"):
        lines.append(f"| {start_name(summary)}, before RL | " +
                     " | ".join(f"{summary['start']['pass_at'][n]:.3f}" for n in ns) + " |")
    lines += start_lines(summary)
    lines += coverage_lines(summary)
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_lines(summary: dict[str, Any]) -> list[str]:
    """What RL did to coverage: each reward's final policies against the start policy, both sampled
    the same way on the same problems (the paper: ORM-RL falls below the SFT policy for N >= 64)."""
    start = summary.get("start")
    if not start:
        return []
    out = ["", f"**Against the start policy.** Its most frequent solution is {100 * start['top_share']:.0f}% of a "
               "problem's samples."]
    for r, d in summary["rewards"].items():
        cov, gain = d.get("coverage_vs_start"), d["pass_at_vs_start"]
        out[-1] += (f" {LABELS.get(r, r)}: Pass@N {', '.join(f'{100 * g:+.1f}' for g in gain.values())} points "
                    f"(N = {', '.join(k.split('@')[1] for k in gain)})")
        if cov:
            out[-1] += (f"; at N = {cov['n']}, of {cov['problems']} (problem, seed) pairs, lost {cov['lost']} that the "
                        f"start solves, gained {cov['gained']} that it does not")
        out[-1] += "."
    return out


def coverage_lines(summary: dict[str, Any]) -> list[str]:
    """Where Pass@N is lost: problems the reference's final policies solve and another reward's do
    not (`pav.rl.compare.coverage`), with the policies' most frequent solutions there."""
    ref = summary["reference"]
    shares = {r: d.get("top_share") for r, d in summary["rewards"].items()}
    out: list[str] = []
    for c in summary["comparisons"]:
        cov = c.get("coverage")
        if not cov:
            continue
        name, ref_name = LABELS.get(c["reward"], c["reward"]), LABELS.get(ref, ref)
        out += ["", f"**Coverage, {name} against {ref_name}.** Of {cov['problems']} (problem, seed) pairs, "
                    f"{cov['lost']} are solved by some sample of the reference and by none of this policy's, "
                    f"{cov['gained']} the other way round."]
        if shares.get(c["reward"]) is not None and shares.get(ref) is not None:
            out[-1] += (f" The most frequent solution of a problem is {100 * shares[c['reward']]:.0f}% of its samples "
                        f"here, {100 * shares[ref]:.0f}% for the reference (mean over problems): the higher, the "
                        "more the policy has collapsed onto one solution.")
        if cov["examples"]:
            out += ["", "| problem (seed) | reference correct | reference's most frequent solution | this policy's "
                        "most frequent solution (share) |", "|---|---|---|---|"]
            for e in cov["examples"]:
                out.append(f"| `{e['question']}` ({e['seed']}) | {e['reference_correct']}/{e['samples']} | "
                           f"`{e['reference_top']}` | `{e['top']}` ({100 * e['top_share']:.0f}%) |")
    return out
