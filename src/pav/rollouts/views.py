"""Derived views of step-label records: Q̂, confidence intervals, advantages, Best-of-K values.

Labels on disk keep raw counts only; everything here is recomputed from them (the paper, §4.2 and App. D).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pav.core.io import read_parquet
from pav.core.labelrun import label_files
from pav.core.records import StepLabel
from pav.rollouts.estimates import best_of_k, q_hat, wilson_interval


def read_labels(run_dir: str | Path) -> list[StepLabel]:
    """All step labels of a labelling run, shard by shard in order (only finished shards exist)."""
    out: list[StepLabel] = []
    for path in label_files(run_dir):
        out.extend(read_parquet(path, StepLabel))
    return out


def label_arrays(labels: Sequence[StepLabel], k: int | None = None) -> dict[str, np.ndarray]:
    """Per record: q (Q̂, or its Best-of-K transform when `k` is given), Wilson CI, and adv.

    adv[i] = q(prefix_len) − q(prefix_len − 1) of the same solution (Eq. 2): the advantage of the
    step that ends this prefix; NaN for prefix_len 0 or when the previous prefix is not labelled
    (first-pit runs stop at the pit).
    """
    n_correct = np.array([lab.n_correct for lab in labels], dtype=np.int64)
    n_rollouts = np.array([lab.n_rollouts for lab in labels], dtype=np.int64)
    q = q_hat(n_correct, n_rollouts) if len(labels) else np.zeros(0)
    lo, hi = wilson_interval(n_correct, n_rollouts) if len(labels) else (np.zeros(0), np.zeros(0))
    if k is not None:
        q, lo, hi = best_of_k(q, k), best_of_k(lo, k), best_of_k(hi, k)
    index = {(lab.solution_id, lab.prefix_len): i for i, lab in enumerate(labels)}
    adv = np.full(len(labels), np.nan)
    for i, lab in enumerate(labels):
        j = index.get((lab.solution_id, lab.prefix_len - 1))
        if j is not None:
            adv[i] = q[i] - q[j]
    return {"q": q, "ci_low": lo, "ci_high": hi, "adv": adv, "n_correct": n_correct, "n_rollouts": n_rollouts}
