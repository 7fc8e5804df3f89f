"""Keyed sampling noise: uniform, independent across keys, steps and tokens, reproducible."""

import numpy as np
import torch

from pav.policies.noise import keyed_uniform, row_keys, step_salt


def test_uniforms_are_uniform_and_in_the_open_interval():
    keys = row_keys(range(500), [0] * 500)
    u = torch.cat([keyed_uniform(step_salt(keys, t), 64) for t in range(20)]).flatten().numpy()  # 640k
    assert 0 < u.min() and u.max() < 1
    counts, _ = np.histogram(u, bins=100, range=(0, 1))
    expected = u.size / 100
    chi2 = ((counts - expected) ** 2 / expected).sum()  # 99 degrees of freedom: mean 99, sd 14
    assert chi2 < 99 + 5 * 14
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)


def test_noise_of_neighbouring_rows_steps_and_tokens_is_uncorrelated():
    keys = row_keys([7] * 2000, range(2000))
    a, b = keyed_uniform(step_salt(keys, 0), 2), keyed_uniform(step_salt(keys, 1), 2)
    pairs = {"next rollout": (a[:-1, 0], a[1:, 0]), "next step": (a[:, 0], b[:, 0]), "next token": (a[:, 0], a[:, 1])}
    for name, (x, y) in pairs.items():
        r = np.corrcoef(x.numpy(), y.numpy())[0, 1]
        assert abs(r) < 4 / np.sqrt(len(x)), name


def test_noise_depends_on_the_key_and_step_only():
    keys = row_keys([3, 4], [0, 5])
    u = keyed_uniform(step_salt(keys, 9), 10)
    assert torch.equal(u[1:], keyed_uniform(step_salt(row_keys([4], [5]), 9), 10))
    assert torch.equal(u, keyed_uniform(step_salt(keys, torch.tensor([9, 9])), 10))
    assert not torch.equal(u, keyed_uniform(step_salt(keys, 10), 10))


def test_the_noise_is_pinned_to_its_hash():
    """Exact values: keyed samples stay reproducible across releases (and the in-place hash
    computes what the one over fresh tensors did)."""
    keys = row_keys([0, 12345], [0, 3])
    salt = step_salt(keys, 7)
    assert salt.tolist() == [2910201326, 3805175346]
    u = keyed_uniform(salt, 50000)
    scaled = (u[:, [0, 1, 49151, 49999]].double() * 2**24 - 0.5).tolist()
    assert scaled == [[13611107.5, 5038429.0, 12677505.5, 3506616.0], [3629802.0, 5416460.0, 11189877.5, 8224426.0]]
    t, before = torch.tensor([7, 7]), keys.clone()
    assert torch.equal(step_salt(keys, t), salt)
    assert t.tolist() == [7, 7] and torch.equal(keys, before)  # the caller's tensors are not hashed in place
