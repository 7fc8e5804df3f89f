"""`pav didactic` end to end: run directory → jobs → summary.json → checks → plots and report.md."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from pav.core.jobs import run_jobs
from pav.core.rundir import mark_complete, start_run
from pav.didactic.experiments import DidacticConfig, DidacticSummary, didactic_jobs, summarize

log = logging.getLogger(__name__)


def run_didactic(cfg: DidacticConfig, out: str | Path | None, overwrite: bool = False,
                 show_progress: bool = True) -> DidacticSummary:
    """Run the stage into a run directory and return its summary (also in summary.json)."""
    run_dir = start_run(out, "didactic", cfg, overwrite)
    start = time.perf_counter()
    results = run_jobs(didactic_jobs(cfg, run_dir), run_dir / "jobs", cfg.workers, show_progress)
    summary = summarize(cfg, results)
    summary["sft_gamma"] = cfg.sft.gamma
    summary["wall_seconds"] = time.perf_counter() - start
    summary["fig3b_reading"] = describe_sweep(summary["fig3b"])
    checks = check_targets(cfg, summary)
    summary["checks"] = checks
    from pav.didactic.report import write_report

    write_report(summary, checks, run_dir)
    record = DidacticSummary(**summary)
    mark_complete(run_dir, record)
    targets = [c for c in checks if c["passed"] is not None]
    log.info("didactic: %d/%d targets met in %.0f s; report: %s", sum(c["passed"] for c in targets), len(targets),
             summary["wall_seconds"], run_dir / "report.md")
    return record


def describe_sweep(fig3b: dict[str, Any], margin: float = 0.5) -> str:
    """Name the shape each sweep shows: where the effective reward beats outcome-only by `margin`."""
    parts = []
    for opt, d in fig3b.items():
        for adv in ("exact", "mc"):
            gammas = np.array(d["gammas"])
            helps = np.array(d[adv]) - d["outcome"] >= margin
            if helps.all():
                shape = "flat: helps at every γ swept"
            elif not helps.any():
                shape = "helps at no γ swept"
            elif helps[0] and not helps[-1]:
                shape = "upper edge only (fails for strong provers)"
            elif helps[-1] and not helps[0]:
                shape = "lower edge only (fails for weak provers)"
            else:
                shape = "inverted U (fails at both ends)" if not helps[0] and not helps[-1] else "mixed"
            parts.append(f"{opt}/{adv} A^μ: {shape}; helps for γ ∈ {{{', '.join(f'{g:g}' for g in gammas[helps])}}}")
    return "Sweep shapes (effective − outcome-only ≥ 0.5): " + "; ".join(parts) + "."


def check_targets(cfg: DidacticConfig, s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value; None values fail (not measured)."""
    a, c, r = s["fig3a"], s["fig3c"], s["remark_3_1"]
    rows = [
        ("Fig 3(a) effective acc @150 (median)", a["effective_acc_at_150"], ">= 0.90", "≈1.0", lambda v: v >= 0.90),
        ("Fig 3(a) effective acc @1000 (median)", a["effective_acc_at_1000"], ">= 0.97", "≈1.0", lambda v: v >= 0.97),
        ("Fig 3(a) outcome-only acc @300 (median)", a["outcome_acc_at_300"], "<= 0.02", "≈0–0.02", lambda v: v <= 0.02),
        ("Fig 3(a) iterations to 0.5: outcome ÷ effective", a["speedup_to_0.5"], ">= 5", "10×", lambda v: v >= 5),
    ]
    for opt, d in s["fig3b"].items():
        for adv in ("exact", "mc"):
            gaps = [x - d["outcome"] for g, x in zip(d["gammas"], d[adv]) if 8 <= g <= 15]
            # the paper's setting is Adam; plain SGD is a reading reported beside it, not a target
            rule = (lambda v: v >= 0.5) if opt == "adam" else None
            rows.append((f"Fig 3(b) {opt}/{adv}: min gain over outcome for γ∈[8,15]",
                         min(gaps) if gaps else None, ">= 0.5" if rule else "reading", "gains only in [8, 15]", rule))
    eff = c.get("effective@100", {}).get("pass_at_n_median")
    rows.append(("Fig 3(c) effective@100 min Pass@N for N>=4", min(eff[1:]) if eff else None, ">= 0.95",
                 "≈0.25 at N=256 (undertrained)", lambda v: v >= 0.95))
    for name in ("sft", "outcome@100"):
        p = c.get(name, {}).get("pass_at_n_median")
        rows.append((f"Fig 3(c) {name} Pass@256", p[-1] if p else None, "<= 0.05", "lower than effective",
                     lambda v: v <= 0.05))
    small = max((m for m in r if float(m) <= 0.01), key=float, default=min(r, key=float))
    rows.append((f"Remark 3.1 Var ratio K=4/K=1 at mean Q^π={small}", r[small].get("ratio_k4_over_k1"),
                 "16 ± 10%", "Ω(K²)", lambda v: abs(v / 16 - 1) <= 0.10))
    if "0.3" in r:
        rows.append(("Remark 3.1 argmax_K distinguishability at mean Q^π=0.3",
                     r["0.3"]["k_maximising_distinguishability"], "4 ± 1", "Bo4 recommended", lambda v: abs(v - 4) <= 1))
    return [{"name": n, "value": v, "target": t, "paper": p,
             "passed": None if f is None else (v is not None and bool(f(v)))} for n, v, t, p, f in rows]


