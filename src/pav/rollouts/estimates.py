"""Pure, vectorised estimate maths of the paper (numpy only, no torch).

Everything here is a function of arrays; nothing samples. Shapes follow the project's letters:
`H` steps of a solution, so a solution has `H + 1` prefixes (prefix 0 is the question alone).

Paper map (sections and equations of the paper):
- `q_hat`, `wilson_interval`  Q̂ = n_correct / n_rollouts and its confidence interval (§4.3).
- `advantages_from_prefix_values`  Eq. 2: A(s_h, a_h) = Q(s_h, a_h) − Q(s_{h−1}, a_{h−1}),
  with the question-only prefix as V(s_1).
- `best_of_k`  App. D, Eq. 30: Q^{BoK(π)} = 1 − (1 − Q^π)^K.
- `effective_reward`  §3.2: Q^π + α·A^μ (the beam-search score and the RL step weight, Eq. 5).
- `distinguishability`, `alignment`  the two terms of Theorem 3.1 (with the "+" sign; see §2 on
  the typo in the v1 appendix).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def q_hat(n_correct: ArrayLike, n_rollouts: ArrayLike) -> Array:
    """Monte-Carlo value estimate Q̂ = n_correct / n_rollouts, elementwise.

    Raises ValueError on counts that cannot be counts (negative, n_correct > n_rollouts,
    n_rollouts == 0), so a corrupt label never becomes a NaN downstream.
    """
    k, n = _checked_counts(n_correct, n_rollouts)
    return k / n


def wilson_interval(
    n_correct: ArrayLike, n_rollouts: ArrayLike, confidence: float = 0.95
) -> tuple[Array, Array]:
    """Wilson score interval for a binomial proportion, elementwise: returns (low, high).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at Q̂ ∈ {0, 1},
    which is where most Monte-Carlo step labels sit.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = _checked_counts(n_correct, n_rollouts)
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = k / n
    denom = 1.0 + z**2 / n
    centre = (p + z**2 / (2.0 * n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / n + z**2 / (4.0 * n**2)) / denom
    low = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact ends: no rounding past Q̂
    high = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def advantages_from_prefix_values(prefix_values: ArrayLike) -> Array:
    """Eq. 2 along the last axis: (..., H + 1) prefix values -> (..., H) step advantages.

    `prefix_values[..., 0]` is the value of the question-only prefix (V of the first step) and
    `prefix_values[..., h]` the value after step h, i.e. Q(s_h, a_h). Deterministic dynamics make
    V(s_{h+1}) = Q(s_h, a_h), so each step's advantage is the difference of consecutive entries.
    """
    v = np.asarray(prefix_values, dtype=np.float64)
    if v.ndim == 0 or v.shape[-1] < 1:
        raise ValueError("prefix_values needs a last axis of length H + 1 >= 1")
    return np.diff(v, axis=-1)


def best_of_k(q_base: ArrayLike, k: int | ArrayLike) -> Array:
    """Q^{BoK(π)} = 1 − (1 − Q^π)^K: the value under the Best-of-K prover (App. D, Eq. 30).

    Rollouts from a prefix succeed i.i.d. with probability Q^π, and Best-of-K (with an oracle
    outcome check) succeeds if any of its K completions does.
    """
    q = np.asarray(q_base, dtype=np.float64)
    kk = np.asarray(k)
    if np.any(kk < 1) or not np.all(np.equal(np.mod(kk, 1), 0)):
        raise ValueError(f"K must be a positive integer, got {k}")
    _check_probabilities(q, "q_base")
    return 1.0 - (1.0 - q) ** kk


def effective_reward(q_base: ArrayLike, adv_prover: ArrayLike, alpha: float) -> Array:
    """The effective reward Q^π + α·A^μ (§3.2, Eq. 5); α = 0 recovers Q-value scoring."""
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    return np.asarray(q_base, dtype=np.float64) + alpha * np.asarray(adv_prover, dtype=np.float64)


def distinguishability(
    adv_prover: ArrayLike, policy_probs: ArrayLike, state_weights: ArrayLike | None = None
) -> float:
    """Theorem 3.1, first term: E_{s~ρ} Var_{a~π(·|s)}[A^μ(s, a)].

    Tables are (S, A): `adv_prover[s, a]` and `policy_probs[s, a]` (rows sum to 1); ρ defaults to
    uniform over the S states.
    """
    a, pi, rho = _tables(adv_prover, policy_probs, state_weights)
    mean = np.sum(pi * a, axis=1, keepdims=True)  # (S, 1) E_π[A^μ]
    var = np.sum(pi * (a - mean) ** 2, axis=1)  # (S,)
    return float(np.sum(rho * var))


def alignment(
    adv_prover: ArrayLike,
    adv_base: ArrayLike,
    policy_probs: ArrayLike,
    state_weights: ArrayLike | None = None,
) -> float:
    """Theorem 3.1, second term: E_{s~ρ} E_{a~π(·|s)}[A^μ(s, a) · A^π(s, a)], tables (S, A)."""
    a_mu, pi, rho = _tables(adv_prover, policy_probs, state_weights)
    a_pi = np.asarray(adv_base, dtype=np.float64)
    if a_pi.shape != a_mu.shape:
        raise ValueError(f"adv_base shape {a_pi.shape} != adv_prover shape {a_mu.shape}")
    return float(np.sum(rho * np.sum(pi * a_mu * a_pi, axis=1)))


def _tables(
    adv: ArrayLike, policy_probs: ArrayLike, state_weights: ArrayLike | None
) -> tuple[Array, Array, Array]:
    a = np.asarray(adv, dtype=np.float64)
    pi = np.asarray(policy_probs, dtype=np.float64)
    if a.ndim != 2 or pi.shape != a.shape:
        raise ValueError(f"need (S, A) tables of equal shape, got {a.shape} and {pi.shape}")
    if np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("policy_probs rows must be probability distributions")
    if state_weights is None:
        rho = np.full(a.shape[0], 1.0 / a.shape[0])
    else:
        rho = np.asarray(state_weights, dtype=np.float64)
        if rho.shape != (a.shape[0],) or np.any(rho < 0) or not np.isclose(rho.sum(), 1.0):
            raise ValueError("state_weights must be a distribution over the S states")
    return a, pi, rho


def _checked_counts(n_correct: ArrayLike, n_rollouts: ArrayLike) -> tuple[Array, Array]:
    k = np.asarray(n_correct, dtype=np.float64)
    n = np.asarray(n_rollouts, dtype=np.float64)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("counts must satisfy 0 <= n_correct <= n_rollouts and n_rollouts >= 1")
    return np.broadcast_arrays(k, n)


def _check_probabilities(q: Array, name: str) -> None:
    if not np.all(np.isfinite(q)) or np.any(q < 0) or np.any(q > 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")


def _normal_quantile(p: float) -> float:
    return NormalDist().inv_cdf(p)


def pass_at_n(n_samples: int, n_correct: int, n: int) -> float:
    """Unbiased Pass@N from `n_correct` successes in `n_samples` i.i.d. samples (Chen et al. 2021):
    1 − C(n_samples − n_correct, N) / C(n_samples, N), computed as a stable product."""
    if not 0 <= n_correct <= n_samples or not 1 <= n <= n_samples:
        raise ValueError(f"need 0 <= n_correct <= n_samples and 1 <= N <= n_samples, got {n_correct}, {n_samples}, {n}")
    if n_samples - n_correct < n:
        return 1.0
    i = np.arange(n)
    return float(1.0 - np.prod(1.0 - n_correct / (n_samples - i)))
