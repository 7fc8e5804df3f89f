"""The procedural prover μ_γ of the planted sub-sequence task (the paper, §3.3) with exact values.

μ_γ at a prefix whose longest target match is k puts weight γ on the next target token y*_{k+1}
and weight 1 on each of the other tokens (EOS included), so P(y*_{k+1}) = γ / (γ + V − 1).

After the target is complete (the paper is silent) μ_γ puts weight γ on EOS — the Fig. 9 samples
of the γ = 100 prover end in EOS runs. This does not touch any value: once the target has appeared
the reward is 1 whatever follows, so Q^μ = V^μ = 1 there. After EOS it is uniform (irrelevant).

Because μ_γ depends on the prefix only through the automaton state, its values are exact by
dynamic programming over (position t, state k):
    V[T, k] = 1{k = MATCHED},
    V[t, k] = Σ_v μ_γ(v | k) · V[t + 1, δ(k, v)],
and for the step a_t taken at prefix s_t (state k_t):
    Q^μ(s_t, a_t) = V[t + 1, δ(k_t, a_t)],   A^μ(s_t, a_t) = Q^μ(s_t, a_t) − V[t, k_t]   (Eq. 2).
`mc_prefix_values` gives the Monte-Carlo reading the paper used (n rollouts of μ per prefix).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pav.didactic.task import PlantedTask
from pav.rollouts.estimates import advantages_from_prefix_values


class GammaProver:
    """μ_γ for one task and one γ > 0: action probabilities, exact values, sampling, MC estimates."""

    def __init__(self, task: PlantedTask, gamma: float) -> None:
        if not np.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.task, self.gamma = task, float(gamma)
        self.action_probs = _action_probs(task, self.gamma)  # (S, V) μ_γ(v | k)
        self.values = _value_table(task, self.action_probs)  # (T + 1, S) V^μ[t, k]

    def prefix_values(self, states: NDArray[np.int64]) -> NDArray[np.float64]:
        """Exact V^μ of every prefix: automaton states (..., T + 1) -> values (..., T + 1)."""
        t = np.arange(states.shape[-1])
        return self.values[t, states]

    def advantages(self, states: NDArray[np.int64]) -> NDArray[np.float64]:
        """Exact A^μ(s_t, a_t) of every step: states (..., T + 1) -> (..., T)."""
        return advantages_from_prefix_values(self.prefix_values(states))

    def mc_prefix_values(
        self, states: NDArray[np.int64], n_rollouts: int, rng: np.random.Generator
    ) -> NDArray[np.float64]:
        """Monte-Carlo V̂^μ of every prefix with `n_rollouts` independent rollouts each.

        Each rollout of μ from a prefix succeeds independently with probability V^μ(prefix), so
        the success count is exactly Binomial(n, V^μ): drawing it is the same in distribution as
        simulating the n rollouts (`rollout_success` does that explicitly; a test checks both).
        """
        if n_rollouts < 1:
            raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
        return rng.binomial(n_rollouts, self.prefix_values(states)) / n_rollouts

    def sample(self, n: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """n responses (n, T) from μ_γ; tokens after EOS are set to EOS."""
        task = self.task
        tokens = np.full((n, task.length), task.eos, dtype=np.int64)
        state = np.zeros(n, dtype=np.int64)
        cdf = np.cumsum(self.action_probs, axis=1)  # (S, V)
        for t in range(task.length):
            u = rng.random(n)[:, None]
            tok = np.minimum((u > cdf[state]).sum(axis=1), task.vocab_size - 1)
            alive = state != task.dead
            tokens[alive, t] = tok[alive]
            state = task.transitions[state, tokens[:, t]]
        return tokens

    def rollout_success(
        self, position: int, state: int, n: int, rng: np.random.Generator
    ) -> NDArray[np.bool_]:
        """Explicitly simulate n rollouts of μ from automaton `state` after `position` tokens."""
        task = self.task
        cdf = np.cumsum(self.action_probs, axis=1)
        s = np.full(n, state, dtype=np.int64)
        for _ in range(position, task.length):
            u = rng.random(n)[:, None]
            tok = np.minimum((u > cdf[s]).sum(axis=1), task.vocab_size - 1)
            s = task.transitions[s, tok]
        return s == task.matched


def _action_probs(task: PlantedTask, gamma: float) -> NDArray[np.float64]:
    m = len(task.target)
    weights = np.ones((task.n_states, task.vocab_size))
    for k in range(m):
        weights[k, task.target[k]] = gamma
    weights[m, task.eos] = gamma
    return weights / weights.sum(axis=1, keepdims=True)


def _value_table(task: PlantedTask, probs: NDArray[np.float64]) -> NDArray[np.float64]:
    values = np.zeros((task.length + 1, task.n_states))
    values[task.length, task.matched] = 1.0
    for t in range(task.length - 1, -1, -1):
        # (S, V) values of the successor states, averaged under μ_γ(· | k)
        values[t] = np.sum(probs * values[t + 1][task.transitions], axis=1)
    return values
