"""ProcessBench (Zheng et al., 2024): find the earliest wrong step of a solution.

An item holds a problem, its solution's steps and ``label``: the 0-based index of the earliest
erroneous step, or -1 when every step is correct. A value verifier predicts the earliest error
as the first step whose prefix value Q̂^π(s_{i+1}) falls below ``threshold`` (-1 if none does;
steps past the verifier's window count as not below). ProcessBench's metric is the harmonic mean
(F1) of two accuracies: exact earliest-error index on the erroneous items, and "no error" on the
correct ones. Items are read with `pav.tasks.math_data.read_records` (JSON, JSONL, parquet or
a `datasets` split such as ``Qwen/ProcessBench@gsm8k``); nothing in them is evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pav.tasks.math_data import MathDataError, read_records


@dataclass(frozen=True)
class ProcessBenchSummary:
    """``summary.json`` of `pav eval-verifier --processbench`."""
    STAGES = ("eval-processbench",)
    items: int
    threshold: float
    acc_erroneous: float | None
    acc_correct: float | None
    f1: float | None
    n_erroneous: int
    n_correct: int
    f1_by_threshold: dict[str, Any]
    metric: str  # what F1 means, in words


@dataclass(frozen=True)
class ProcessBenchItem:
    item_id: str
    problem: str
    steps: tuple[str, ...]
    label: int  # earliest erroneous step (0-based), -1: none


def read_processbench(source: str) -> list[ProcessBenchItem]:
    """The items of a ProcessBench file or split; a malformed item is an error that names it."""
    items = []
    for i, rec in enumerate(read_records(source)):
        try:
            steps = tuple(str(s) for s in rec["steps"])
            label = int(rec["label"])
            item = ProcessBenchItem(str(rec.get("id", i)), str(rec["problem"]), steps, label)
        except (KeyError, TypeError, ValueError) as err:
            raise MathDataError(f"{source}: item {i} is not a ProcessBench item ({err!r})") from None
        if not steps or not -1 <= label < len(steps):
            raise MathDataError(f"{source}: item {i} has {len(steps)} steps and label {label}")
        items.append(item)
    if not items:
        raise MathDataError(f"{source} holds no ProcessBench items")
    return items


def earliest_error(values: np.ndarray, n_steps: int, threshold: float) -> int:
    """First step i whose prefix value ``values[i + 1]`` is below ``threshold``; -1 if none.
    ``values`` (H' + 1,): Q̂^π of prefixes h = 0..H' (H' < n_steps when the window cut it)."""
    below = np.flatnonzero(np.asarray(values[1:n_steps + 1]) < threshold)
    return int(below[0]) if below.size else -1


def processbench_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float | int | None]:
    """Accuracy on erroneous items, on correct items, and their harmonic mean (ProcessBench's F1)."""
    labels_a, preds_a = np.asarray(labels), np.asarray(predictions)
    wrong, right = labels_a != -1, labels_a == -1
    acc_err = float((preds_a[wrong] == labels_a[wrong]).mean()) if wrong.any() else None
    acc_ok = float((preds_a[right] == -1).mean()) if right.any() else None
    f1 = None
    if acc_err is not None and acc_ok is not None:
        f1 = 0.0 if acc_err + acc_ok == 0 else 2 * acc_err * acc_ok / (acc_err + acc_ok)
    return {"acc_erroneous": acc_err, "acc_correct": acc_ok, "f1": f1,
            "n_erroneous": int(wrong.sum()), "n_correct": int(right.sum())}
