"""Exact values of the built-in task's noisy expert as a `Scorer`: an oracle verifier for ablations.

`ExpertScorer` returns what a perfect PQV of the ModReach expert (docs/design.md) would:
``q_base`` is V^expert after each step (`pav.tasks.modreach.ModReach.expert_values`, dynamic
programming, no sampling), ``q_prover`` its Best-of-K transform and ``adv_prover`` the exact A^μ of
μ = Best-of-K(expert). It needs no labels, no training and no model, and it has no estimation
error, so `pav rl --set verifier=expert` separates what dense progress rewards can do on this task
from what a learned verifier's errors take away (the paper's didactic μ_γ plays this part in §3).

The "base" of this scorer is the expert, not the policy being trained or searched: a learned PQV
is likewise the value of the policy it was labelled with, which RL moves away from. The noise of
the expert (``task.p_err``, ``task.p_restate``, ``task.p_rand``) sets the prover's strength.
With `pav.verifier.scorer.MixedScorer` it gives beam search a learned PQV's Q̂^π and an exact A^μ
(`pav search --set prover=expert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pav.rollouts.estimates import advantages_from_prefix_values, best_of_k
from pav.tasks.modreach import ModReach
from pav.verifier.scorer import StepScores


class ExpertScorer:
    """Exact V^expert and Best-of-K(expert) advantages of ModReach solutions (module docstring)."""

    def __init__(self, task: object, k: int = 1) -> None:
        if not isinstance(task, ModReach):
            raise ValueError(f"the exact expert scorer needs the built-in ModReach task, not {getattr(task, 'name', task)!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.task, self.k = task, k

    def score(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[StepScores]:
        out = []
        for prompt, steps in zip(prompts, steps_list, strict=True):
            v = np.asarray(self.task.expert_values(self.task.parse_question(prompt), steps))  # (H + 1,) V^expert
            v_mu = best_of_k(v, self.k)  # (H + 1,) V^μ, μ = BoK(expert)
            out.append(StepScores(float(v[0]), v[1:], v_mu[1:], advantages_from_prefix_values(v_mu), float(v[-1])))
        return out
