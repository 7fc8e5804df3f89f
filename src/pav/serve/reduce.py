"""One scalar per solution from its step rewards, for trainers that take one reward per completion.

The step reward is the effective reward Q̂^π + α·Â^μ of each step (`pav.verifier.scorer`). The
reductions: ``min`` (the weakest step; a solution is as good as its worst step, as PRM users often
take), ``last`` (the value of the complete solution: the PQV as an outcome verifier), ``mean`` and
``sum`` over steps, and ``outcome`` (the ORM's, or the PQV's, score of the whole solution). Steps
the verifier could not see (NaN) are left out; a solution with no scored step gets ``empty``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Reduction = Literal["min", "last", "mean", "sum", "outcome"]
REDUCTIONS: tuple[str, ...] = ("min", "last", "mean", "sum", "outcome")


def reduce_steps(step_rewards: np.ndarray, outcome: float, how: str, empty: float = 0.0) -> float:
    """``how`` of the finite entries of ``step_rewards`` (H,), or ``outcome``; ``empty`` if none."""
    if how not in REDUCTIONS:
        raise ValueError(f"unknown reduction {how!r}; choose one of {', '.join(REDUCTIONS)}")
    if how == "outcome":
        return float(outcome) if np.isfinite(outcome) else empty
    seen = step_rewards[np.isfinite(step_rewards)]
    if seen.size == 0:
        return empty
    return float({"min": np.min, "last": lambda x: x[-1], "mean": np.mean, "sum": np.sum}[how](seen))
