"""Next-token SFT of a causal LM on (prompt, completion) pairs with per-character loss weights.

Task-agnostic: the stage hands in a stream of examples; prompt tokens carry no loss, completion
tokens carry the weight of their characters (a task may emphasise some characters, e.g. the
result digit of an arithmetic step). Character weights map to tokens through the fast
tokenizer's offsets, so the same code serves the built-in character tokenizer and BPE models.
The weighted loss is divided by the number of completion tokens.
Optimiser: AdamW, linear warm-up then cosine decay to `min_lr_ratio`, gradient clipping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pav.core.checkpoint import (checkpoint_dirs, flatten_optimizer, prune, remove_cut_writes, unflatten_optimizer,
                                 write_dir_atomically)
from pav.core.io import write_json
from pav.core.schedule import warmup_cosine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTSummary:
    """``summary.json`` of a `pav sft` run (read with `pav.core.rundir.read_summary`)."""
    STAGES = ("sft",)
    train_seconds: float
    final_loss: float
    policy_dir: str
    heldout: dict[str, Any]  # pass@k, mean_steps and the step mix on held-out problems (`evaluate_policy`)
    gate: dict[str, Any]  # the quality gate: passed (None off the built-in task) and reasons


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    char_weights: tuple[float, ...] | None = None  # one per completion character; None: all 1


@dataclass(frozen=True)
class SFTSchedule:
    """No defaults: `pav sft`'s config holds them (and `pav rl`'s for rejection fine-tuning)."""

    steps: int
    lr: float
    warmup: int
    min_lr_ratio: float
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float


def encode_batch(tokenizer, examples: Sequence[Example], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids (B, T), attention mask (B, T), and loss weights (B, T) on completion tokens.

    `weights[b, t]` is the weight of predicting token t (0 for prompt and padding tokens); the
    model's logits at t − 1 predict it.
    """
    texts = [e.prompt + e.completion for e in examples]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False, truncation=True,
                    max_length=max_length, padding="longest", padding_side="right", return_tensors="pt")
    weights = torch.zeros(enc["input_ids"].shape, dtype=torch.float32)
    for b, e in enumerate(examples):
        start = len(e.prompt)
        cw = e.char_weights or (1.0,) * len(e.completion)
        if len(cw) != len(e.completion):
            raise ValueError("char_weights must have one weight per completion character")
        for t, (lo, hi) in enumerate(enc["offset_mapping"][b].tolist()):
            if hi > lo and lo >= start and enc["attention_mask"][b, t]:
                weights[b, t] = max(cw[lo - start:hi - start])
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "weights": weights}


def weighted_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w_t · CE(logits_{t−1}, id_t) / #completion tokens; logits (B, T, V), ids and weights (B, T)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    nll = -logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    w = weights[:, 1:]
    return (nll * w).sum() / (w > 0).sum().clamp_min(1)


def train_lm(
    model: torch.nn.Module, tokenizer, batches: Iterator[list[Example]], schedule: SFTSchedule,
    max_length: int, on_step: Callable[[int, float], None] | None = None,
    checkpoints: Path | None = None, checkpoint_every: int = 0,
) -> list[float]:
    """Train `model` in place for `schedule.steps` batches; returns the loss of every step.

    With ``checkpoints``, the training state is saved there every ``checkpoint_every`` steps and
    at the end (`save_checkpoint`), and a call that finds a checkpoint continues from the newest:
    it skips the batches already trained on, so an interrupted run ends where an uninterrupted
    one does (same batches, same optimiser and RNG state)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": schedule.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=schedule.lr, betas=schedule.betas)
    if checkpoints is not None and checkpoint_every < 1:
        raise ValueError("checkpoint_every must be >= 1")
    losses = resume(checkpoints, model, opt) if checkpoints is not None else []
    for _ in range(len(losses)):  # the batches the checkpoint has trained on
        next(batches)
    model.train()
    start = time.perf_counter()
    for step in range(len(losses), schedule.steps):
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in encode_batch(tokenizer, next(batches), max_length).items()}
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, schedule)
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) as the sampler numbers them
        logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions).logits
        loss = weighted_lm_loss(logits, batch["input_ids"], batch["weights"])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite SFT loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step, losses[-1])
        if checkpoints is not None and (len(losses) % checkpoint_every == 0 or len(losses) == schedule.steps):
            save_checkpoint(checkpoints, model, opt, losses)
    model.eval()
    log.info("sft: %d steps in %.0f s, final loss %.3f", schedule.steps, time.perf_counter() - start, losses[-1])
    return losses


# ----------------------------------------------------------------------------------------------
# Checkpoints: ``<checkpoints>/step-XXXXXXXX/`` = model.safetensors, opt.safetensors + opt.json,
# rng.safetensors (torch's CPU RNG) and trainer.json (the loss of every step so far), renamed into
# place whole (`pav.core.checkpoint.write_dir_atomically`); the newest two are kept.


def save_checkpoint(root: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, losses: list[float],
                    keep: int = 2) -> Path:
    from safetensors.torch import save_file, save_model

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
        tensors, scalars = flatten_optimizer(opt.state_dict())
        save_file(tensors, str(tmp / "opt.safetensors"))
        write_json(tmp / "opt.json", scalars)
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        write_json(tmp / "trainer.json", {"step": len(losses), "losses": losses})

    path = root / f"step-{len(losses):08d}"
    write_dir_atomically(path, fill)
    prune(root, "step", keep)
    return path


def checkpointed_steps(root: Path) -> int:
    """Steps the newest checkpoint under ``root`` holds (0: none)."""
    found = checkpoint_dirs(root, "step")
    return int(found[0].name.removeprefix("step-")) if found else 0


def resume(root: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[float]:
    """Load the newest checkpoint under ``root`` into ``model`` and ``opt``; the losses of the
    steps it holds ([] when there is none)."""
    from safetensors.torch import load_file, load_model

    remove_cut_writes(root)
    found = checkpoint_dirs(root, "step")
    if not found:
        return []
    path = found[0]
    trainer = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    load_model(model, str(path / "model.safetensors"))
    opt.load_state_dict(unflatten_optimizer(load_file(str(path / "opt.safetensors")),
                                            json.loads((path / "opt.json").read_text(encoding="utf-8"))))
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch_cpu"])
    log.info("sft: resumed from %s (step %d)", path, trainer["step"])
    return list(trainer["losses"])
