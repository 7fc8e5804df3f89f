"""Plots and report.md for `pav didactic`, from summary.json alone (the paper, §3.3 and Fig. 3).

Each figure is a PNG in the run directory; `report.md` puts every measured number beside the
paper's and the target it is checked against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PAPER = {
    "fig3a": "effective reward (γ=10) reaches ~100% in ~350 iterations, '10× more sample-efficient'; "
             "outcome-only stays ≈0–0.02",
    "fig3b": "inverted U: gains only for γ ∈ [8, 15], peak ≈0.8–0.95 at γ ≈ 9–11; outcome-only flat ≈0",
    "fig3c": "after 100 iterations the effective-reward policy's Pass@N grows ~5× faster with N "
             "(≈0.25 at N = 256); outcome-only and initial π lower",
    "remark": "BoK gives Ω(K²) distinguishability while Q^π ≪ 1/K, collapsing as Q^{BoK} → 1",
}


READING_3B = """**How to read the sweep.** The table below gives the size of A^μ on responses like the initial
policy's. Under Adam the update of each parameter is normalised by its own gradient scale, so what
matters is the *sign* of A^μ, and that is right at every γ (steps that extend the match of y* gain
value under μ_γ for any γ > 0): the curve comes out flat. Under plain SGD the step is proportional to
A^μ, which shrinks like a power of γ/(γ+14) for weak provers, so the lower edge appears. The upper
edge does not: with 10 positions for a 5-token target, a strong prover still fails from states
that no longer leave enough positions, so steps that waste the last spare position carry
advantages near −1 and steps that keep the match on schedule large positive ones. A strong
prover's advantages are rare but large here, and 128 Monte-Carlo rollouts resolve them too. The
paper's inverted U needs a regime where a strong prover succeeds from almost every state the
policy visits; this horizon does not provide it."""


def write_report(summary: dict[str, Any], checks: list[dict[str, Any]], run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    _plot_fig3a(summary, run_dir / "fig3a_accuracy.png")
    _plot_fig3b(summary, run_dir / "fig3b_prover_strength.png")
    _plot_fig3c(summary, run_dir / "fig3c_pass_at_n.png")
    _plot_remark(summary, run_dir / "remark_3_1_bok.png")
    if summary["q_base"]:
        _plot_q_base(summary, run_dir / "q_base_estimators.png")
    (run_dir / "report.md").write_text(_markdown(summary, checks))


def _plot_fig3a(s: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = s["fig3a"]["curves"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, color in (("effective", "effective reward Q^π + A^μ (γ=10)", "C0"),
                              ("outcome", "outcome only (Q^π)", "C3")):
        curves = np.array(r[key])
        _band(ax, r["eval_iterations"], curves, label, color)
    ax.set(xlabel="RL iteration", ylabel="sampled accuracy", ylim=(-0.02, 1.02),
           title=f"Fig. 3(a): RL with different rewards ({len(r['effective'])} seeds)")
    ax.legend(loc="center right")
    _save(fig, path)


def _band(ax: Any, x: list[int], curves: np.ndarray, label: str, color: str) -> None:
    ax.plot(x, np.median(curves, axis=0), color=color, label=f"{label}, median")
    ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.2, linewidth=0)


def _plot_fig3b(s: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    sweeps = s["fig3b"]
    fig, axes = plt.subplots(1, len(sweeps), figsize=(5.5 * len(sweeps), 4), squeeze=False)
    for ax, (opt, d) in zip(axes[0], sweeps.items()):
        ax.plot(d["gammas"], d["exact"], "o-", label="effective, exact A^μ")
        ax.plot(d["gammas"], d["mc"], "s--", label="effective, Monte-Carlo A^μ")
        ax.axhline(d["outcome"], color="C3", label="outcome only")
        ax.axvline(s["sft_gamma"], color="grey", linestyle=":", label="γ of initial π")
        ax.axvspan(8, 15, color="C2", alpha=0.1, label="paper's helpful range [8, 15]")
        ax.set(xscale="log", xlabel="prover strength γ", ylabel="accuracy averaged over the run",
               ylim=(-0.02, 1.02), title=f"Fig. 3(b) under {opt}")
        ax.legend(fontsize=8)
    _save(fig, path)


def _plot_fig3c(s: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["o-", "s--", "^-.", "v:", "D-", "x--"]
    for i, (name, d) in enumerate(sorted(s["fig3c"].items())):
        for ax in axes:
            ax.plot(d["n"], d["pass_at_n_median"], styles[i % len(styles)], color=f"C{i}", label=name, alpha=0.85)
    axes[0].set(ylim=(-0.02, 1.02), ylabel="Pass@N (median over seeds)", title="Fig. 3(c): Pass@N after RL")
    axes[1].set(yscale="log", ylabel="Pass@N (log scale)", title="the same, log scale (tiny probabilities)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N (samples)")
        ax.legend(fontsize=8)
    _save(fig, path)


def _plot_remark(s: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for mean, d in s["remark_3_1"].items():
        ks = np.array(d["ks"])
        a1.plot(ks, np.array(d["distinguishability"]) / d["distinguishability"][0], "o-", label=f"mean Q^π = {mean}")
        a2.plot(ks, np.array(d["alignment"]) / d["alignment"][0], "o-", label=f"mean Q^π = {mean}")
    ks = np.array(s["remark_3_1"][next(iter(s["remark_3_1"]))]["ks"])
    a1.plot(ks, ks**2.0, "k:", label="K²")
    a2.plot(ks, ks * 1.0, "k:", label="K")
    a1.set(xscale="log", yscale="log", xlabel="K of the Best-of-K prover",
           ylabel="distinguishability / its K=1 value", title="E_s Var_π[A^BoK]")
    a2.set(xscale="log", yscale="log", xlabel="K of the Best-of-K prover",
           ylabel="alignment / its K=1 value", title="E_s E_π[A^BoK · A^π]")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    _save(fig, path)


def _plot_q_base(s: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (mode, d), color in zip(s["q_base"].items(), ("C0", "C1")):
        label = f"Q^π from {mode} ({d['seconds_per_iteration'] * 1e3:.0f} ms/iteration)"
        _band(ax, d["eval_iterations"], np.array(d["accuracy"]), label, color)
    ax.set(xlabel="RL iteration", ylabel="sampled accuracy", ylim=(-0.02, 1.02),
           title="Effective-reward RL: Q^π estimators")
    ax.legend(fontsize=8)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _verdict(passed: bool | None) -> str:
    return "reading" if passed is None else ("yes" if passed else "**no**")


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


def _markdown(s: dict, checks: list[dict[str, Any]]) -> str:
    lines = ["# pav didactic: the planted sub-sequence laboratory", "",
             f"Wall time: {s['wall_seconds']:.0f} s. Every number below is in `summary.json`.", "",
             "## Targets", "", "| figure | measured | target | paper | pass |", "|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['name']} | {_fmt(c['value'])} | {c['target']} | {c['paper']} | "
                     f"{_verdict(c['passed'])} |")
    lines += ["", "## Fig. 3(a) — RL with different rewards", "", f"Paper: {PAPER['fig3a']}.", "",
              "![Fig. 3(a)](fig3a_accuracy.png)", "",
              f"Iterations to reach 0.5 accuracy per seed: {s['fig3a']['iterations_to_0.5']}.", "",
              "## Fig. 3(b) — prover strength", "", f"Paper: {PAPER['fig3b']}.", "",
              "![Fig. 3(b)](fig3b_prover_strength.png)", "", "| optimiser | reading | " +
              " | ".join(f"γ={g:g}" for g in next(iter(s["fig3b"].values()))["gammas"]) + " | outcome |",
              "|---|---|" + "---|" * (len(next(iter(s["fig3b"].values()))["gammas"]) + 1)]
    for opt, d in s["fig3b"].items():
        for adv in ("exact", "mc"):
            lines.append(f"| {opt} | {adv} | " + " | ".join(f"{a:.2f}" for a in d[adv]) + f" | {d['outcome']:.2f} |")
    lines += ["", s.get("fig3b_reading", ""), "", READING_3B, "", "| γ | mean abs(A^μ) | share of steps with abs(A^μ) ≥ 0.1 |",
              "|---|---|---|"]
    lines += [f"| {r['gamma']:g} | {r['mean_abs_adv']:.2e} | {r['share_abs_adv_ge_0.1']:.3f} |" for r in s["adv_scale"]["rows"]]
    lines += ["", "## Fig. 3(c) — Pass@N", "", f"Paper: {PAPER['fig3c']}.", "",
              "![Fig. 3(c)](fig3c_pass_at_n.png)", "", "| policy | p(success) per seed | samples | Pass@4 | Pass@256 |",
              "|---|---|---|---|---|"]
    for name, d in sorted(s["fig3c"].items()):
        p = ", ".join(f"{x:.2e}" for x in d["success_probability"])
        n = f"{min(d['samples'])}" + (f"–{max(d['samples'])}" if min(d["samples"]) != max(d["samples"]) else "")
        lines.append(f"| {name} | {p} | {n} | {d['pass_at_n_median'][1]:.3f} | "
                     f"{d['pass_at_n_median'][-1]:.3f} |")
    lines += ["", "## Remark 3.1 — Best-of-K provers", "", f"Paper: {PAPER['remark']}.", "",
              "![Remark 3.1](remark_3_1_bok.png)", ""]
    for mean, d in s["remark_3_1"].items():
        lines.append(f"- mean Q^π = {mean}: Var ratio K=4 / K=1 = {_fmt(d.get('ratio_k4_over_k1'))} "
                     f"(K² = 16); K maximising distinguishability = {d['k_maximising_distinguishability']}.")
    if s["q_base"]:
        lines += ["", "## Q^π estimator: trajectory return vs Monte-Carlo rollouts", "",
                  "![Q^π estimators](q_base_estimators.png)", ""]
        for mode, d in s["q_base"].items():
            final = np.median(np.array(d["accuracy"])[:, -1])
            lines.append(f"- {mode}: final median accuracy {final:.3f}, {d['seconds_per_iteration'] * 1e3:.0f} ms/iteration")
    return "\n".join(lines) + "\n"
