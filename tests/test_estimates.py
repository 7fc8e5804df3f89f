"""Hand-computed cases for every estimate function (the paper, §2–3 and App. F)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pav.rollouts.estimates import (
    advantages_from_prefix_values, alignment, best_of_k, distinguishability, effective_reward,
    pass_at_n, q_hat, wilson_interval,
)


def test_q_hat_from_counts():
    np.testing.assert_array_equal(q_hat([0, 3, 20], [20, 4, 20]), [0.0, 0.75, 1.0])


@pytest.mark.parametrize("k,n", [(-1, 4), (5, 4), (0, 0)])
def test_q_hat_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError, match="n_correct"):
        q_hat(k, n)


def test_wilson_interval_hand_computed():
    # k=5, n=10, z=1.959964: centre 0.5, half-width z*sqrt(0.025 + z^2/400)/(1 + z^2/10)
    lo, hi = wilson_interval(5, 10)
    z = 1.959963984540054
    half = z * np.sqrt(0.025 + z**2 / 400) / (1 + z**2 / 10)
    assert lo == pytest.approx(0.5 - half, abs=1e-12) and hi == pytest.approx(0.5 + half, abs=1e-12)
    assert lo == pytest.approx(0.236593, abs=1e-6)
    lo0, hi0 = wilson_interval(0, 20)  # not degenerate at Q̂ = 0
    assert lo0 == 0.0 and hi0 == pytest.approx(z**2 / (20 + z**2), abs=1e-12)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_advantages_from_prefix_values_eq2():
    # V(question) = 0.2, then Q after steps 1..3 = 0.5, 0.4, 1.0
    np.testing.assert_allclose(advantages_from_prefix_values([0.2, 0.5, 0.4, 1.0]), [0.3, -0.1, 0.6])
    batch = advantages_from_prefix_values([[0.0, 1.0], [0.5, 0.25]])
    np.testing.assert_allclose(batch, [[1.0], [-0.25]])


def test_best_of_k_closed_form():
    np.testing.assert_allclose(best_of_k([0.0, 0.5, 1.0, 0.1], 4), [0.0, 0.9375, 1.0, 1 - 0.9**4])
    np.testing.assert_allclose(best_of_k(0.3, 1), 0.3)
    with pytest.raises(ValueError):
        best_of_k(0.3, 0)
    with pytest.raises(ValueError):
        best_of_k(1.5, 2)


def test_effective_reward():
    np.testing.assert_allclose(effective_reward([0.5, 0.2], [0.1, -0.2], 0.5), [0.55, 0.1])
    with pytest.raises(ValueError):
        effective_reward(0.5, 0.1, -1.0)


def test_theorem_terms_hand_computed():
    # one state, two actions with π = (0.25, 0.75); A^μ = (1, -1/3), A^π = (0.3, -0.1)
    pi = np.array([[0.25, 0.75]])
    a_mu = np.array([[1.0, -1.0 / 3.0]])
    a_pi = np.array([[0.3, -0.1]])
    # E_π[A^μ] = 0, Var = 0.25*1 + 0.75/9 = 1/3
    assert distinguishability(a_mu, pi) == pytest.approx(1.0 / 3.0)
    assert alignment(a_mu, a_pi, pi) == pytest.approx(0.25 * 0.3 + 0.75 * (1 / 30))
    # state weights average per-state terms
    pi2 = np.array([[0.25, 0.75], [0.5, 0.5]])
    a2 = np.array([[1.0, -1.0 / 3.0], [0.2, 0.2]])
    assert distinguishability(a2, pi2, [0.5, 0.5]) == pytest.approx(1.0 / 6.0)


def test_fig2a_beam_example():
    """the paper, §3.1 and Fig. 2(a): top-2 by Q^π keeps a13, a11; Q^π + α·A^π with α large enough keeps a21."""
    names = ["a11", "a12", "a13", "a21", "a22", "a23"]
    q = np.array([0.55, 0.50, 0.70, 0.50, 0.35, 0.25])
    adv = np.array([-0.05, -0.10, 0.10, 0.20, 0.05, -0.05])
    top2 = lambda s: {names[i] for i in np.argsort(-s, kind="stable")[:2]}  # noqa: E731
    assert top2(effective_reward(q, adv, 0.0)) == {"a13", "a11"}
    assert top2(effective_reward(q, adv, 0.19)) == {"a13", "a11"}  # a21 overtakes a11 only past α = 0.2
    assert top2(effective_reward(q, adv, 1.0)) == {"a13", "a21"}


def test_bok_distinguishability_grows_k_squared_then_collapses():
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.002, size=(500, 8))  # Q^π ≪ 1/K for K up to 32
    pi = rng.dirichlet(np.ones(8), size=500)
    v = (pi * q).sum(1, keepdims=True)
    d = {k: distinguishability(best_of_k(q, k) - best_of_k(v, k), pi) for k in (1, 2, 4, 8)}
    for k in (2, 4, 8):
        assert d[k] / d[1] == pytest.approx(k**2, rel=0.05)
    q_hi = rng.uniform(0.6, 0.9, size=(500, 8))  # Q^{BoK} → 1: advantages vanish
    v_hi = (pi * q_hi).sum(1, keepdims=True)
    d_hi = [distinguishability(best_of_k(q_hi, k) - best_of_k(v_hi, k), pi) for k in (1, 4, 16, 32)]
    assert d_hi[0] > d_hi[1] > d_hi[2] > d_hi[3] and d_hi[3] < 1e-6 * d_hi[0]


def test_pass_at_n_unbiased_estimator():
    assert pass_at_n(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_n(10, 0, 5) == 0.0
    assert pass_at_n(10, 8, 3) == 1.0  # fewer than N failures
    assert pass_at_n(1000, 10, 1) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        pass_at_n(4, 5, 2)
