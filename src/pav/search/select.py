"""Pick one of N complete solutions of a problem (the paper, §4.1 and App. C). Pure functions over arrays.

Each returns the index of the chosen solution, so the choice is graded like any solution.
NaN scores (steps past a verifier's window) rank last; ties go to the earliest-sampled solution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def pick_max(scores: Sequence[float]) -> int:
    """The highest-scored solution: best-of-N with an ORM, or with the PQV as ORM (PAV-as-ORM)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no solutions to choose from")
    return int(np.argmax(np.where(np.isnan(s), -np.inf, s)))


def majority_vote(answers: Sequence[str | None]) -> int:
    """The first solution stating the most common answer (solutions without an answer do not vote;
    ties go to the answer stated first); 0 when no solution states an answer."""
    return weighted_vote(answers, np.ones(len(answers)))


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float]) -> int:
    """The answer with the largest total score wins (NaN counts 0); returns its highest-scored
    solution (the first among equals)."""
    if len(answers) == 0:
        raise ValueError("no solutions to choose from")
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    total: dict[str, float] = defaultdict(float)
    for a, w in zip(answers, s, strict=True):
        if a is not None:
            total[a] += w
    if not total:
        return 0
    best = max(total, key=total.__getitem__)  # dicts keep first-seen order: ties go to the first answer
    members = [i for i, a in enumerate(answers) if a == best]
    return members[int(np.argmax(s[members]))]
