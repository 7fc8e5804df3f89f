"""Dense per-step rewards, per-token weights and advantages for online RL (the paper, §5, Eq. 5).

Per step h of a sampled solution the weight is

    w_h = outcome + α · bonus_h,   bonus = A^μ (``pav``), Q^π (``pqv``), Q^μ (``prover-q``), 0 (``orm``)

where ``outcome`` (Rex, the checked final answer) is the Monte-Carlo return Q^π of the sampled
rollout and the bonus comes from the fixed verifier. The bonus enters *per step*, not summed into
returns-to-go: Eq. 4 takes states from the old policy, and Σ_{h'≥h} A^μ would telescope to
Q^μ(final) − V^μ(s_h), losing the per-step credit (our reading of the paper's §5). Every token of step h
gets w_h; prompt and padding tokens get nothing.

Baselines (``advantages``):
- ``rloo``: b_i = mean outcome of the other samples of the same problem (leave-one-out); the
  bonus A^μ is already centred. With α = 0 this is exactly outcome-only RLOO.
- ``value``: a learned token-level value V(s_t) predicting E[w] (the paper's REINFORCE baseline).

A solution that ends with its answer step (``graded_final``) is complete: its value is its checked
outcome under any prover, so that step's Q^π, Q^μ are the outcome and its A^μ is outcome −
Q̂^μ(before), not the verifier's estimate (the paper leaves the last step unspecified). A learned
verifier that over-values a premature "answer = target" line otherwise pays the policy for writing
one (built-in task, α = 3: 2 of 3 seeds collapsed to such lines; `pav rl --set graded_final=false`).

Non-finite numbers never reach a tensor: a verifier that returns NaN where it can see the step
raises `NonFiniteReward`; steps past the verifier's window (a NaN suffix with a finite question
value) get no bonus and are counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pav.verifier.scorer import StepScores

REWARDS = ("orm", "pav", "pqv", "prover-q")


class NonFiniteReward(FloatingPointError):
    """A reward or advantage is NaN or infinite; the run stops rather than train on it."""


def step_weights(reward: str, outcome: float, scores: StepScores | None, alpha: float,
                 n_steps: int, graded_final: bool = False) -> tuple[np.ndarray, bool]:
    """(H,) weights w_h of one solution and whether the verifier saw every step (module docstring);
    ``graded_final``: the last step is the answer, worth the outcome exactly."""
    if reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; choose from {REWARDS}")
    if not np.isfinite(outcome):
        raise NonFiniteReward(f"non-finite outcome {outcome!r}")
    w = np.full(n_steps, float(outcome))
    if reward == "orm" or alpha == 0:
        return w, True
    if scores is None:
        raise ValueError(f"reward {reward!r} needs verifier scores")
    bonus = {"pav": scores.adv_prover, "pqv": scores.q_base, "prover-q": scores.q_prover}[reward]
    bonus = np.array(bonus, dtype=np.float64)  # a copy: the last entry may be replaced
    if bonus.shape != (n_steps,):
        raise ValueError(f"verifier scored {bonus.shape[0]} steps of a {n_steps}-step solution")
    if graded_final and n_steps and np.isfinite(bonus[-1]):
        before = scores.q_prover[-1] - scores.adv_prover[-1]  # Q̂^μ of the prefix before the answer
        bonus[-1] = outcome - before if reward == "pav" else outcome
    seen = np.isfinite(bonus)
    cut = int(seen.sum())
    if not np.isfinite(scores.v_base) or not seen[:cut].all() or np.isinf(bonus).any():
        raise NonFiniteReward(f"the verifier returned non-finite values inside its window: {bonus.tolist()}")
    w[:cut] += alpha * bonus[:cut]
    return w, cut == n_steps


def token_weights(weights: Sequence[np.ndarray], step_index: torch.Tensor) -> torch.Tensor:
    """(B, T) weight of each token: w[b][step_index[b, t]], 0 where step_index < 0 (prompt, padding)."""
    out = torch.zeros(step_index.shape, dtype=torch.float32)
    for b, w in enumerate(weights):
        idx = step_index[b]
        mine = idx >= 0
        if mine.any():
            out[b, mine] = torch.as_tensor(w, dtype=torch.float32)[idx[mine]]
    if not torch.isfinite(out).all():
        raise NonFiniteReward("non-finite per-token weight")
    return out


def rloo_baseline(outcomes: Sequence[float], groups: Sequence[int]) -> np.ndarray:
    """(B,) mean outcome of the other samples of the same group; 0 for a sample alone in its group."""
    r, g = np.asarray(outcomes, dtype=np.float64), np.asarray(groups)
    out = np.zeros_like(r)
    for key in np.unique(g):
        idx = np.flatnonzero(g == key)
        if len(idx) > 1:
            out[idx] = (r[idx].sum() - r[idx]) / (len(idx) - 1)
    return out


def advantages(tok_w: torch.Tensor, mask: torch.Tensor, *, baseline: str, outcomes: Sequence[float] = (),
               groups: Sequence[int] = (), values: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) advantage of each completion token (0 elsewhere): w − b (module docstring)."""
    if baseline == "rloo":
        b = torch.as_tensor(rloo_baseline(outcomes, groups), dtype=torch.float32, device=tok_w.device)[:, None]  # (B, 1)
    elif baseline == "value":
        if values is None:
            raise ValueError("the value baseline needs values")
        b = values.detach()  # (B, T)
    else:
        raise ValueError(f"unknown baseline {baseline!r}; choose 'rloo' or 'value'")
    adv = (tok_w - b) * mask
    if not torch.isfinite(adv).all():
        raise NonFiniteReward("non-finite advantage")
    return adv


def policy_loss(logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                kl_coef: float, entropy: torch.Tensor | None = None,
                entropy_coef: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with a KL penalty to the initial policy and an optional entropy bonus, mean over
    completion tokens.

    logp, ref_logp, adv, mask: (B, T). KL per token uses the k3 estimator
    exp(ref − logp) − (ref − logp) − 1 (unbiased, non-negative). ``entropy`` (B, T) is the entropy
    of each token's next-token distribution, differentiable; ``entropy_coef · mean entropy`` is
    subtracted from the loss (not in the paper, which uses only the KL term; off by default).
    Returns (loss, mean KL).
    """
    n = mask.sum().clamp_min(1)
    log_ratio = (ref_logp - logp) * mask
    kl = (torch.exp(log_ratio) - log_ratio - 1) * mask  # (B, T)
    pg = -(adv * logp * mask).sum() / n
    kl_mean = kl.sum() / n
    loss = pg + kl_coef * kl_mean
    if entropy_coef:
        if entropy is None:
            raise ValueError("an entropy bonus needs the tokens' entropies")
        loss = loss - entropy_coef * (entropy * mask).sum() / n
    return loss, kl_mean.detach()
