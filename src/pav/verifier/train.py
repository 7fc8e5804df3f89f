"""Verifier training: soft-label binary cross-entropy on Monte-Carlo values (the paper, §4.2 and App. D).

The loop, top to bottom: draw a batch of examples (class-balanced or uniform,
`pav.verifier.data`), score every labelled prefix of each in one forward pass, take
``Σ w · BCE(logit, Q̂) / Σ w`` over all labelled prefixes of the batch (soft targets Q̂ ∈ [0, 1]),
clip the gradient norm, AdamW step; linear warm-up then cosine decay to ``min_lr_ratio · lr``.
``verifier/loss`` and ``verifier/lr`` go to ``metrics.jsonl`` every step, held-out MSE of the
values against Q̂ (and the Monte-Carlo noise floor, mean Q̂(1−Q̂)/n) every ``eval_every`` steps.

Choices where the paper is silent or departs: the paper trains 20k iterations at batch 32 with
max lr 5e-7 from a 9B checkpoint; the defaults here suit a tiny CPU backbone and the default
label run (200 problems), where longer or faster training overfits. Class-balanced sampling
(§4.4) is available but off by default: on the default labels (mean Q̂ 0.13) it pulled the values
up and worsened held-out MSE from 0.043 to 0.104 (a constant predictor: 0.063) for the same
outcome AUROC (0.879 vs 0.875), measured with 400 steps at lr 1e-4. A batch counts
*solutions*, not prefixes. Weight decay skips biases and norms. Draws are i.i.d. with replacement.

Checkpoints (`pav.verifier.checkpoint`) are written every ``checkpoint_every`` steps and at the
end. On start, the newest checkpoint that passes every check (marker, checksums,
readable files, shapes) is restored; every skipped one is named with its reason in a warning. If
checkpoints exist and none is usable, training raises unless ``restart=True``. A checkpoint of a
different config or data raises too. Restoring parameters, optimizer, schedule step, RNG states
and sampler position makes a killed-and-resumed run end with the parameters of an uninterrupted
one (tested on CPU). Metrics lines past the resumed step are dropped, so the file reads as one run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pav.core.checkpoint import write_dir_atomically
from pav.core.config import knob
from pav.core.schedule import warmup_cosine
from pav.core.metrics import METRICS_FILE, MetricsLogger, trim_metrics
from pav.core.seeding import derive_seed
from pav.core.progress import progress_bar
from pav.verifier.checkpoint import CHECKPOINTS, resume, save_checkpoint
from pav.verifier.distributed import Ranks
from pav.verifier.data import ExampleSampler, VerifierExample, balanced_probs
from pav.verifier.lora import LoraOptions, add_lora, merge_lora
from pav.verifier.model import ValueVerifier, collate, warn_encoding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifierTrainConfig:
    steps: int = knob(400, "optimizer steps")
    batch_size: int = knob(16, "solutions per batch; each brings all its labelled prefixes")
    lr: float = knob(1e-4, "peak learning rate (AdamW)")
    warmup: int = knob(50, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = knob(0.1, "learning rate at the end, as a share of lr")
    weight_decay: float = knob(0.01, "AdamW weight decay of matrices (not biases or norms)")
    grad_clip: float = knob(1.0, "clip the gradient norm to this")
    balanced: bool = knob(False, "class-balanced sampling over Q̂ < 0.5 vs >= 0.5 (the paper's §4.4 recipe)")
    padding_side: Literal["left", "right"] = knob("right", "padding of training batches")
    eval_every: int = knob(100, "held-out evaluation every this many steps (and at the end)")
    eval_batch_size: int = knob(64, "solutions per held-out batch")
    checkpoint_every: int = knob(100, "checkpoint every this many steps (and at the end)")
    keep_checkpoints: int = knob(2, "complete checkpoints kept (oldest are deleted)")
    seed: int = knob(0, "seed of the sampler and of torch")
    lora: LoraOptions = knob(LoraOptions(), "optional LoRA adapters instead of training the whole backbone (peft)")

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.eval_every, self.eval_batch_size,
               self.checkpoint_every, self.keep_checkpoints) < 1 or self.warmup < 0:
            raise ValueError("steps, batch sizes, intervals and keep_checkpoints must be >= 1, warmup >= 0")


# Knobs that do not change the parameters a run ends with; a resumed run may change them.
_FREE_KNOBS = ("eval_every", "eval_batch_size", "checkpoint_every", "keep_checkpoints")


@dataclass(frozen=True)
class VerifierSummary:
    """``summary.json`` of a `pav train-verifier` run: `train_verifier`'s numbers, then the stage's."""
    STAGES = ("verifier-pqv", "verifier-orm")
    steps: int
    resumed_from: int  # the step the call that finished the run started from (0: from scratch)
    final_loss: float | None
    train_examples: int
    train_prefixes: int
    heldout_examples: int
    heldout_prefixes: int
    seconds: float
    heldout_mse: float | None  # None without held-out examples
    heldout_noise_floor: float | None
    heldout_mse_constant: float | None
    view: str
    rejected_labels: dict[str, int]  # label rows left out, per reason
    verifier_dir: str
    processes: int


@dataclass(frozen=True)
class Row:
    """An example ready for the model: ids (T,), positions / targets / weights / n (K,)."""

    input_ids: list[int]
    positions: list[int]
    targets: list[float]
    weights: list[float]
    n_rollouts: list[int]


# ------------------------------------------------------------------------------ maths


def soft_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
             total_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Σ w · BCE(sigmoid(logit), Q̂) / Σ w over labelled prefixes; all (B, K), w = 0 on padding.
    ``total_weight`` replaces the denominator: Σ w of the whole batch when it is split over ranks."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (weights * bce).sum() / (weights.sum() if total_weight is None else total_weight).clamp_min(1e-12)


# ------------------------------------------------------------------------------ data -> tensors


def fit_examples(verifier: ValueVerifier, examples: Sequence[VerifierExample]
                 ) -> tuple[list[Row], list[VerifierExample]]:
    """Tokenise examples; labelled prefixes cut by max_length are dropped (examples left with none
    are dropped too). Returns the rows and the examples as they will be trained on."""
    rows, kept = [], []
    encoded = verifier.encode_many([ex.prompt for ex in examples], [ex.steps for ex in examples])
    for ex, enc in zip(examples, encoded):
        keep = [k for k, h in enumerate(ex.prefix_lens) if h < len(enc.positions)]
        if not keep:
            continue
        fields = ("prefix_lens", "targets", "weights", "n_rollouts")
        kept.append(dataclasses.replace(ex, **{f: tuple(getattr(ex, f)[k] for k in keep) for f in fields}))
        rows.append(Row(enc.input_ids, [enc.positions[h] for h in kept[-1].prefix_lens],
                        list(kept[-1].targets), list(kept[-1].weights), list(kept[-1].n_rollouts)))
    warn_encoding(encoded, verifier.max_length)
    if len(kept) < len(examples):
        log.warning("%d of %d examples have no labelled prefix within max_length and are dropped",
                    len(examples) - len(kept), len(examples))
    return rows, kept


def make_batch(rows: Sequence[Row], pad_id: int, padding_side: str) -> dict[str, torch.Tensor]:
    """Model inputs plus targets and weights (B, K), weight 0 on padding."""
    batch = collate([(r.input_ids, r.positions) for r in rows], pad_id, padding_side)
    K = batch["positions"].shape[1]
    batch["targets"] = torch.tensor([r.targets + [0.0] * (K - len(r.targets)) for r in rows])  # (B, K)
    batch["weights"] = torch.tensor([r.weights + [0.0] * (K - len(r.weights)) for r in rows])  # (B, K)
    return batch


@torch.no_grad()
def evaluate(verifier: ValueVerifier, rows: Sequence[Row], batch_size: int) -> dict[str, float]:
    """Held-out weighted MSE of sigmoid values vs Q̂, and the noise floor mean Q̂(1−Q̂)/n."""
    was_training = verifier.training
    verifier.eval()
    sq = total = floor = 0.0
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start: start + batch_size]
            batch = make_batch(chunk, verifier.pad_id, "right")
            values = torch.sigmoid(verifier(batch["input_ids"], batch["attention_mask"], batch["positions"])).cpu()
            sq += float((batch["weights"] * (values - batch["targets"]) ** 2).sum())
            total += float(batch["weights"].sum())
            for r in chunk:
                floor += sum(w * q * (1 - q) / n for q, w, n in zip(r.targets, r.weights, r.n_rollouts))
    finally:
        verifier.train(was_training)
    total = max(total, 1e-12)
    return {"verifier/heldout_mse": sq / total, "verifier/heldout_noise_floor": floor / total}


# ------------------------------------------------------------------------------ the loop


def train_verifier(
    verifier: ValueVerifier, train: Sequence[VerifierExample], heldout: Sequence[VerifierExample],
    out: str | Path, cfg: VerifierTrainConfig, *, restart: bool = False,
    on_step: Callable[[int, float], None] | None = None, show_progress: bool | None = None,
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Train in place, resuming from ``<out>/checkpoints``; the final model goes to ``<out>/verifier``.
    ``ranks``: this process's place in a multi-process run (`pav.verifier.distributed`)."""

    ranks = ranks or Ranks()
    if cfg.batch_size < ranks.world:
        raise ValueError(f"train.batch_size ({cfg.batch_size}) must be at least the number of processes ({ranks.world})")
    if ranks.device is not None:
        verifier.to(ranks.device)
    out = Path(out)
    start_time = time.perf_counter()
    rows, kept = fit_examples(verifier, train)
    held_rows, _ = fit_examples(verifier, heldout)
    if not rows:
        raise ValueError("no training example has a labelled prefix within max_length")
    probs = balanced_probs(kept) if cfg.balanced else np.full(len(kept), 1 / len(kept))
    sampler = ExampleSampler(probs, derive_seed(cfg.seed, "verifier", "sampler"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "verifier", "lora") % 2**31)  # adapters start the same every run
        add_lora(verifier, cfg.lora)
    opt = make_optimizer(verifier, cfg)
    torch.manual_seed(derive_seed(cfg.seed, "verifier", "torch"))
    fingerprint = run_fingerprint(cfg, kept)
    first = resume(out / CHECKPOINTS, verifier, opt, sampler, fingerprint, restart)
    if ranks.is_main:
        trim_metrics(out / METRICS_FILE, first)
    model = ranks.wrap(verifier)  # DDP over the verifier when distributed; the same parameters
    verifier.train()
    losses: list[float] = []
    show = (sys.stderr.isatty() if show_progress is None else show_progress) and ranks.is_main
    with MetricsLogger(out / METRICS_FILE) if ranks.is_main else contextlib.nullcontext() as metrics:
        bar = progress_bar(range(first, cfg.steps), initial=first, total=cfg.steps, desc="verifier", show=show, log=log)
        for step in bar:
            lr = warmup_cosine(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            drawn = [rows[i] for i in sampler.draw(cfg.batch_size)]  # the global batch, the same on every rank
            batch = make_batch(ranks.share(drawn), verifier.pad_id, cfg.padding_side)
            logits = model(batch["input_ids"], batch["attention_mask"], batch["positions"])  # (B, K)
            weights = batch["weights"].to(logits.device)
            total = ranks.total(weights.sum()) if ranks.world > 1 else None
            loss = soft_bce(logits, batch["targets"].to(logits.device), weights, total) * ranks.world
            batch_loss = ranks.total(loss.detach()) / ranks.world  # the global batch's loss
            if not torch.isfinite(batch_loss):
                raise FloatingPointError(f"non-finite verifier loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP averages the ranks' gradients here
            torch.nn.utils.clip_grad_norm_(verifier.parameters(), cfg.grad_clip)
            opt.step()
            done = step + 1
            losses.append(float(batch_loss))
            if ranks.is_main:
                metrics.log(done, {"verifier/loss": losses[-1], "verifier/lr": lr})
                if held_rows and (done % cfg.eval_every == 0 or done == cfg.steps):
                    metrics.log(done, evaluate(verifier, held_rows, cfg.eval_batch_size))
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    save_checkpoint(out / CHECKPOINTS, done, verifier, opt, sampler, fingerprint,
                                    cfg.keep_checkpoints)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if on_step:
                on_step(done, losses[-1])
    verifier.eval()
    merge_lora(verifier)  # the saved verifier is an ordinary one
    ranks.barrier()
    if not ranks.is_main:
        return {"rank": ranks.rank, "steps": cfg.steps, "final_loss": losses[-1] if losses else None}
    write_dir_atomically(out / "verifier", verifier.save)
    summary = _summary(verifier, cfg, first, losses, held_rows, heldout, kept, time.perf_counter() - start_time)
    log.info("verifier: steps %d..%d in %.0f s, last loss %s, held-out MSE %s (noise floor %s) -> %s",
             first, cfg.steps, summary["seconds"], _fmt(summary["final_loss"]), _fmt(summary.get("heldout_mse")),
             _fmt(summary.get("heldout_noise_floor")), out / "verifier")
    return summary


def _summary(verifier: ValueVerifier, cfg: VerifierTrainConfig, first: int, losses: list[float],
             held_rows: list[Row], heldout: Sequence[VerifierExample], kept: list[VerifierExample],
             seconds: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "steps": cfg.steps, "resumed_from": first, "final_loss": losses[-1] if losses else None,
        "train_examples": len(kept), "train_prefixes": sum(len(e.prefix_lens) for e in kept),
        "heldout_examples": len(held_rows), "heldout_prefixes": sum(len(r.positions) for r in held_rows),
        "seconds": seconds, "heldout_mse": None, "heldout_noise_floor": None, "heldout_mse_constant": None,
    }
    if held_rows:
        ev = evaluate(verifier, held_rows, cfg.eval_batch_size)
        mean_q = np.average([t for e in kept for t in e.targets], weights=[w for e in kept for w in e.weights])
        const = [(w * (mean_q - t) ** 2, w) for r in held_rows for t, w in zip(r.targets, r.weights)]
        summary.update(heldout_mse=ev["verifier/heldout_mse"], heldout_noise_floor=ev["verifier/heldout_noise_floor"],
                       heldout_mse_constant=sum(a for a, _ in const) / max(sum(w for _, w in const), 1e-12))
    return summary


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def make_optimizer(verifier: ValueVerifier, cfg: VerifierTrainConfig) -> torch.optim.AdamW:
    decay = [p for p in verifier.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in verifier.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def run_fingerprint(cfg: VerifierTrainConfig, examples: Sequence[VerifierExample]) -> dict[str, str]:
    """Hashes of the trajectory-relevant config and of the training data."""
    knobs = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _FREE_KNOBS}
    data = hashlib.sha256()
    for ex in examples:
        data.update(json.dumps([ex.solution_id, ex.prompt, ex.steps, ex.prefix_lens, ex.targets, ex.weights]).encode())
    return {"config": hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16],
            "data": data.hexdigest()[:16]}
