"""Accuracy-vs-compute curves → the paper's numbers (the paper, §4.1 and App. C).

A curve is points (compute, accuracy) for N = 2, 4, ...; between points accuracy is interpolated
linearly in log2(compute), the x-axis of the paper's plots. Nothing is extrapolated: outside a
curve's compute range the answer is None.

- **compute-efficiency ratio**: the ORM's compute at its largest N (best-of-128) divided by the
  compute at which another method first reaches the ORM's accuracy there;
- **accuracy gain at equal compute**: a method's accuracy at each of its points minus the ORM
  curve's accuracy at that compute;
- **paired difference**: two methods run on the same problems at the same N values (PAV beam and
  PQV beam): the mean over N and problems of their outcome difference, with its standard error
  over problems (each problem's mean difference is one sample; the N values of a problem are not
  independent of each other).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _curve(compute: Sequence[float], accuracy: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.log2(np.asarray(compute, dtype=np.float64)), np.asarray(accuracy, dtype=np.float64)
    if x.shape != y.shape or x.size == 0 or np.any(np.diff(x) <= 0):
        raise ValueError("a curve needs points of strictly increasing compute")
    return x, y


def accuracy_at(compute: Sequence[float], accuracy: Sequence[float], at: float) -> float | None:
    """The curve's accuracy at compute ``at`` (log-linear interpolation), None outside its range."""
    x, y = _curve(compute, accuracy)
    p = np.log2(at)
    if p < x[0] - 1e-12 or p > x[-1] + 1e-12:
        return None
    return float(np.interp(p, x, y))


def compute_to_reach(compute: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """The least compute at which the curve reaches ``target`` accuracy, None if it never does."""
    x, y = _curve(compute, accuracy)
    if y[0] >= target:
        return float(compute[0])
    for i in range(1, len(x)):
        if y[i] >= target:  # cross between points i - 1 and i
            frac = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(compute[i]) if frac == 1 else float(2 ** (x[i - 1] + frac * (x[i] - x[i - 1])))
    return None


def efficiency_ratio(reference: tuple[Sequence[float], Sequence[float]],
                     method: tuple[Sequence[float], Sequence[float]]) -> float | None:
    """Reference compute at its last point ÷ the method's compute to reach that point's accuracy;
    None when the reference's accuracy there is 0 (any method "reaches" it: not measurable)."""
    (rc, ra), (mc, ma) = reference, method
    if not ra[-1] > 0:
        return None
    need = compute_to_reach(mc, ma, ra[-1])
    return None if need is None else float(rc[-1] / need)


def gains_at_equal_compute(reference: tuple[Sequence[float], Sequence[float]],
                           method: tuple[Sequence[float], Sequence[float]]) -> list[float | None]:
    """For each point of ``method``: its accuracy minus the reference's at the same compute."""
    (rc, ra), (mc, ma) = reference, method
    out = []
    for c, a in zip(mc, ma):
        ref = accuracy_at(rc, ra, c)
        out.append(None if ref is None else float(a - ref))
    return out


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> dict[str, float | int | None]:
    """Mean of ``a − b`` over (N, problem) and its standard error over problems; rows are N values,
    columns the same problems in the same order in both."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired outcomes need equal (N, problems) shapes, got {a.shape} and {b.shape}")
    d = a - b  # (N, P)
    per_problem = d.mean(axis=0)  # (P,)
    se = float(per_problem.std(ddof=1) / np.sqrt(per_problem.size)) if per_problem.size > 1 else None
    return {"mean": float(per_problem.mean()), "se": se, "problems": int(per_problem.size)}
