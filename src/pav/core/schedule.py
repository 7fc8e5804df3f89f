"""The learning-rate schedule every pav trainer uses: linear warm-up, then cosine decay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class Schedule(Protocol):
    steps: int  # total optimiser steps
    lr: float  # peak learning rate
    warmup: int  # linear warm-up steps
    min_lr_ratio: float  # final learning rate as a share of lr


@dataclass(frozen=True)
class LRSchedule:
    """A `Schedule` for trainers whose settings name these numbers differently."""

    steps: int
    lr: float
    warmup: int
    min_lr_ratio: float


def warmup_cosine(step: int, s: Schedule) -> float:
    """Learning rate at `step` (0-based): linear warm-up to s.lr, then cosine decay to s.lr · s.min_lr_ratio."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
