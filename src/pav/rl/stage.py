"""`pav rl`: online RL of the base policy with outcome or dense progress rewards (the paper, §5).

The start is the SFT policy, optionally after rejection fine-tuning (RFT, the paper's
initialisation) on the correct seed solutions of a label run (``rft_labels``). ``--set
reward=orm|pav|pqv|prover-q`` picks the per-step weight (`pav.rl.rewards`); the verifier is fixed
during RL. Held-out accuracy (pass@1 from ``eval_samples`` samples per problem) is measured every
``eval_every`` iterations, Pass@N up to N = ``final_samples`` at the end. Writes ``policy/``,
``metrics.jsonl``, ``checkpoints/`` (a killed run resumes with the same command) and
``summary.json``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pav.core.config import knob
from pav.core.rundir import mark_complete, start_run
from pav.core.seeding import derive_seed
from pav.core.progress import progress_bar
from pav.policies.options import LoadOptions
from pav.rollouts.expert import EXPERT  # `verifier` value: the task's exact expert values instead of a PQV
from pav.tasks.build import TASK_HELP, TaskConfig, build_task, check_source, is_builtin, prompt_of

if TYPE_CHECKING:
    from pav.rl.train import RLSummary  # imports torch

log = logging.getLogger(__name__)

PASS_AT = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class RLConfig:
    task: TaskConfig = knob(TaskConfig(), TASK_HELP)
    policy: str = knob("", "start policy: a `pav sft` run (or an RFT'd policy directory)")
    load: LoadOptions = knob(LoadOptions(), "how models are loaded and where training runs: device, dtype, remote code")
    rft_labels: str = knob("", "a `pav label` run: rejection fine-tune on its correct seed solutions first (empty: no RFT)")
    rft_steps: int = knob(300, "RFT optimiser steps (AdamW, warm-up + cosine, as SFT); 0: no RFT, even with rft_labels")
    rft_lr: float = knob(5e-4, "RFT peak learning rate")
    rft_warmup: int = knob(30, "RFT linear warm-up steps (its decay, clip and AdamW settings: min_lr_ratio, grad_clip, "
                               "rft_weight_decay, rft_betas)")
    rft_weight_decay: float = knob(0.01, "RFT AdamW weight decay of matrices")
    rft_betas: tuple[float, float] = knob((0.9, 0.98), "RFT AdamW betas")
    rft_batch_size: int = knob(16, "RFT correct solutions per step")
    verifier: str = knob("", "the fixed PQV (`pav train-verifier` run), needed unless reward=orm; `expert`: the exact "
                              "values of the built-in task's noisy expert instead (oracle ablation, `pav.verifier.exact`)")
    reward: Literal["orm", "pav", "pqv", "prover-q"] = knob(
        "pav", "per-step weight: outcome (+ α·A^μ | α·Q^π | α·Q^μ), the paper's Eq. 5 and App. G")
    alpha: float = knob(0.3, "α: weight of the verifier's term (built-in task: α >= 1 let the policy exploit the small PAV)")
    prover: str = knob("", "a `pav train-verifier` run on another prover's labels (`pav label --set prover=...`): "
                           "A^μ / Q^μ from its values (Best-of-k of them) instead of the PQV's; reward=pav and prover-q "
                           "then need no PQV")
    k: int = knob(1, "prover μ = Best-of-K(π₀) of the verifier's A^μ / Q^μ (of `prover`'s when set); 1: the start "
                  "policy itself, the paper's best RL prover (built-in task, 3 seeds: more stable than 4)")
    graded_final: bool = knob(True, "an answer step's Q and A^μ use its checked outcome, exact for any prover, not the "
                                    "verifier's estimate (false: the verifier's; why: `pav.rl.rewards`)")
    baseline: Literal["value", "rloo"] = knob("value", "learned token-level value (paper) or leave-one-out over a problem's samples")
    iterations: int = knob(300, "policy updates")
    problems_per_iter: int = knob(8, "fresh training problems per update")
    samples_per_problem: int = knob(4, "solutions sampled per problem (batch = problems x samples)")
    lr: float = knob(3e-4, "policy peak learning rate (AdamW)")
    value_lr: float = knob(3e-4, "value model peak learning rate")
    warmup: int = knob(30, "linear warm-up iterations, then cosine decay")
    min_lr_ratio: float = knob(0.1, "the cosine decay ends at this share of the peak learning rates")
    kl_coef: float = knob(0.001, "KL penalty to the initial policy (paper: 0.001)")
    entropy_coef: float = knob(0.0, "entropy bonus: this times the mean token entropy is subtracted from the loss "
                                    "(not in the paper; on the built-in task it kept ORM-RL diverse, hardly PAV-RL, "
                                    "and lowered both arms' accuracy)")
    grad_clip: float = knob(1.0, "gradient norm clip")
    temperature: float = knob(1.0, "sampling temperature")
    max_new_tokens: int = knob(120, "token budget of one sampled solution")
    eval_every: int = knob(25, "held-out evaluation every this many iterations")
    eval_problems: int = knob(100, "held-out problems for accuracy and Pass@N")
    eval_samples: int = knob(4, "samples per held-out problem at each evaluation (pass@1 estimate)")
    final_samples: int = knob(64, "samples per held-out problem at the end (Pass@N, N <= this)")
    eval_max_new_tokens: int = knob(200, "token budget of one held-out solution (accuracy and Pass@N)")
    checkpoint_every: int = knob(25, "checkpoint every this many iterations")
    max_length: int = knob(0, "tokens of prompt + solution in a training batch (longer ones are cut); 0: the "
                              "policy's window, at most 1024")
    seed: int = knob(0, "seed of problems, sampling and the value head")
    threads: int = knob(1, "torch threads")

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.problems_per_iter < 1 or self.samples_per_problem < 1:
            raise ValueError("iterations, problems_per_iter and samples_per_problem must be >= 1")
        if self.baseline == "rloo" and self.samples_per_problem < 2:
            raise ValueError("the rloo baseline needs samples_per_problem >= 2")


def runs_rft(cfg: RLConfig) -> bool:
    """Whether RL starts from a rejection-fine-tuned policy: a label run is given and ``rft_steps > 0``."""
    return bool(cfg.rft_labels) and cfg.rft_steps > 0


def rft(cfg: RLConfig, out_dir: Path) -> Path:
    """Rejection fine-tuning: SFT of the start policy on the correct seed solutions of a label run."""
    import random

    import torch

    from pav.core.labelrun import check_label_run, read_problems, read_solutions
    from pav.policies.hf import save_policy
    from pav.policies.load import load_model
    from pav.sft.train import Example, SFTSchedule, train_lm
    from pav.tasks.base import join_steps

    labels = check_label_run(cfg.rft_labels, "rft_labels")
    problems = {p.problem_id: p for p in read_problems(labels)}
    correct = [s for s in read_solutions(labels) if s.outcome == 1.0]
    if not correct:
        raise ValueError(f"{cfg.rft_labels} holds no correct seed solution to fine-tune on")
    model, tokenizer = load_model(cfg.policy, cfg.load)
    task = build_task(cfg.task, tokenizer)
    examples = [Example(prompt_of(problems[s.problem_id]), join_steps(s.steps, task.step_delimiter))
                for s in correct]
    rng = random.Random(derive_seed(cfg.seed, "rft"))

    def batches():
        while True:
            yield rng.sample(examples, min(cfg.rft_batch_size, len(examples)))

    torch.manual_seed(derive_seed(cfg.seed, "rft-torch") % 2**31)
    window = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 1024
    schedule = SFTSchedule(cfg.rft_steps, cfg.rft_lr, cfg.rft_warmup, cfg.min_lr_ratio, cfg.rft_weight_decay,
                           cfg.rft_betas, cfg.grad_clip)
    train_lm(model, tokenizer, batches(), schedule, min(window, 1024),
             checkpoints=out_dir.with_name(f"{out_dir.name}-checkpoints"), checkpoint_every=cfg.checkpoint_every)
    save_policy(model, tokenizer, out_dir)
    log.info("rft: %d steps on %d correct seed solutions -> %s", cfg.rft_steps, len(correct), out_dir)
    return out_dir


def _needs_scorer(cfg: RLConfig) -> bool:
    return cfg.reward != "orm" and cfg.alpha != 0


def check_verifiers(cfg: RLConfig) -> None:
    """Refuse a reward whose verifier is missing, before any work is done."""
    prover_only = cfg.prover and cfg.reward in ("pav", "prover-q")  # they read only Q^μ and A^μ
    if _needs_scorer(cfg) and not cfg.verifier and not prover_only:
        raise ValueError(f"reward={cfg.reward} needs --set verifier=PQV_RUN (or reward=orm)")
    if cfg.verifier == EXPERT and not is_builtin(cfg.task):
        raise ValueError(f"verifier=expert is the built-in task's exact expert; task {cfg.task.source} needs a PQV run")
    if cfg.verifier == EXPERT and cfg.prover:
        raise ValueError("verifier=expert gives exact Q^μ and A^μ already; drop --set prover=...")


def step_scorer(cfg: RLConfig, task: Any):
    """The fixed `Scorer` of the verifier's term, None when the reward has none: the exact expert, the
    PQV with its Best-of-k prover, or a prover verifier's Best-of-k (beside the PQV for reward=pqv)."""
    if not _needs_scorer(cfg):
        return None
    if cfg.verifier == EXPERT:
        from pav.verifier.exact import ExpertScorer

        return ExpertScorer(task, k=cfg.k)
    from pav.verifier.scorer import MixedScorer, VerifierScorer
    from pav.verifier.load import load_verifier

    prover = VerifierScorer(load_verifier(cfg.prover, cfg.load), k=cfg.k, batch_size=64) if cfg.prover else None
    if prover is not None and cfg.reward in ("pav", "prover-q"):
        return prover  # its q_base is μ's, which these rewards do not read: no PQV pass is spent
    base = VerifierScorer(load_verifier(cfg.verifier, cfg.load), k=cfg.k, batch_size=64)
    return MixedScorer(base, prover) if prover is not None else base


def heldout_problems(cfg: RLConfig, task: Any) -> list:
    """The held-out problems of a run: fixed by its seed, so arms of one seed share them."""
    return task.problems(cfg.eval_problems, derive_seed(cfg.seed, "rl-eval"), "heldout")


def final_evaluation(cfg: RLConfig, policy: Any, task: Any, heldout: list) -> dict[str, Any]:
    """Pass@N for N <= ``final_samples`` on the held-out problems, with per-problem rows; the
    sampling seed is the run's, so a start policy evaluated here sees what its arms' policies see."""
    from pav.rollouts.evaluate import evaluate_policy

    return evaluate_policy(policy, task, heldout, cfg.final_samples, [n for n in PASS_AT if n <= cfg.final_samples],
                           derive_seed(cfg.seed, "rl-final"), max_new_tokens=cfg.eval_max_new_tokens, per_problem=True)


def evaluate_start(cfg: RLConfig, policy_dir: str) -> dict[str, Any]:
    """The start policy's `final_evaluation` for ``cfg.seed`` (the paper's Fig. 8a draws the SFT
    policy's Pass@N beside the RL policies')."""
    import torch

    from pav.policies.hf import HFPolicy
    from pav.policies.load import load_model

    torch.set_num_threads(cfg.threads)
    model, tokenizer = load_model(policy_dir, cfg.load)
    task = build_task(cfg.task, tokenizer)
    policy = HFPolicy(model.eval(), tokenizer, policy_id=f"rl-start-seed{cfg.seed}", device=cfg.load.resolved_device(),
                      delimiter=task.step_delimiter)
    return final_evaluation(cfg, policy, task, heldout_problems(cfg, task))


def run_rl(cfg: RLConfig, out: str | Path | None, overwrite: bool = False, show_progress: bool = True,
           progress=None) -> RLSummary:
    """RFT (optional) → RL loop → held-out Pass@N; see the module docstring."""
    import torch

    from pav.policies.hf import HFPolicy, save_policy
    from pav.policies.load import load_model, resolve_model_dir
    from pav.rl.train import Learner, RLSettings, RLSummary, train_rl
    from pav.rollouts.evaluate import evaluate_policy
    from pav.verifier.model import ValueVerifier

    if not cfg.policy:
        raise ValueError("rl needs a start policy: --set policy=SFT_RUN")
    cfg.load.check_trainable("rl")
    check_verifiers(cfg)
    check_source(cfg.task)  # a task plug-in that cannot be imported stops the run before any work
    torch.set_num_threads(cfg.threads)
    run_dir = start_run(out, f"rl-{cfg.reward}", cfg, overwrite)
    start_dir = resolve_model_dir(cfg.policy)
    if runs_rft(cfg):
        start_dir = str(run_dir / "rft")
        if not (Path(start_dir) / "config.json").is_file():
            rft(cfg, Path(start_dir))
    model, tokenizer = load_model(start_dir, cfg.load)
    task = build_task(cfg.task, tokenizer, rejects_dir=run_dir)  # chat prompts: the policy's template
    policy = HFPolicy(model, tokenizer, policy_id=f"rl-{cfg.reward}-seed{cfg.seed}", device=cfg.load.resolved_device(),
                      delimiter=task.step_delimiter)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    value = ValueVerifier.from_policy(start_dir, seed=derive_seed(cfg.seed, "value-head") % 2**31,
                                      **cfg.load.load_kwargs()) \
        if cfg.baseline == "value" else None
    learner = Learner(policy, ref, value, torch.optim.AdamW(model.parameters(), lr=cfg.lr),
                      torch.optim.AdamW(value.parameters(), lr=cfg.value_lr) if value is not None else None)
    scorer = step_scorer(cfg, task)
    heldout = heldout_problems(cfg, task)

    def evaluate(it: int) -> dict[str, float]:
        q = evaluate_policy(policy, task, heldout, cfg.eval_samples, (1,), derive_seed(cfg.seed, "rl-eval", it),
                            max_new_tokens=cfg.eval_max_new_tokens)
        return {"rl/heldout_accuracy": q["pass@1"]}

    window = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 1024
    settings = RLSettings.of(cfg, max_length=cfg.max_length or min(window, 1024))  # the loop's knobs are the stage's
    start_acc = evaluate(0)["rl/heldout_accuracy"]
    with progress_bar(total=cfg.iterations, desc=f"rl {cfg.reward}", show=show_progress, log=log) as bar:
        def on_iter(it: int) -> None:
            bar.update(1)
            if progress is not None:
                progress(1)

        last = train_rl(learner, task, scorer, settings, run_dir, evaluate, on_iter)
    save_policy(model, tokenizer, run_dir / "policy")
    final = final_evaluation(cfg, policy, task, heldout)
    summary = RLSummary(reward=cfg.reward, alpha=cfg.alpha, baseline=cfg.baseline, seed=cfg.seed,
                        start_heldout_accuracy=start_acc, final=final, last=last,
                        samples=cfg.iterations * cfg.problems_per_iter * cfg.samples_per_problem, start_policy=start_dir)
    mark_complete(run_dir, summary)
    log.info("rl %s: held-out accuracy %.3f -> %.3f after %d samples; pass@%d %.3f -> %s", cfg.reward, start_acc,
             final["pass@1"], summary.samples, max(k for k in PASS_AT if k <= cfg.final_samples),
             final[f"pass@{max(k for k in PASS_AT if k <= cfg.final_samples)}"], run_dir)
    return summary
