"""The MADE ensemble policy and the SFT / policy-gradient loop of the didactic setting."""

import numpy as np
import pytest
import torch

from pav.didactic.policy import MadeEnsemble
from pav.didactic.experiments import TaskConfig
from pav.didactic.task import PlantedTask
from pav.didactic.train import (
    Member, RLSettings, _batch_mean_centred, generators, success_counts, train_rl, train_sft,
)


def _planted(**changes) -> PlantedTask:
    """The didactic stage's task (its config's defaults), with ``changes``."""
    return PlantedTask(**{**vars(TaskConfig()), **changes})


TASK = _planted()


def _rl(**changes) -> RLSettings:
    """The didactic stage's RL settings (its config's defaults), with ``changes``."""
    return RLSettings(**{**dict(iterations=1000, batch_size=64, optimizer="adam", lr=1e-3, q_base="return",
                                q_rollouts=16, baseline="mean_return", eval_every=0, eval_samples=1024,
                                checkpoints=()), **changes})


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_logits_at_t_depend_only_on_earlier_tokens():
    policy = MadeEnsemble([0, 1])
    x = policy.sample(8, generators([0, 1], "t"))
    base = policy.logits(x)
    for t in range(TASK.length):
        y = x.clone()
        y[:, :, t] = (y[:, :, t] + 1) % TASK.vocab_size
        changed = (policy.logits(y) - base).abs().amax(dim=(0, 1, 3)) > 0  # (T,)
        assert not changed[: t + 1].any() and (t == TASK.length - 1 or changed[t + 1:].any())


def test_incremental_sampler_follows_the_teacher_forced_distribution():
    policy = MadeEnsemble([3])
    with torch.no_grad():  # make the distribution informative, not uniform
        for w in policy.weights:
            w.mul_(4.0)
    x = policy.sample(40_000, generators([3], "s"))[0]  # (n, T)
    # second token given first token == most common first token, vs the model's conditional
    first = int(torch.mode(x[:, 0]).values)
    rows = x[x[:, 0] == first]
    probe = rows[:1].clone()
    probs = torch.softmax(policy.logits(probe[None])[0, 0, 1], -1)
    freq = torch.bincount(rows[:, 1], minlength=TASK.vocab_size).double() / len(rows)
    se = torch.sqrt(probs * (1 - probs) / len(rows))
    assert torch.all((freq - probs).abs() <= 4 * se + 1e-3)


def test_prefix_forcing_keeps_the_prefix():
    policy = MadeEnsemble([0])
    prefix = torch.tensor([[[3, 6, 0, 3, 5, 1, 1, 1, 1, 1]]]).expand(1, 50, 10)
    out = policy.sample(50, generators([0], "p"), prefix=prefix, prefix_len=torch.full((1, 50), 4))
    assert torch.all(out[:, :, :4] == prefix[:, :, :4])
    assert (out[:, :, 4:] != prefix[:, :, 4:]).any()


def test_member_runs_identically_alone_and_inside_an_ensemble():
    alone = MadeEnsemble([7])
    both = MadeEnsemble([5, 7])
    settings = _rl(iterations=3, batch_size=16)
    for policy, members in ((alone, [Member(7, "effective", 10.0, 1.0)]), (both, [Member(5, "outcome"), Member(7, "effective", 10.0, 1.0)])):
        train_sft(policy, TASK, gamma=5.0, n_samples=64, iterations=2, batch_size=16, lr=1e-3)
        train_rl(policy, TASK, members, settings)
    for a, b in zip(alone.parameters(), both.parameters()):
        torch.testing.assert_close(a[0], b[1], rtol=1e-5, atol=1e-6)


def test_same_seed_same_results_different_seed_different_results():
    def run(seed):
        policy = MadeEnsemble([seed])
        train_sft(policy, TASK, gamma=5.0, n_samples=128, iterations=4, batch_size=32, lr=1e-3)
        hist = train_rl(policy, TASK, [Member(seed, "effective", 10.0, 1.0)], _rl(iterations=5, batch_size=32))
        return torch.cat([p.flatten() for p in policy.parameters()]), hist.batch_accuracy

    p0, h0 = run(0)
    p0b, h0b = run(0)
    p1, _ = run(1)
    assert torch.equal(p0, p0b) and h0 == h0b
    assert not torch.equal(p0, p1)


def test_outcome_only_without_successes_leaves_the_policy_unchanged():
    """Eq. 5 with Q̂^π = return = 0 everywhere has zero gradient: nothing to learn from."""
    policy = MadeEnsemble([0])
    before = [p.detach().clone() for p in policy.parameters()]  # random init: success ~1e-5
    hist = train_rl(policy, TASK, [Member(0, "outcome")], _rl(iterations=5, batch_size=32))
    assert sum(map(sum, hist.batch_accuracy)) == 0
    for a, b in zip(before, policy.parameters()):
        assert torch.equal(a, b)


def test_every_parameter_changes_after_one_effective_reward_step():
    policy = MadeEnsemble([0])
    before = [p.detach().clone() for p in policy.parameters()]
    train_rl(policy, TASK, [Member(0, "effective", 10.0, 1.0)], _rl(iterations=1, batch_size=64))
    for a, b in zip(before, policy.parameters()):
        # the first layer's masked-out entries never get gradient; all others must move
        assert (a != b).any()


def test_batch_mean_baseline_centres_live_tokens_per_position():
    w = np.array([[[1.0, 2.0], [3.0, 8.0], [5.0, 0.0]]])  # (E=1, B=3, T=2)
    mask = np.array([[[1, 1], [1, 1], [1, 0]]], dtype=bool)
    out = _batch_mean_centred(w, mask)
    np.testing.assert_allclose(out[0, :, 0], [-2.0, 0.0, 2.0])
    np.testing.assert_allclose(out[0, :2, 1], [-3.0, 3.0])


def test_effective_reward_learns_where_outcome_only_cannot():
    seeds = [1, 1]
    policy = MadeEnsemble(seeds)
    train_sft(policy, TASK, gamma=5.0, n_samples=3200, iterations=50, batch_size=64, lr=1e-3)
    members = [Member(1, "effective", gamma=10.0, alpha=1.0), Member(1, "outcome")]
    hist = train_rl(policy, TASK, members, _rl(iterations=120, batch_size=64, eval_every=120, eval_samples=512))
    final = hist.eval_accuracy[-1]
    assert final[0] > 0.5 and final[1] < 0.02


def test_success_counts_stop_early_and_reuse_unchanged_policies(tmp_path):
    task = _planted(target=(3,), length=3)  # easy: p(success) ≈ 0.2 for a random policy
    policy = MadeEnsemble([0, 1], length=3)
    succ, n = success_counts(policy, task, max_samples=8192, chunk=256, min_successes=100, cache_dir=tmp_path)
    assert np.all(succ >= 100) and np.all(n < 8192) and np.all(n % 256 == 0)
    assert len(list(tmp_path.iterdir())) == 2
    again = success_counts(policy.subset([1]), task, 8192, 256, 100, cache_dir=tmp_path)
    assert again[0][0] == succ[1] and again[1][0] == n[1]
    hard = MadeEnsemble([0])  # full task: a random policy almost never succeeds
    succ, n = success_counts(hard, TASK, max_samples=2048, chunk=1024, min_successes=1)
    assert n[0] == 2048 and succ[0] <= 1


def test_subset_and_fingerprint():
    policy = MadeEnsemble([4, 5, 6])
    sub = policy.subset([2, 0])
    assert sub.seeds == [6, 4]
    assert sub.fingerprint(0) == policy.fingerprint(2) and sub.fingerprint(1) == policy.fingerprint(0)
    assert policy.fingerprint(0) != policy.fingerprint(1)
    x = sub.sample(5, generators(sub.seeds, "f"))
    torch.testing.assert_close(sub.log_probs(x)[0], policy.log_probs(torch.stack([x[1], x[1], x[0]]))[2])
