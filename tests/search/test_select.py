"""Selection rules and the curve maths behind the compute-efficiency ratio."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pav.search.compare import (accuracy_at, compute_to_reach, efficiency_ratio, gains_at_equal_compute,
                                paired_difference)
from pav.search.select import majority_vote, pick_max, weighted_vote


def test_pick_max_ranks_nan_last_and_breaks_ties_by_sampling_order():
    assert pick_max([0.2, float("nan"), 0.7, 0.7]) == 2
    assert pick_max([float("nan"), float("nan")]) == 0
    with pytest.raises(ValueError):
        pick_max([])


def test_majority_and_weighted_votes_by_hand():
    answers = ["3", None, "5", "5", "3", None, None]
    assert majority_vote(answers) == 0  # "3" and "5" tie at 2: the answer stated first wins
    assert majority_vote(["3", "5", "5"]) == 1  # the first solution with the majority answer
    assert majority_vote([None, None]) == 0
    scores = [0.1, 0.9, 0.5, 0.2, 0.3, 0.8, 0.1]
    assert weighted_vote(answers, scores) == 2  # "5": 0.7 > "3": 0.4; its best-scored solution
    assert weighted_vote(["3", "5"], [float("nan"), 0.1]) == 1


@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=20))
def test_majority_vote_picks_a_most_common_answer(answers):
    i = majority_vote(answers)
    counts = {a: answers.count(a) for a in answers if a is not None}
    if counts:
        assert counts[answers[i]] == max(counts.values())
    else:
        assert i == 0


CURVE = ([100, 200, 400, 800], [0.2, 0.3, 0.35, 0.5])


def test_interpolation_is_linear_in_log_compute_and_never_extrapolates():
    assert accuracy_at(*CURVE, 200) == pytest.approx(0.3)
    assert accuracy_at(*CURVE, 200 * math.sqrt(2)) == pytest.approx(0.325)
    assert accuracy_at(*CURVE, 50) is None and accuracy_at(*CURVE, 1000) is None
    assert compute_to_reach(*CURVE, 0.325) == pytest.approx(200 * math.sqrt(2))
    assert compute_to_reach(*CURVE, 0.1) == 100
    assert compute_to_reach(*CURVE, 0.6) is None


def test_efficiency_ratio_and_gains_by_hand():
    orm = ([100, 200, 400, 800], [0.2, 0.3, 0.35, 0.4])
    pav = ([50, 100, 200], [0.3, 0.4, 0.5])
    assert efficiency_ratio(orm, pav) == pytest.approx(800 / 100)  # PAV reaches 0.4 at compute 100
    gains = gains_at_equal_compute(orm, pav)
    assert gains[0] is None and gains[1:] == pytest.approx([0.2, 0.2])
    assert efficiency_ratio(orm, ([50, 100], [0.1, 0.2])) is None
    with pytest.raises(ValueError):
        accuracy_at([100, 100], [0.1, 0.2], 100)


def test_ratio_of_a_curve_against_itself_is_one():
    rng = np.random.default_rng(0)
    acc = np.sort(rng.uniform(0, 1, 6))
    compute = np.cumsum(rng.uniform(1, 100, 6))
    assert efficiency_ratio((compute, acc), (compute, acc)) == pytest.approx(1.0)


def test_paired_difference_averages_over_n_and_takes_its_error_over_problems():
    a = [[1, 1, 0], [1, 0, 0]]  # (N, problems)
    b = [[0, 1, 0], [0, 1, 0]]  # differences per problem: (1, 1), (0, -1), (0, 0) -> means 1, -0.5, 0
    out = paired_difference(a, b)
    assert out["mean"] == pytest.approx(0.5 / 3) and out["problems"] == 3
    assert out["se"] == pytest.approx(np.std([1, -0.5, 0], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError):
        paired_difference([[1, 0, 1]], [[1, 0, 1], [0, 0, 0]])  # would broadcast
