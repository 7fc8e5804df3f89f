"""Step labels as a TRL stepwise-supervision dataset: one row per labelled solution.

TRL's stepwise-supervision type (its PRM trainer) has three columns: ``prompt`` (str),
``completions`` (list[str], one per step) and ``labels`` (one per step). pav's label for step h is
the value of the prefix that ends with it (Q̂ of ``prefix_len = h``), or the step's advantage
(Eq. 2, ``target="adv"``), optionally under a Best-of-K prover (``k``, Eq. 30):

- ``mode="hard"``: ``value > threshold`` as a bool (TRL's format; Q̂ > 0.5 by default, or a
  positive advantage with ``target="adv"`` and ``threshold=0``);
- ``mode="soft"``: the value itself, a float (for trainers that take soft targets).

A solution contributes its steps up to the first one without a label (a first-pit label run stops
at the pit), and nothing when its first step has none. Prompts are the task's prompts, as the
policy saw them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pav.core.records import Solution, StepLabel
from pav.rollouts.views import label_arrays


@dataclass(frozen=True)
class ExportSummary:
    """``summary.json`` of a `pav export-labels` run."""
    STAGES = ("export",)
    format: str
    rows: int  # one per labelled solution
    steps: int
    solutions: int
    mean_label: float | None  # hard labels: the share of True
    file: str


def stepwise_rows(labels: Sequence[StepLabel], solutions: Sequence[Solution], prompts: Mapping[str, str], *,
                  target: Literal["q", "adv"] = "q", mode: Literal["hard", "soft"] = "hard",
                  threshold: float = 0.5, k: int | None = None) -> Iterator[dict[str, Any]]:
    """TRL stepwise rows (module docstring); ``prompts`` maps problem_id → prompt text."""
    if target not in ("q", "adv") or mode not in ("hard", "soft"):
        raise ValueError(f"target must be 'q' or 'adv' and mode 'hard' or 'soft', got {target!r}, {mode!r}")
    arrays = label_arrays(labels, k=k)
    values = arrays["q"] if target == "q" else arrays["adv"]
    by_key = {(lab.solution_id, lab.prefix_len): float(v) for lab, v in zip(labels, values)}
    for sol in solutions:
        steps: list[str] = []
        step_labels: list[bool | float] = []
        for h, step in enumerate(sol.steps, start=1):
            v = by_key.get((sol.solution_id, h))
            if v is None or not np.isfinite(v):
                break
            steps.append(step)
            step_labels.append(bool(v > threshold) if mode == "hard" else v)
        if steps:
            yield {"prompt": prompts[sol.problem_id], "completions": steps, "labels": step_labels,
                   "problem_id": sol.problem_id, "solution_id": sol.solution_id}
