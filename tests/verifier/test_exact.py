"""The exact expert scorer: ModReach's expert values in the `Scorer` shape, Best-of-K advantages."""

import numpy as np
import pytest

from pav.rollouts.estimates import best_of_k
from pav.tasks.math_task import MathTask
from pav.tasks.modreach import ModReach
from pav.verifier.exact import ExpertScorer

TASK = ModReach()


def test_expert_scores_are_the_exact_values_and_their_best_of_k_advantages():
    p = TASK.make_problem(["+1", "*2", "*3"], start=8, target=9, budget=1)
    steps_list = [["8+1=9", "ans 9"], ["8*2=6", "ans 6"], []]
    for k in (1, 4):
        scores = ExpertScorer(TASK, k=k).score([TASK.prompt(p)] * 3, steps_list)
        v0 = 0.72
        good, bad, empty = scores
        assert good.v_base == pytest.approx(v0) and good.q_base.tolist() == [1.0, 1.0]
        np.testing.assert_allclose(good.adv_prover, [1.0 - best_of_k(v0, k), 0.0])
        np.testing.assert_allclose(bad.adv_prover, [-best_of_k(v0, k), 0.0])
        assert bad.outcome == 0.0 and good.outcome == 1.0
        assert empty.q_base.shape == (0,) and empty.outcome == pytest.approx(v0)


def test_expert_scorer_refuses_other_tasks_and_bad_k():
    with pytest.raises(ValueError, match="ModReach"):
        ExpertScorer(MathTask.__new__(MathTask))
    with pytest.raises(ValueError, match="k must be"):
        ExpertScorer(TASK, k=0)


def test_mixed_scorer_takes_q_base_from_the_pqv_and_the_prover_terms_from_the_expert():
    from pav.verifier.scorer import MixedScorer, StepScores

    class Pqv:
        def score(self, prompts, steps_list):
            return [StepScores(0.5, np.full(len(s), 0.25), np.full(len(s), 0.9), np.zeros(len(s)), 0.3, 7)
                    for s in steps_list]

    p = TASK.make_problem(["+1", "*2", "*3"], start=8, target=9, budget=1)
    [mixed] = MixedScorer(Pqv(), ExpertScorer(TASK)).score([TASK.prompt(p)], [["8*2=6"]])
    assert (mixed.v_base, mixed.q_base.tolist(), mixed.outcome, mixed.verifier_tokens) == (0.5, [0.25], 0.3, 7)
    np.testing.assert_allclose(mixed.q_prover, [0.0])
    np.testing.assert_allclose(mixed.adv_prover, [-0.72])
