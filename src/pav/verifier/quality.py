"""How good a verifier is, from prediction rows alone (no model runs here) (the paper, App. C / Fig. 10).

Input rows, one per held-out labelled prefix: solution_id, prefix_len, n_correct, n_rollouts (the
Monte-Carlo label), pred (the verifier's value), adv (its Best-of-K prover advantage of the step
that ends the prefix; NaN for the question-only prefix) and outcome (the solution's checked answer).

- MSE of pred against Q̂ and the irreducible Monte-Carlo noise, mean Q̂(1 − Q̂)/n (the MSE a perfect
  predictor of the true value would still show against Q̂, up to the n/(n − 1) bias factor);
- calibration: Q̂ averaged within bins of pred (a reliability diagram);
- AUROC of predicting the solution's final outcome from the prefix value at each step position,
  and from the value of the complete solution (rows with ``complete``: the verifier as an ORM);
- Fig. 10: the same AUROC for the effective reward Q̂^π + α·Â^μ of the step against Q̂^π alone;
- when rows carry ``exact``, the true value of the prefix (labels whose rollouts came from the
  built-in task's expert, `pav.rollouts.expert`), the error against the truth rather than against
  noisy labels: RMSE and correlation of the values and of the step advantages (consecutive
  prefixes of a solution), and how often an advantage has the sign of the true one.
AUROC is the Mann–Whitney statistic with ties counted half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """P(score of a positive > score of a negative) + ½ P(tie); None without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks over ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


@dataclass(frozen=True)
class QualitySummary:
    """``summary.json`` of a `pav eval-verifier` run on held-out labels: `verifier_quality`'s numbers."""
    STAGES = ("eval-verifier",)
    prefixes: int
    mse: float | None  # against Monte-Carlo Q̂ (None: no prefix with more than one rollout)
    mc_noise: float | None
    mse_constant: float | None
    calibration: list[Any]  # reliability diagram: pred, target, count per bin
    auroc_complete: float | None
    alpha: float
    exact: dict[str, Any] | None  # against the expert's exact values (expert-labelled runs only)
    auroc_by_position: list[Any]
    fig10: list[Any]


def calibration(pred: np.ndarray, target: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per bin of pred: mean pred, mean target, count (empty bins left out)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    return [{"pred": float(pred[which == b].mean()), "target": float(target[which == b].mean()),
             "count": int((which == b).sum())} for b in range(bins) if (which == b).any()]


def verifier_quality(rows: Sequence[dict[str, Any]], alpha: float, max_position: int = 8) -> dict[str, Any]:
    """Every number of the report from prediction rows (see the module docstring)."""
    q = np.array([r["n_correct"] / r["n_rollouts"] for r in rows])
    n = np.array([r["n_rollouts"] for r in rows], dtype=np.float64)
    pred = np.array([r["pred"] for r in rows])
    mc = n > 1  # the complete solution's label is its outcome, not a Monte-Carlo estimate
    out: dict[str, Any] = {
        "prefixes": len(rows),
        "mse": float(np.mean((pred[mc] - q[mc]) ** 2)) if mc.any() else None,
        "mc_noise": float(np.mean(q[mc] * (1 - q[mc]) / n[mc])) if mc.any() else None,
        "mse_constant": float(np.mean((q[mc].mean() - q[mc]) ** 2)) if mc.any() else None,
        "calibration": calibration(pred[mc], q[mc]) if mc.any() else [],
        "auroc_complete": auroc([r["pred"] for r in rows if r.get("complete")],
                                [r["outcome"] for r in rows if r.get("complete")]),
        "alpha": alpha,
    }
    out["exact"] = exact_agreement(rows) if any("exact" in r for r in rows) else None
    out["auroc_by_position"], out["fig10"] = [], []
    for h in range(max_position + 1):
        at = [r for r in rows if r["prefix_len"] == h]
        if not at:
            continue
        y = [r["outcome"] for r in at]
        out["auroc_by_position"].append({"prefix_len": h, "n": len(at), "auroc": auroc([r["pred"] for r in at], y)})
        if h >= 1:
            eff = [r["pred"] + alpha * r["adv"] for r in at]
            out["fig10"].append({"prefix_len": h, "n": len(at), "auroc_q": auroc([r["pred"] for r in at], y),
                                 "auroc_effective": auroc(eff, y)})
    return out


def exact_agreement(rows: Sequence[dict[str, Any]], min_adv: float = 0.01) -> dict[str, Any]:
    """Predicted against exact values (rows with ``exact``) and the same for step advantages
    V(prefix h) − V(prefix h − 1) of one solution; the sign counts steps whose |exact| ≥ ``min_adv``."""
    have = [r for r in rows if "exact" in r]
    pred, exact = (np.array([r[k] for r in have], dtype=np.float64) for k in ("pred", "exact"))
    by_key = {(r["solution_id"], r["prefix_len"]): r for r in have}
    pairs = [(r["pred"] - by_key[key]["pred"], r["exact"] - by_key[key]["exact"]) for r in have
             if (key := (r["solution_id"], r["prefix_len"] - 1)) in by_key]
    adv_pred, adv_exact = (np.array(x, dtype=np.float64) for x in zip(*pairs)) if pairs else (np.zeros(0),) * 2
    moved = np.abs(adv_exact) >= min_adv
    return {"prefixes": len(have), "rmse_value": _rmse(pred, exact), "corr_value": _corr(pred, exact),
            "steps": len(pairs), "rmse_adv": _rmse(adv_pred, adv_exact), "corr_adv": _corr(adv_pred, adv_exact),
            "sign_adv": float(np.mean(np.sign(adv_pred[moved]) == np.sign(adv_exact[moved]))) if moved.any() else None,
            "sd_adv_exact": float(adv_exact.std()) if pairs else None}


def _rmse(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.sqrt(np.mean((a - b) ** 2))) if len(a) else None


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 1 and a.std() > 0 and b.std() > 0 else None


def plot_quality(quality: dict[str, Any], path: Any) -> None:
    """Reliability diagram, AUROC by position, and Fig. 10 (effective reward vs Q^π) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    cal = quality["calibration"]
    a.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    a.scatter([c["pred"] for c in cal], [c["target"] for c in cal], s=[10 + c["count"] / 5 for c in cal],
              label="held-out bins (size ∝ count)")
    a.set(xlabel="predicted value", ylabel="Monte-Carlo Q̂ (bin mean)", xlim=(0, 1), ylim=(0, 1),
          title=f"Calibration (MSE {quality['mse']:.4f}, MC noise {quality['mc_noise']:.4f})")
    a.legend(fontsize=8)
    pos = [r["prefix_len"] for r in quality["auroc_by_position"]]
    b.plot(pos, [r["auroc"] for r in quality["auroc_by_position"]], "o-", label="prefix value Q̂^π")
    f10 = quality["fig10"]
    b.plot([r["prefix_len"] for r in f10], [r["auroc_effective"] for r in f10], "s--",
           label=f"effective reward Q̂^π + {quality['alpha']}·Â^μ of the step")
    b.axhline(0.5, color="grey", linestyle=":", label="chance")
    b.set(xlabel="steps in the prefix", ylabel="AUROC for the final outcome", ylim=(0.0, 1.02),
          title="How early the outcome is predicted (cf. Fig. 10)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
