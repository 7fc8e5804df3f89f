"""Seeding: same seed -> same draws from every RNG; stable derived seeds."""

import random
import sys
import types

import numpy as np
import pytest

from pav.core.seeding import derive_seed, seed_everything


@pytest.fixture
def fake_torch(monkeypatch):
    """A stand-in torch that records seeds (importing the real one takes seconds)."""
    module = types.ModuleType("torch")
    module.seeds = []
    module.manual_seed = module.seeds.append
    monkeypatch.setitem(sys.modules, "torch", module)
    return module


def _draws(seed):
    rng = seed_everything(seed)
    return random.random(), np.random.rand(), rng.random()


def test_same_seed_same_draws(fake_torch):
    assert _draws(7) == _draws(7)
    assert all(a != b for a, b in zip(_draws(7), _draws(8)))
    assert fake_torch.seeds == [7, 7, 7, 8]


def test_large_seeds_fit_numpy_legacy_rng(fake_torch):
    seed = derive_seed(1, "x")
    assert seed >= 2**32  # would be rejected by np.random.seed unless reduced
    assert _draws(seed) == _draws(seed)
    assert fake_torch.seeds[-1] == seed


def test_torch_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert _draws(3) == _draws(3)


@pytest.mark.parametrize("seed", [-1, 1.0, True, "1"])
def test_seed_must_be_non_negative_int(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        seed_everything(seed)


def test_derive_seed_is_pinned_and_63_bit():
    # Pinned: these must never change, or every derived experiment seed changes with them.
    assert derive_seed(0) == 5002178623122376926
    assert derive_seed(1234, "rollout", 3) == 6500651729228213939
    assert derive_seed(1234, "rollout", "3") == 5162538769903076603
    seeds = {derive_seed(s, k) for s in range(50) for k in ("a", "b", 0, 1)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_derive_seed_key_boundaries_matter():
    assert derive_seed(1, "ab", "c") != derive_seed(1, "a", "bc")
    assert derive_seed(1, "a", "b") != derive_seed(1, "b", "a")
    assert derive_seed(12, 3) != derive_seed(1, 23)
    with pytest.raises(TypeError, match="keys must be str or int"):
        derive_seed(1, 2.0)
    with pytest.raises(TypeError, match="keys must be str or int"):
        derive_seed(1, True)
