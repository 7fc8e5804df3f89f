"""Verifier-quality metrics on hand-made prediction rows."""

import numpy as np
import pytest

from pav.verifier.quality import auroc, calibration, exact_agreement, verifier_quality


def test_auroc_hand_cases():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([1, 2, 3], [0, 0, 1]) == 1.0 and auroc([3, 2, 1], [0, 0, 1]) == 0.0
    assert auroc([1, 2], [1, 1]) is None


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s, y = rng.integers(0, 5, 60).astype(float), rng.integers(0, 2, 60)
    pos, neg = s[y == 1], s[y == 0]
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert auroc(s, y) == pytest.approx(np.mean(pairs))


def test_calibration_bins():
    out = calibration(np.array([0.05, 0.07, 0.95]), np.array([0.0, 0.2, 1.0]), bins=10)
    assert out == [{"pred": pytest.approx(0.06), "target": pytest.approx(0.1), "count": 2},
                   {"pred": 0.95, "target": 1.0, "count": 1}]


def test_quality_report_numbers():
    rows = [dict(solution_id="a", prefix_len=0, n_correct=2, n_rollouts=4, pred=0.5, adv=float("nan"), outcome=1.0),
            dict(solution_id="a", prefix_len=1, n_correct=4, n_rollouts=4, pred=0.9, adv=0.2, outcome=1.0),
            dict(solution_id="b", prefix_len=0, n_correct=1, n_rollouts=4, pred=0.5, adv=float("nan"), outcome=0.0),
            dict(solution_id="b", prefix_len=1, n_correct=0, n_rollouts=4, pred=0.3, adv=-0.3, outcome=0.0),
            dict(solution_id="b", prefix_len=2, n_correct=0, n_rollouts=1, pred=0.1, adv=-0.1, outcome=0.0)]
    q = verifier_quality(rows, alpha=0.5)
    assert q["mse"] == pytest.approx(np.mean([0.0, 0.01, 0.0625, 0.09]))  # the 1-rollout outcome row is left out
    assert q["mc_noise"] == pytest.approx(np.mean([0.0625, 0, 0.046875, 0]))
    assert q["auroc_by_position"][0] == {"prefix_len": 0, "n": 2, "auroc": 0.5}
    assert q["fig10"][0]["auroc_effective"] == 1.0
    assert q["exact"] is None  # labels of a policy: no true values to compare with


def test_agreement_with_exact_values_by_hand():
    rows = [dict(solution_id="a", prefix_len=0, pred=0.5, exact=0.6),
            dict(solution_id="a", prefix_len=1, pred=0.7, exact=0.9),  # Â +0.2, A +0.3
            dict(solution_id="a", prefix_len=2, pred=0.8, exact=0.0),  # Â +0.1, A −0.9
            dict(solution_id="b", prefix_len=1, pred=0.2, exact=0.2),  # no prefix 0: no step
            dict(solution_id="b", prefix_len=2, pred=0.2, exact=0.205)]  # Â 0, A +0.005: below min_adv
    e = exact_agreement(rows)
    assert e["prefixes"] == 5 and e["steps"] == 3
    assert e["rmse_value"] == pytest.approx(np.sqrt(np.mean([0.01, 0.04, 0.64, 0, 0.005 ** 2])))
    assert e["rmse_adv"] == pytest.approx(np.sqrt(np.mean([0.1 ** 2, 1.0 ** 2, 0.005 ** 2])))
    assert e["corr_adv"] == pytest.approx(np.corrcoef([0.2, 0.1, 0.0], [0.3, -0.9, 0.005])[0, 1])
    assert e["sign_adv"] == 0.5  # right on the +0.3 step, wrong on the −0.9 one
