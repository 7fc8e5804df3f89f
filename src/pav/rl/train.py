"""Online RL of a language-model policy with dense progress rewards: one visible loop (the paper, §5).

Each iteration: sample → grade → score steps → per-step weights → advantages → loss → update.

- sample: ``samples_per_problem`` solutions for each of ``problems_per_iter`` fresh training
  problems from the current policy (seeds derived from the run seed and the iteration, so a resumed
  run draws what an uninterrupted one would);
- grade: the task's checker gives the outcome (Rex), the Monte-Carlo return Q^π of the rollout;
- score: the fixed verifier gives A^μ, Q^π or Q^μ per step (`pav.verifier.scorer.Scorer`);
- weights, advantages, loss: `pav.rl.rewards` (Eq. 5 per step; RLOO or a learned value baseline;
  REINFORCE plus a KL penalty to the initial policy);
- update: AdamW with warm-up + cosine decay and gradient clipping; the value model (a copy of the
  initial policy with a scalar head, read at every token) regresses onto the per-token weights.

Checkpoints (``checkpoints/it-XXXXXXXX/``: policy and value weights, optimiser states, iteration)
are written atomically every ``checkpoint_every`` iterations; a restarted run resumes from the
newest and drops metrics logged after it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pav.core.checkpoint import flatten_optimizer, remove_cut_writes, unflatten_optimizer, write_dir_atomically
from pav.core.io import write_json
from pav.core.metrics import MetricsLogger, trim_metrics
from pav.core.records import Problem
from pav.core.schedule import LRSchedule, warmup_cosine
from pav.core.seeding import derive_seed
from pav.rl.rewards import NonFiniteReward, advantages, policy_loss, step_weights, token_weights
from pav.rl.rollout import encode_rollouts, token_logprobs
from pav.tasks.base import Task
from pav.verifier.scorer import Scorer

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RLSummary:
    """``summary.json`` of a `pav rl` run (read with `pav.core.rundir.read_summary`)."""
    STAGES = ("rl-orm", "rl-pav", "rl-pqv", "rl-prover-q")  # rl-<reward>
    reward: str
    alpha: float
    baseline: str
    seed: int
    start_heldout_accuracy: float
    final: dict[str, Any]  # held-out Pass@N of the final policy (`pav.rl.stage.final_evaluation`)
    last: dict[str, Any]  # the last iteration's metrics
    samples: int  # training samples drawn
    start_policy: str


@dataclass(frozen=True)
class RLSettings:
    """What the loop reads; no defaults: the `pav rl` stage's config (`pav.rl.stage.RLConfig`) holds
    them, and `of` copies its fields by name (``max_length`` resolved from 0 to the policy's window)."""

    reward: str  # orm | pav | pqv | prover-q
    alpha: float
    graded_final: bool  # an answer step's bonus uses its checked outcome (`pav.rl.rewards`)
    baseline: str  # value | rloo
    iterations: int
    problems_per_iter: int
    samples_per_problem: int
    lr: float
    value_lr: float
    warmup: int
    min_lr_ratio: float
    kl_coef: float
    entropy_coef: float
    grad_clip: float
    temperature: float
    max_new_tokens: int
    max_length: int
    seed: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, cfg: Any, **changes: Any) -> RLSettings:
        """The fields of ``cfg`` (a config with every field of this class) by name, then ``changes``."""
        return cls(**{**{f.name: getattr(cfg, f.name) for f in fields(cls)}, **changes})


@dataclass
class Learner:
    """What the loop updates: the policy, its frozen start, the value model, and their optimisers."""

    policy: Any  # HFPolicy over the trainable model
    ref: torch.nn.Module  # the initial policy, frozen (KL anchor)
    value: torch.nn.Module | None  # ValueVerifier over a copy of the initial policy (baseline = value)
    opt: torch.optim.Optimizer
    value_opt: torch.optim.Optimizer | None


def sample(learner: Learner, task: Task, problems: list[Problem], s: RLSettings, it: int):
    return learner.policy.sample([task.prompt(p) for p in problems], s.samples_per_problem, until="solution",
                                 max_steps=task.max_steps, max_new_tokens=s.max_new_tokens,
                                 temperature=s.temperature, seed=derive_seed(s.seed, "rl-sample", it),
                                 is_final_step=task.is_final_step, max_step_chars=task.max_step_chars)


def train_rl(learner: Learner, task: Task, scorer: Scorer | None, s: RLSettings, run_dir: Path,
             evaluate: Callable[[int], dict[str, float]], on_iter: Callable[[int], None] | None = None) -> dict:
    """Run iterations ``[resumed, s.iterations)``; returns the last iteration's metrics."""
    model, tok = learner.policy.model, learner.policy.tokenizer
    start = resume(run_dir, learner)
    last: dict[str, float] = {}
    unscored = 0
    with MetricsLogger(run_dir / "metrics.jsonl") as metrics:
        for it in range(start, s.iterations):
            t0 = time.perf_counter()
            problems = task.problems(s.problems_per_iter, derive_seed(s.seed, "rl-problems", it), "train")
            batch = sample(learner, task, problems, s, it)  # sample
            prompts, completions, outcomes, groups, steps = [], [], [], [], []
            for g, (p, gens) in enumerate(zip(problems, batch.generations)):
                for gen in gens:
                    st = task.split_steps(gen.text)[: task.max_steps]
                    prompts.append(task.prompt(p))
                    completions.append(gen.text)
                    steps.append(st)
                    outcomes.append(task.outcome(p, st))  # grade: Rex = Monte-Carlo Q^π of the rollout
                    groups.append(g)
            scores = scorer.score(prompts, steps) if s.reward != "orm" and s.alpha != 0 else [None] * len(steps)
            weights = []
            for o, sc, st in zip(outcomes, scores, steps):  # per-step weights, Eq. 5
                w, seen = step_weights(s.reward, o, sc, s.alpha, len(st),
                                       graded_final=s.graded_final and bool(st) and task.is_final_step(st[-1]))
                weights.append(w)
                unscored += not seen
            device = next(model.parameters()).device
            enc = encode_rollouts(tok, prompts, completions, task.step_delimiter, s.max_length).to(device)
            mask = enc.completion  # (B, T)
            tok_w = token_weights(weights, enc.step_index.cpu()).to(device)  # (B, T)
            model.train()
            logp, entropy = token_logprobs(model, enc, entropy_grad=s.entropy_coef != 0)
            with torch.no_grad():
                ref_logp, _ = token_logprobs(learner.ref, enc, entropy=False)
            values = value_loss = None
            if learner.value is not None:
                values = learner.value(enc.input_ids, enc.attention_mask, _state_positions(enc.input_ids))  # (B, T)
                value_loss = (((values - tok_w) ** 2) * mask).sum() / mask.sum().clamp_min(1)
            adv = advantages(tok_w, mask, baseline=s.baseline, outcomes=outcomes, groups=groups, values=values)
            loss, kl = policy_loss(logp, ref_logp, adv, mask, s.kl_coef, entropy, s.entropy_coef)
            if not torch.isfinite(loss):
                raise NonFiniteReward(f"non-finite policy loss at iteration {it}")
            _step(learner.opt, model, loss, warmup_cosine(it, LRSchedule(s.iterations, s.lr, s.warmup, s.min_lr_ratio)), s.grad_clip)
            if learner.value is not None:
                _step(learner.value_opt, learner.value, value_loss, warmup_cosine(it, LRSchedule(s.iterations, s.value_lr, s.warmup, s.min_lr_ratio)),
                      s.grad_clip)
            model.eval()
            n_tok = float(mask.sum())
            bonus = [w - o for w, o in zip(weights, outcomes)]
            last = {"rl/train_accuracy": float(np.mean(outcomes)), "rl/reward": float(np.mean(np.concatenate(weights))),
                    "rl/reward_outcome": float(np.mean(outcomes)),
                    "rl/reward_bonus": float(np.mean(np.concatenate(bonus))) if steps else 0.0,
                    "rl/kl": float(kl), "rl/entropy": float((entropy.detach() * mask).sum() / max(n_tok, 1)),
                    "rl/steps_per_solution": float(np.mean([len(st) for st in steps])),
                    "rl/tokens_per_solution": n_tok / len(steps), "rl/loss": float(loss.detach()),
                    "rl/unscored_samples": unscored, "rl/samples": (it + 1) * len(steps),
                    "rl/seconds": time.perf_counter() - t0}
            if value_loss is not None:
                last["rl/value_loss"] = float(value_loss.detach())
            if (it + 1) % s.eval_every == 0 or it + 1 == s.iterations:
                last.update(evaluate(it + 1))
            metrics.log(it + 1, last)
            if (it + 1) % s.checkpoint_every == 0 or it + 1 == s.iterations:
                save_checkpoint(run_dir, it + 1, learner)
            if on_iter is not None:
                on_iter(it + 1)
    return last


def _state_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) position whose hidden state is the state before token t: t − 1 (t = 0 reads 0, unused)."""
    return (torch.arange(input_ids.shape[1]) - 1).clamp(min=0).expand(input_ids.shape[0], -1)


def _step(opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor, lr: float, clip: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


# ----------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(run_dir: Path, it: int, learner: Learner, keep: int = 2) -> Path:
    """``checkpoints/it-XXXXXXXX``: weights and optimiser states, written atomically; keep the newest ``keep``."""
    from safetensors.torch import save_file, save_model

    def fill(tmp: Path) -> None:
        save_model(learner.policy.model, str(tmp / "policy.safetensors"))  # handles tied embeddings
        for name, opt in (("opt", learner.opt), ("value_opt", learner.value_opt)):
            if opt is not None:
                tensors, scalars = flatten_optimizer(opt.state_dict())
                save_file(tensors, str(tmp / f"{name}.safetensors"))
                write_json(tmp / f"{name}.json", scalars)
        if learner.value is not None:
            save_model(learner.value, str(tmp / "value.safetensors"))
        write_json(tmp / "trainer.json", {"iteration": it})

    root = run_dir / CHECKPOINTS
    path = root / f"it-{it:08d}"
    write_dir_atomically(path, fill)
    for old in sorted(root.glob("it-*"), reverse=True)[keep:]:
        shutil.rmtree(old)
    return path


def resume(run_dir: Path, learner: Learner) -> int:
    """Load the newest checkpoint (if any); the iteration to continue from. Metrics past it are dropped."""
    from safetensors.torch import load_file, load_model

    remove_cut_writes(run_dir / CHECKPOINTS)
    found = sorted((run_dir / CHECKPOINTS).glob("it-*"), reverse=True) if (run_dir / CHECKPOINTS).is_dir() else []
    if not found:
        return 0
    path = found[0]
    it = json.loads((path / "trainer.json").read_text())["iteration"]
    load_model(learner.policy.model, str(path / "policy.safetensors"))
    learner.opt.load_state_dict(unflatten_optimizer(load_file(str(path / "opt.safetensors")),
                                                    json.loads((path / "opt.json").read_text())))
    if learner.value is not None:
        load_model(learner.value, str(path / "value.safetensors"))
        learner.value_opt.load_state_dict(unflatten_optimizer(load_file(str(path / "value_opt.safetensors")),
                                                              json.loads((path / "value_opt.json").read_text())))
    trim_metrics(run_dir / "metrics.jsonl", it)
    log.info("rl: resumed from %s (iteration %d)", path, it)
    return it
