"""Seeding: one call to seed every RNG a stage may touch, and stable per-task seed derivation.

``derive_seed`` hashes with SHA-256 (never Python's salted ``hash``), so the seed a sub-task gets
is the same across processes, machines and Python versions.
"""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np

logger = logging.getLogger(__name__)

_SEED_BITS = 63


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed ``random``, numpy's legacy global RNG and torch (if installed); return a fresh Generator.

    Prefer the returned ``numpy.random.Generator`` over the global RNGs in new code.
    """
    _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # the legacy RNG takes 32-bit seeds
    try:
        import torch
    except ImportError:
        logger.debug("torch not installed; not seeding it")
    else:
        torch.manual_seed(seed)  # seeds CPU and every CUDA device
    return np.random.default_rng(seed)


def derive_seed(seed: int, *keys: str | int) -> int:
    """A stable 63-bit seed for the sub-task named by ``keys`` (e.g. ``derive_seed(s, "rollout", 3)``).

    Distinct key sequences give independent-looking seeds; ``"3"`` and ``3`` are different keys.
    """
    _check_seed(seed)
    h = hashlib.sha256()
    for part in (seed, *keys):
        if isinstance(part, bool) or not isinstance(part, (str, int)):
            raise TypeError(f"derive_seed keys must be str or int, got {part!r}")
        text = f"{'i' if isinstance(part, int) else 's'}{part}".encode()
        h.update(len(text).to_bytes(8, "big") + text)  # length prefix: no ambiguous concatenations
    return int.from_bytes(h.digest()[:8], "big") >> (64 - _SEED_BITS)
