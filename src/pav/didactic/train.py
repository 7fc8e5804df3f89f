"""SFT and policy-gradient RL of the didactic MADE policy with per-step weights (the paper, §3.3 and App. B).

The RL loop reads top to bottom in `train_rl`: sample → automaton states → rewards → per-step
weights → loss → update. Per-step weight of step a_t (Eq. 5):
- outcome-only ("Only Q^π"):      w_t = Q̂^π(s_t, a_t)
- effective reward (α, prover μ): w_t = Q̂^π(s_t, a_t) + α · A^μ(s_t, a_t)
Q̂^π is the trajectory's own return (`q_base="return"`: one rollout, unbiased, free) or the mean
of `q_rollouts` fresh rollouts of the current policy from the prefix (`q_base="rollouts"`, the
paper's "oracle"). A^μ is exact (dynamic programming) or Monte-Carlo with `n_mc` rollouts of μ
per prefix (`Member.adv`).

Choices where the paper is silent (all configurable):
- baseline (`baseline`): by default the batch's mean return is subtracted from Q̂^π only
  (`mean_return`), the usual REINFORCE variance reduction for a Monte-Carlo return; A^μ is
  already a difference of values and is left as it is. Before takeoff every return is 0, so this
  changes nothing early; later it matters: with no baseline (`none`, Eq. 5 as printed) every
  token of a successful response gets weight ≈ 1, including the first token, which MADE reads from
  a bias alone and which ends the response when it is EOS, so that 3% failure is corrected only
  through the softmax normaliser and accuracy plateaus near 0.970 (measured, 5 seeds, iterations
  900-1000); with `mean_return` it keeps rising (0.977 at 1,000). `batch_mean` centres the whole
  weight Q̂^π + α·A^μ per position; it also centres A^μ, and stalled two of five seeds;
- SFT length: 50 iterations of batch 64 on 3,200 samples of μ_5 = one epoch, as App. B says;
- tokens after EOS carry no loss; the EOS token itself is an action.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pav.core.io import write_json
from pav.core.seeding import derive_seed
from pav.didactic.policy import MadeEnsemble
from pav.didactic.prover import GammaProver
from pav.didactic.task import PlantedTask
from pav.rollouts.estimates import advantages_from_prefix_values

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Member:
    """One independent RL run inside an ensemble."""

    seed: int
    reward: Literal["outcome", "effective"]
    gamma: float | None = None  # prover strength γ of μ_γ (effective reward only)
    alpha: float = 0.0  # α of Q^π + α·A^μ (effective reward only)
    adv: Literal["exact", "mc"] = "exact"  # how A^μ is read
    n_mc: int = 0  # rollouts of μ per prefix when adv == "mc"

    def __post_init__(self) -> None:
        if self.reward == "effective" and self.gamma is None:
            raise ValueError("an effective-reward member needs its prover strength gamma")
        if self.adv == "mc" and self.n_mc < 1:
            raise ValueError("adv='mc' needs n_mc >= 1 rollouts per prefix")


@dataclass(frozen=True)
class RLSettings:
    """Settings shared by all members of one ensemble; no defaults: `pav.didactic.experiments`
    fills them from the stage's config."""

    iterations: int
    batch_size: int
    optimizer: Literal["adam", "sgd"]
    lr: float
    q_base: Literal["return", "rollouts"]
    q_rollouts: int  # rollouts of π per prefix when q_base == "rollouts"
    baseline: Literal["none", "batch_mean", "mean_return"]
    eval_every: int  # 0: no separate evaluation
    eval_samples: int
    checkpoints: tuple[int, ...]


@dataclass
class RLHistory:
    """What an RL run of E members measured."""

    batch_accuracy: list[list[float]] = field(default_factory=list)  # [iteration][member]
    eval_iterations: list[int] = field(default_factory=list)
    eval_accuracy: list[list[float]] = field(default_factory=list)  # [eval point][member]
    checkpoints: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def generators(seeds: Sequence[int], purpose: str) -> list[torch.Generator]:
    """One torch generator per member, independent across purposes (sampling, eval, ...)."""
    return [torch.Generator().manual_seed(derive_seed(s, purpose)) for s in seeds]


def rngs(seeds: Sequence[int], purpose: str) -> list[np.random.Generator]:
    return [np.random.default_rng(derive_seed(s, purpose)) for s in seeds]


def train_sft(
    policy: MadeEnsemble, task: PlantedTask, gamma: float, n_samples: int, iterations: int, batch_size: int,
    lr: float, progress: Progress | None = None,
) -> list[float]:
    """Next-token SFT of every member on its own `n_samples` responses of μ_γ; returns losses."""
    prover = GammaProver(task, gamma)
    data = torch.from_numpy(
        np.stack([prover.sample(n_samples, r) for r in rngs(policy.seeds, "sft-data")])
    )  # (E, n_samples, T)
    order = [np.concatenate([r.permutation(n_samples) for _ in range(-(-iterations * batch_size // n_samples))])
             for r in rngs(policy.seeds, "sft-order")]
    idx = torch.from_numpy(np.stack(order))  # (E, >= iterations * batch_size)
    mask = torch.from_numpy(task.action_mask(task.states(data.numpy())))
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for it in range(iterations):
        rows = idx[:, it * batch_size:(it + 1) * batch_size]  # (E, B)
        tokens = torch.gather(data, 1, rows[..., None].expand(-1, -1, task.length))
        m = torch.gather(mask, 1, rows[..., None].expand(-1, -1, task.length))
        per_member = -(policy.log_probs(tokens) * m).sum(-1).mean(-1)  # (E,)
        opt.zero_grad()
        per_member.sum().backward()
        opt.step()
        losses.append(float(per_member.detach().mean()))
        if progress:
            progress(1)
    return losses


def train_rl(
    policy: MadeEnsemble, task: PlantedTask, members: Sequence[Member], settings: RLSettings,
    progress: Progress | None = None,
) -> RLHistory:
    """Policy gradient with per-step weights for every member at once (see module docstring)."""
    if [m.seed for m in members] != policy.seeds:
        raise ValueError("members and policy must list the same seeds in the same order")
    provers = {m.gamma: GammaProver(task, m.gamma) for m in members if m.reward == "effective"}
    sample_gen, eval_gen = generators(policy.seeds, "rl-sample"), generators(policy.seeds, "rl-eval")
    q_gen, mc_rng = generators(policy.seeds, "rl-q"), rngs(policy.seeds, "rl-mc")
    opt = _optimizer(policy, settings)
    history = RLHistory()
    for it in range(settings.iterations + 1):
        _evaluate_and_checkpoint(policy, task, settings, it, eval_gen, history)
        if it == settings.iterations:
            break
        tokens = policy.sample(settings.batch_size, sample_gen)  # (E, B, T)
        states = task.states(tokens.numpy())  # (E, B, T + 1)
        rewards = task.rewards(tokens.numpy())  # (E, B)  Rex
        q_base = _q_base(policy, task, tokens, rewards, settings, q_gen)  # (E, B, T)  Q̂^π
        adv = _adv_prover(members, provers, states, mc_rng)  # (E, B, T)  A^μ
        alpha = np.array([m.alpha if m.reward == "effective" else 0.0 for m in members])
        mask = task.action_mask(states)  # (E, B, T)
        weights = _step_weights(q_base, adv, alpha, mask, settings.baseline)  # (E, B, T)
        loss = _pg_loss(policy, tokens, torch.from_numpy(weights), torch.from_numpy(mask))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.batch_accuracy.append(rewards.mean(axis=1).tolist())
        if progress:
            progress(1)
    return history


def _q_base(
    policy: MadeEnsemble, task: PlantedTask, tokens: torch.Tensor, rewards: np.ndarray,
    settings: RLSettings, gens: list[torch.Generator],
) -> np.ndarray:
    """Q̂^π(s_t, a_t) for every step: (E, B, T)."""
    e, b, t = tokens.shape
    if settings.q_base == "return":
        return np.broadcast_to(rewards[:, :, None], (e, b, t)).copy()
    r = settings.q_rollouts
    prefix = tokens[:, :, None, None, :].expand(e, b, t, r, t).reshape(e, b * t * r, t)
    prefix_len = torch.arange(1, t + 1)[None, None, :, None].expand(e, b, t, r).reshape(e, -1)
    finished = policy.sample(b * t * r, gens, prefix=prefix, prefix_len=prefix_len)
    return task.rewards(finished.numpy()).reshape(e, b, t, r).mean(axis=-1)


def _adv_prover(
    members: Sequence[Member], provers: dict[float, GammaProver], states: np.ndarray,
    mc_rng: list[np.random.Generator],
) -> np.ndarray:
    """A^μ(s_t, a_t) for every member's steps, 0 for outcome-only members: (E, B, T)."""
    adv = np.zeros(states.shape[:-1] + (states.shape[-1] - 1,))
    for i, m in enumerate(members):
        if m.reward == "outcome":
            continue
        prover = provers[m.gamma]
        if m.adv == "exact":
            adv[i] = prover.advantages(states[i])
        else:
            v_hat = prover.mc_prefix_values(states[i], m.n_mc, mc_rng[i])  # (B, T + 1) V̂^μ
            adv[i] = advantages_from_prefix_values(v_hat)
    return adv


def _step_weights(
    q_base: np.ndarray, adv: np.ndarray, alpha: np.ndarray, mask: np.ndarray, baseline: str
) -> np.ndarray:
    """Eq. 5 step weights Q̂^π + α·A^μ, (E, B, T), minus the chosen baseline."""
    if baseline == "mean_return":
        return _batch_mean_centred(q_base, mask) + alpha[:, None, None] * adv
    weights = q_base + alpha[:, None, None] * adv
    return _batch_mean_centred(weights, mask) if baseline == "batch_mean" else weights


def _batch_mean_centred(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Subtract, per member and position, the mean weight over the batch's live tokens."""
    live = mask.sum(axis=1, keepdims=True)  # (E, 1, T)
    mean = (weights * mask).sum(axis=1, keepdims=True) / np.maximum(live, 1)
    return weights - mean


def _pg_loss(
    policy: MadeEnsemble, tokens: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """−Σ_members mean_batch Σ_t mask · w_t · log π(a_t | s_t)."""
    logp = policy.log_probs(tokens)  # (E, B, T)
    return -(logp * weights.to(logp.dtype) * mask).sum(-1).mean(-1).sum()


def _optimizer(policy: MadeEnsemble, settings: RLSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(policy.parameters(), lr=settings.lr)
    return torch.optim.SGD(policy.parameters(), lr=settings.lr)


def _evaluate_and_checkpoint(
    policy: MadeEnsemble, task: PlantedTask, settings: RLSettings, it: int,
    gens: list[torch.Generator], history: RLHistory,
) -> None:
    if settings.eval_every and it % settings.eval_every == 0:
        acc = task.rewards(policy.sample(settings.eval_samples, gens).numpy()).mean(axis=1)
        history.eval_iterations.append(it)
        history.eval_accuracy.append(acc.tolist())
    if it in settings.checkpoints:
        history.checkpoints[it] = policy.member_state()


def success_counts(
    policy: MadeEnsemble, task: PlantedTask, max_samples: int, chunk: int = 1024,
    min_successes: int = 1000, purpose: str = "pass-at-n", cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per member: (successes, samples) of i.i.d. temperature-1 responses.

    Each member samples in chunks until it has `min_successes` successes or `max_samples`
    samples, so tiny probabilities get the full budget and large ones stop early. With
    `cache_dir`, counts are stored under the member's parameter fingerprint: a policy that RL
    left unchanged (e.g. outcome-only with no success yet) is not sampled twice.
    """
    succ = np.zeros(policy.n_members, dtype=np.int64)
    n = np.zeros(policy.n_members, dtype=np.int64)
    for i in range(policy.n_members):
        key = f"{policy.fingerprint(i)}-{max_samples}-{chunk}-{min_successes}-{purpose}"
        cached = cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json" if cache_dir else None
        if cached is not None and cached.exists():
            succ[i], n[i] = json.loads(cached.read_text())
            continue
        member = policy.subset([i])
        gens = generators(member.seeds, purpose)
        while n[i] < max_samples and succ[i] < min_successes:
            succ[i] += int(task.rewards(member.sample(chunk, gens).numpy()).sum())
            n[i] += chunk
        if cached is not None:
            write_json(cached, [int(succ[i]), int(n[i])])
    return succ, n
