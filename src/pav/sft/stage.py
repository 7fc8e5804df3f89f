"""`pav sft`: train the tiny base policy π from scratch on the built-in task's noisy demonstrator.

Recipe (docs/design.md, re-measured in pav): GPT-2 (2 layers, n_embd 64, 4 heads) with a
character tokenizer, a fresh stream of training problems and demonstrations, batch 16, AdamW
2e-3 with warm-up and cosine decay, loss weight 3 on the result digit of each move. Held-out
problems (disjoint from training ones by the task's split) measure pass@1/8/64 and the mix of
step kinds, and the run checks the quality gate of a "mediocre but capable" base policy itself
(pass@1 in [0.15, 0.5] and pass@64 >= 0.9) and says clearly when it is missed.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pav.core.config import knob
from pav.core.metrics import MetricsLogger, trim_metrics
from pav.core.rundir import mark_complete, start_run
from pav.core.seeding import derive_seed
from pav.core.progress import progress_bar
from pav.policies.load import resolve_model_dir
from pav.policies.options import LoadOptions
from pav.sft.train import Example, SFTSchedule, SFTSummary, checkpointed_steps, train_lm
from pav.tasks.base import Task, join_steps
from pav.tasks.build import TASK_HELP, TaskConfig, build_task, check_source, is_builtin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int = knob(2, "transformer layers")
    n_embd: int = knob(64, "embedding width")
    n_head: int = knob(4, "attention heads")
    n_positions: int = knob(128, "maximum sequence length in tokens")


@dataclass(frozen=True)
class GateConfig:
    pass1_min: float = knob(0.15, "lowest acceptable held-out pass@1")
    pass1_max: float = knob(0.5, "highest acceptable held-out pass@1 (the base should stay mediocre)")
    pass64_min: float = knob(0.9, "lowest acceptable held-out pass@64 (the base must be capable)")


@dataclass(frozen=True)
class SFTConfig:
    task: TaskConfig = knob(TaskConfig(), TASK_HELP)
    init: str = knob("", "a causal LM to fine-tune (directory or HF name); empty: a new tiny GPT-2 with the "
                         "character tokenizer (tasks written in its alphabet: digits, letters, newline, ' +-*=>')")
    model: ModelConfig = knob(ModelConfig(), "GPT-2 size (when init is empty)")
    load: LoadOptions = knob(LoadOptions(), "how init is loaded and where training runs: device, dtype, remote code")
    gate: GateConfig = knob(GateConfig(), "quality gate of the base policy")
    steps: int = knob(4600, "optimiser steps")
    batch_size: int = knob(16, "demonstrations per step")
    lr: float = knob(2e-3, "peak AdamW learning rate")
    warmup: int = knob(30, "linear warm-up steps")
    min_lr_ratio: float = knob(0.1, "the cosine decay ends at this share of the peak learning rate")
    weight_decay: float = knob(0.01, "AdamW weight decay of matrices (biases and norms: none)")
    betas: tuple[float, float] = knob((0.9, 0.98), "AdamW betas")
    grad_clip: float = knob(1.0, "gradient norm clip")
    result_weight: float = knob(3.0, "loss weight on the character after `emphasis_after` (a move's result digit)")
    emphasis_after: str = knob("=", "marker whose next character gets `result_weight`; empty: uniform weights")
    checkpoint_every: int = knob(200, "checkpoint every this many steps (a killed run resumes from the newest)")
    eval_problems: int = knob(100, "held-out problems for pass@k")
    eval_samples: int = knob(64, "samples per held-out problem")
    eval_max_new_tokens: int = knob(200, "token budget of one held-out solution")
    seed: int = knob(0, "seed of model initialisation, data and evaluation")
    threads: int = knob(1, "torch threads")


def demonstrations(task: Task, cfg: SFTConfig) -> Iterator[list[Example]]:
    """An endless stream of batches of fresh training problems with demonstrator solutions."""
    rng = random.Random(derive_seed(cfg.seed, "sft-demos"))
    chunk = 0
    while True:
        problems = task.problems(cfg.batch_size * 256, derive_seed(cfg.seed, "sft-problems", chunk), "train")
        chunk += 1
        for i in range(0, len(problems), cfg.batch_size):
            batch = []
            for p in problems[i:i + cfg.batch_size]:
                completion = join_steps(task.demonstrate(p, rng), task.step_delimiter)
                batch.append(Example(task.prompt(p), completion,
                                     emphasis_weights(completion, cfg.emphasis_after, cfg.result_weight)))
            yield batch


def emphasis_weights(completion: str, marker: str, weight: float) -> tuple[float, ...]:
    """Per-character loss weights: `weight` on each character right after `marker`, else 1."""
    w = [1.0] * len(completion)
    if marker:
        at = completion.find(marker)
        while at != -1:
            nxt = at + len(marker)
            if nxt < len(w):
                w[nxt] = weight
            at = completion.find(marker, nxt)
    return tuple(w)


def run_sft(cfg: SFTConfig, out: str | Path | None, overwrite: bool = False, show_progress: bool = True) -> SFTSummary:
    """Train, save to `<run>/policy`, evaluate on held-out problems, check the gate."""
    import torch

    from pav.policies.hf import HFPolicy, save_policy
    from pav.rollouts.evaluate import evaluate_policy

    torch.set_num_threads(cfg.threads)
    cfg.load.check_trainable("sft")
    check_source(cfg.task)  # a task plug-in that cannot be imported stops the run before any work
    if cfg.init:
        resolve_model_dir(cfg.init)  # so does an init path that does not exist or a corrupt GGUF file
    run_dir = start_run(out, "sft", cfg, overwrite)
    model, tokenizer, max_length = _initial_model(cfg)
    task = build_task(cfg.task, tokenizer, rejects_dir=run_dir)
    schedule = SFTSchedule(cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio, cfg.weight_decay, cfg.betas, cfg.grad_clip)
    checkpoints = run_dir / "checkpoints"
    done = checkpointed_steps(checkpoints)  # > 0: a killed run, continued from its newest checkpoint
    trim_metrics(run_dir / "metrics.jsonl", done - 1)  # rows logged after that checkpoint are logged again
    start = time.perf_counter()
    with MetricsLogger(run_dir / "metrics.jsonl") as metrics, progress_bar(total=cfg.steps, desc="sft", show=show_progress, log=log) as bar:
        bar.update(done)

        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0 or step == cfg.steps - 1:
                metrics.log(step, {"sft/loss": loss})
                bar.set_postfix(loss=f"{loss:.3f}")

        losses = train_lm(model, tokenizer, demonstrations(task, cfg), schedule, max_length, on_step, checkpoints,
                          cfg.checkpoint_every)
    train_seconds = time.perf_counter() - start
    save_policy(model, tokenizer, run_dir / "policy")
    policy = HFPolicy(model, tokenizer, policy_id=f"sft-seed{cfg.seed}", device=cfg.load.resolved_device(),
                      delimiter=task.step_delimiter)
    heldout = task.problems(cfg.eval_problems, derive_seed(cfg.seed, "sft-eval"), "heldout")
    quality = evaluate_policy(policy, task, heldout, cfg.eval_samples, (1, 8, 64), derive_seed(cfg.seed, "sft-eval-samples"),
                              max_new_tokens=cfg.eval_max_new_tokens)
    gate = check_gate(quality, cfg.gate) if is_builtin(cfg.task) else {"passed": None, "reasons": ["the gate is for the built-in task"]}
    summary = SFTSummary(train_seconds=train_seconds, final_loss=losses[-1], policy_dir=str(run_dir / "policy"),
                         heldout=quality, gate=gate)
    mark_complete(run_dir, summary)
    _log_summary(summary)
    return summary


def _initial_model(cfg: SFTConfig):
    """(model, tokenizer, max training length): ``init`` loaded, or a new tiny GPT-2."""
    import torch

    from pav.policies.hf import tiny_gpt2
    from pav.policies.load import load_model
    from pav.policies.tokenizer import BUILTIN_ALPHABET, build_char_tokenizer

    if cfg.init:
        model, tokenizer = load_model(cfg.init, cfg.load)
        if tokenizer.pad_token_id is None:  # batches are padded; the pad positions carry no loss
            tokenizer.pad_token = tokenizer.eos_token
        window = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 1024
        return model, tokenizer, min(window, 1024)
    tokenizer = build_char_tokenizer(BUILTIN_ALPHABET)
    m = cfg.model
    model = tiny_gpt2(len(tokenizer), n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head,
                      n_positions=m.n_positions, seed=cfg.seed)
    kwargs = cfg.load.load_kwargs()
    model = model.to(kwargs["device"])
    if kwargs["dtype"]:
        model = model.to(getattr(torch, kwargs["dtype"]))
    return model, tokenizer, m.n_positions


def check_gate(quality: dict[str, Any], gate: GateConfig) -> dict[str, Any]:
    p1, p64 = quality.get("pass@1", float("nan")), quality.get("pass@64", float("nan"))
    reasons = []
    if not gate.pass1_min <= p1 <= gate.pass1_max:
        reasons.append(f"pass@1 {p1:.3f} outside [{gate.pass1_min}, {gate.pass1_max}]")
    if math.isnan(p64):
        reasons.append("pass@64 not measurable at this size (fewer than 64 samples per problem)")
    elif not p64 >= gate.pass64_min:
        reasons.append(f"pass@64 {p64:.3f} below {gate.pass64_min}")
    return {"passed": not reasons, "reasons": reasons}


def _measured(x: float) -> str:
    return "n/a (not measurable at this size)" if math.isnan(x) else f"{x:.3f}"


def _log_summary(s: SFTSummary) -> None:
    q = s.heldout
    mix = ", ".join(f"{k} {v:.2f}" for k, v in q["step_mix"].items())
    passes = " ".join(f"{k} {_measured(q.get(k, float('nan')))}" for k in ("pass@1", "pass@8", "pass@64"))
    log.info("sft: %.0f s training, loss %.3f; held-out %s; steps: %s", s.train_seconds, s.final_loss, passes, mix)
    if s.gate["passed"] is None:
        return
    if s.gate["passed"]:
        log.info("sft: quality gate passed")
    else:
        log.warning("sft: QUALITY GATE MISSED: %s. The base policy is not the mediocre-but-capable policy later "
                    "stages assume; try another --set seed=N or more --set steps=N.", "; ".join(s.gate["reasons"]))
