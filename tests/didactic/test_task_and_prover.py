"""The planted task's automaton and the exact values of μ_γ (the paper, §3.3)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.didactic.prover import GammaProver
from pav.didactic.experiments import TaskConfig
from pav.didactic.task import PlantedTask


def _planted(**changes) -> PlantedTask:
    """The didactic stage's task (its config's defaults), with ``changes``."""
    return PlantedTask(**{**vars(TaskConfig()), **changes})


TASK = _planted()


def appears_before_eos(seq, target, eos):
    seq = list(seq)
    if eos in seq:
        seq = seq[: seq.index(eos)]
    m = len(target)
    return any(tuple(seq[i:i + m]) == tuple(target) for i in range(len(seq) - m + 1))


@pytest.mark.parametrize("seq,reward", [
    ([12, 8, 3, 6, 14, 6, 0, 3, 5, 1], 0.0),   # Fig. 9: EOS masks the rest
    ([3, 6, 0, 3, 5, 14, 13, 3, 2, 11], 1.0),  # Fig. 9
    ([3, 6, 0, 3, 6, 0, 3, 5, 1, 1], 1.0),     # self-overlap: "3 6 0 3" restarts at "3"
    ([1, 3, 6, 0, 3, 5, 14, 14, 14, 14], 1.0),
    ([3, 6, 0, 3, 14, 5, 1, 1, 1, 1], 0.0),
])
def test_rewards_known_sequences(seq, reward):
    assert TASK.rewards(np.array([seq]))[0] == reward


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 3, 5, 6, 14, 1]), min_size=10, max_size=10))
def test_automaton_reward_equals_substring_search(seq):
    assert TASK.rewards(np.array([seq]))[0] == float(appears_before_eos(seq, TASK.target, TASK.eos))


def test_action_mask_keeps_eos_and_drops_after_it():
    tokens = np.array([[1, 14, 2, 2, 2, 2, 2, 2, 2, 2]])
    np.testing.assert_array_equal(TASK.action_mask(TASK.states(tokens))[0], [1, 1] + [0] * 8)
    stop = _planted(stop_at_match=True)
    tokens = np.array([[3, 6, 0, 3, 5, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(stop.action_mask(stop.states(tokens))[0], [1] * 5 + [0] * 5)


def test_invalid_task_rejected():
    with pytest.raises(ValueError, match="EOS"):
        _planted(target=(3, 14))
    with pytest.raises(ValueError):
        _planted(length=3)


def brute_force_prefix_value(task, prover, prefix):
    """Σ over every completion of P_μ(completion | prefix) · reward, by enumeration."""
    rest = task.length - len(prefix)
    total = 0.0
    for tail in itertools.product(range(task.vocab_size), repeat=rest):
        seq = list(prefix) + list(tail)
        states = task.states(np.array(seq))
        p = np.prod([prover.action_probs[states[t], seq[t]] for t in range(len(prefix), task.length)])
        total += p * float(appears_before_eos(seq, task.target, task.eos))
    return total


@pytest.mark.parametrize("gamma", [0.5, 3.0, 40.0])
def test_dp_equals_brute_force_enumeration_on_short_instance(gamma):
    task = _planted(target=(1, 2, 1), vocab_size=4, length=5, eos=3)
    prover = GammaProver(task, gamma)
    for t in range(task.length + 1):
        for prefix in itertools.product(range(task.vocab_size), repeat=t):
            states = task.states(np.array(prefix, dtype=np.int64))
            exact = prover.values[t, states[-1]]
            assert exact == pytest.approx(brute_force_prefix_value(task, prover, prefix), abs=1e-12)


def test_dp_matches_monte_carlo_rollouts_within_4_standard_errors():
    rng = np.random.default_rng(0)
    n = 20_000
    for gamma in (5.0, 10.0, 100.0):
        prover = GammaProver(TASK, gamma)
        for position, state in [(0, 0), (2, 2), (4, 4), (6, 1), (7, 0), (8, 4)]:
            v = prover.values[position, state]
            hits = prover.rollout_success(position, state, n, rng).mean()
            se = max(np.sqrt(v * (1 - v) / n), 1 / n)
            assert abs(hits - v) <= 4 * se, (gamma, position, state, hits, v)


def test_sampled_responses_have_the_exact_success_rate():
    prover = GammaProver(TASK, 10.0)
    x = prover.sample(40_000, np.random.default_rng(1))
    v = prover.values[0, 0]
    assert abs(TASK.rewards(x).mean() - v) <= 4 * np.sqrt(v * (1 - v) / len(x))
    after_eos = TASK.action_mask(TASK.states(x)) == 0
    assert np.all(x[after_eos] == TASK.eos)


def test_binomial_mc_values_agree_with_explicit_rollouts():
    prover = GammaProver(TASK, 10.0)
    states = np.zeros((1, TASK.length + 1), dtype=np.int64)
    states[0, 3] = 2  # position 3 with "3 6" matched
    rng = np.random.default_rng(2)
    draws = np.array([prover.mc_prefix_values(states, 64, rng)[0, 3] for _ in range(4000)])
    explicit = np.array([prover.rollout_success(3, 2, 64, rng).mean() for _ in range(4000)])
    v = prover.values[3, 2]
    se = np.sqrt(v * (1 - v) / 64 / 4000)
    assert abs(draws.mean() - v) < 4 * se and abs(explicit.mean() - v) < 4 * se
    assert draws.var() == pytest.approx(explicit.var(), rel=0.1)


def test_exact_advantages_are_differences_of_prefix_values():
    prover = GammaProver(TASK, 10.0)
    tokens = np.array([[3, 6, 0, 3, 5, 1, 1, 1, 1, 1], [3, 6, 14, 1, 1, 1, 1, 1, 1, 1]])
    states = TASK.states(tokens)
    adv = prover.advantages(states)
    v = prover.prefix_values(states)
    np.testing.assert_allclose(adv, v[:, 1:] - v[:, :-1])
    assert np.all(adv[0, :5] > 0) and np.all(adv[0, 5:] == 0)  # progress, then reward settled
    assert adv[1, 2] == pytest.approx(-v[1, 2])  # EOS before the match: value drops to 0
    assert v[0, -1] == 1.0 and v[1, -1] == 0.0


def test_prover_rejects_bad_gamma():
    with pytest.raises(ValueError):
        GammaProver(TASK, 0.0)
