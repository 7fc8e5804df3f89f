"""Best-of-N over disjoint groups of a problem's samples: selection, accuracy and compute by hand."""

import numpy as np
import pytest

from pav.search.best_of_n import SolutionSet, best_of_n, pass_at, sample_and_score


def _set(pid, outcome, orm, pqv, answers):
    n = len(outcome)
    return SolutionSet(pid, [(f"s{i}",) for i in range(n)], answers, np.array(outcome, float), np.array(orm),
                       np.array(pqv), np.arange(1, n + 1), np.full(n, 10), 5)


SETS = [
    _set("a", [0, 1, 0, 1], [0.9, 0.05, 0.2, 0.8], [0.1, 0.9, 0.3, 0.2], ["7", "7", "3", "3"]),
    _set("b", [1, 0, 0, 0], [0.5, 0.6, 0.1, 0.0], [0.7, 0.1, 0.2, 0.3], ["1", "2", "2", None]),
]


def test_best_of_n_by_hand():
    # N = 2: groups (0, 1) and (2, 3) of each problem
    orm = best_of_n(SETS, 2, "orm")  # a: s0 (0), s3 (1) -> 0.5; b: s1 (0), s2 (0) -> 0
    assert orm["accuracy"] == pytest.approx(0.25)
    assert orm["accuracy_se"] == pytest.approx(np.std([0.5, 0.0], ddof=1) / np.sqrt(2))
    assert best_of_n(SETS, 2, "pav_as_orm")["accuracy"] == pytest.approx(0.5)  # a: s1, s2; b: s0, s3
    assert best_of_n(SETS, 4, "orm")["accuracy"] == 0.0  # a: s0; b: s1
    assert best_of_n(SETS, 4, "majority")["accuracy"] == pytest.approx((0 + 0) / 2)  # a: "7" first -> s0; b: "2" -> s1
    assert best_of_n(SETS, 4, "weighted_majority")["accuracy"] == pytest.approx((1 + 0) / 2)  # a: "3" 1.0 > "7" 0.95: s3
    assert orm["generated"] == pytest.approx((3 + 7 + 3 + 7) / 4) and orm["encoded"] == 5
    assert orm["scored"] == 20 and orm["samples"] == 2
    assert pass_at(SETS, 1) == pytest.approx((0.5 + 0.25) / 2) and pass_at(SETS, 4) == 1.0
    with pytest.raises(ValueError):
        best_of_n(SETS, 8, "orm")
    with pytest.raises(ValueError, match="unknown"):
        best_of_n(SETS, 2, "oracle")


def test_sample_and_score_on_the_expert_policy():
    from pav.tasks.modreach import ModReach

    task = ModReach()
    problems = task.problems(3, seed=0, split="heldout")

    class Expert:  # writes the task's demonstrator solutions; a token is a character
        policy_id = "expert"

        def sample(self, contexts, n, *, seed=None, **kw):
            import random

            from pav.policies.base import Generation, SampleBatch
            rng = random.Random(seed)
            rows = [[Generation("".join(s + "\n" for s in task.demonstrate(p, rng)), 1, True) for _ in range(n)]
                    for p in problems]
            return SampleBatch(rows, 0, n * len(problems), 0.0)

    class Scorer:
        def score(self, prompts, steps_list):
            from pav.verifier.scorer import StepScores
            return [StepScores(0.5, np.full(len(s), 0.5), np.full(len(s), 0.5), np.zeros(len(s)), 0.25, 3)
                    for s in steps_list]

    sets = sample_and_score(Expert(), Scorer(), task, problems, 4, seed=1, max_new_tokens=200, temperature=1.0, top_p=1.0)
    assert [s.problem_id for s in sets] == [p.problem_id for p in problems]
    for s, p in zip(sets, problems):
        assert s.outcome.tolist() == [task.outcome(p, st) for st in s.steps]
        assert s.answers == [task.answer(st) for st in s.steps]
        assert s.orm.tolist() == [0.25] * 4 and s.pqv.tolist() == [0.5] * 4 and s.scored.tolist() == [3] * 4
        assert s.encoded == len(task.prompt(p))
