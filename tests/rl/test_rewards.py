"""Dense RL maths by hand: per-step and per-token weights, RLOO and value baselines, the loss."""

import numpy as np
import pytest
import torch

from pav.policies.tokenizer import build_char_tokenizer
from pav.rl.rewards import (NonFiniteReward, advantages, policy_loss, rloo_baseline, step_weights,
                            token_weights)
from pav.rl.rollout import encode_rollouts, step_char_index
from pav.verifier.scorer import StepScores

TOK = build_char_tokenizer()


def _scores(q_base, q_prover, v_prover0=0.2):
    adv = np.diff(np.concatenate([[v_prover0], q_prover]))
    return StepScores(0.1, np.array(q_base), np.array(q_prover), adv, q_base[-1])


def test_step_weights_of_each_reward_by_hand():
    sc = _scores([0.3, 0.6], [0.5, 0.9])  # A^mu = (0.3, 0.4)
    assert step_weights("orm", 1.0, sc, 2.0, 2)[0].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(step_weights("pav", 1.0, sc, 2.0, 2)[0], [1.6, 1.8])
    np.testing.assert_allclose(step_weights("pqv", 0.0, sc, 2.0, 2)[0], [0.6, 1.2])
    np.testing.assert_allclose(step_weights("prover-q", 0.0, sc, 2.0, 2)[0], [1.0, 1.8])
    assert step_weights("pav", 1.0, None, 0.0, 2)[0].tolist() == [1.0, 1.0]  # α = 0 needs no verifier


def test_an_answer_step_is_worth_its_outcome_under_any_prover():
    sc = _scores([0.3, 0.6], [0.5, 0.9])  # A^mu = (0.3, 0.4); Q^mu before the answer 0.5
    np.testing.assert_allclose(step_weights("pav", 0.0, sc, 2.0, 2, graded_final=True)[0], [0.6, -1.0])
    np.testing.assert_allclose(step_weights("pav", 1.0, sc, 2.0, 2, graded_final=True)[0], [1.6, 2.0])
    np.testing.assert_allclose(step_weights("pqv", 0.0, sc, 2.0, 2, graded_final=True)[0], [0.6, 0.0])
    np.testing.assert_allclose(step_weights("prover-q", 1.0, sc, 2.0, 2, graded_final=True)[0], [2.0, 3.0])
    assert sc.adv_prover.tolist() == pytest.approx([0.3, 0.4])  # the scores are not changed
    cut = StepScores(0.1, np.array([0.4, np.nan]), np.array([0.5, np.nan]), np.array([0.3, np.nan]), float("nan"))
    w, seen = step_weights("pav", 1.0, cut, 1.0, 2, graded_final=True)  # past the window: still no bonus
    assert w.tolist() == pytest.approx([1.3, 1.0]) and seen is False


def test_a_two_step_toy_batch_gets_its_step_weights_on_its_tokens_and_none_on_padding():
    prompts = ["3 to 7 max 5\n", "1 to 2 max 4\n"]
    completions = ["3+4=7\nans 7\n", "1*2=2\n"]
    enc = encode_rollouts(TOK, prompts, completions, "\n", 128)
    w = [np.array([1.0 + 0.5 * 0.3, 1.0 + 0.5 * -0.1]), np.array([0.0 + 0.5 * 0.2])]
    tok_w = token_weights(w, enc.step_index)
    p0 = len(prompts[0])
    assert tok_w[0, :p0].tolist() == [0.0] * p0  # prompt tokens
    assert tok_w[0, p0:p0 + 6].tolist() == pytest.approx([1.15] * 6)  # "3+4=7\n"
    assert tok_w[0, p0 + 6:p0 + 12].tolist() == pytest.approx([0.95] * 6)  # "ans 7\n"
    p1 = len(prompts[1])
    assert tok_w[1, p1:p1 + 6].tolist() == pytest.approx([0.1] * 6)
    assert tok_w[1, p1 + 6:].tolist() == [0.0] * (tok_w.shape[1] - p1 - 6)  # padding
    assert enc.completion.sum(1).tolist() == [12, 6] and enc.n_steps == [2, 1]


def test_step_char_index_assigns_delimiters_to_their_step():
    assert step_char_index("ab\nc\n", "\n") == [0, 0, 0, 1, 1]
    assert step_char_index("ab||c", "||") == [0, 0, 0, 0, 1]
    assert step_char_index("ab\ncd", "\n") == [0, 0, 0, 1, 1]  # a cut last step


def test_rloo_and_value_advantages_on_a_fixed_batch():
    assert rloo_baseline([1, 0, 1, 1, 0], [0, 0, 1, 1, 2]).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert rloo_baseline([1, 0, 0], [0, 0, 0]).tolist() == [0.0, 0.5, 0.5]
    tok_w = torch.tensor([[0.0, 1.2, 0.8], [0.0, 0.1, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    adv = advantages(tok_w, mask, baseline="rloo", outcomes=[1.0, 0.0], groups=[0, 0])
    assert torch.allclose(adv, torch.tensor([[0.0, 1.2, 0.8], [0.0, 0.1 - 1.0, 0.0]]))
    values = torch.tensor([[9.0, 0.5, 0.5], [9.0, 0.3, 9.0]])
    adv = advantages(tok_w, mask, baseline="value", values=values)
    assert torch.allclose(adv, torch.tensor([[0.0, 0.7, 0.3], [0.0, -0.2, 0.0]]))


def test_alpha_zero_with_rloo_is_exactly_the_outcome_only_update():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    logp = torch.log_softmax(logits, -1)  # (B, T): a stand-in for token log-probs
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.float32)
    step_index = torch.tensor([[-1, 0, 0, 1, -1], [-1, 0, 1, -1, -1], [-1, 0, 1, 1, 1], [-1, 0, -1, -1, -1]])
    outcomes, groups = [1.0, 0.0, 0.0, 1.0], [0, 0, 1, 1]
    sc = [_scores([0.3, 0.6], [0.5, 0.9]), _scores([0.1, 0.2], [0.4, 0.3]), _scores([0.1, 0.2], [0.4, 0.3]),
          _scores([0.9], [0.99])]
    n_steps = [2, 2, 2, 1]
    w = [step_weights("pav", o, s, 0.0, h)[0] for o, s, h in zip(outcomes, sc, n_steps)]
    adv = advantages(token_weights(w, step_index), mask, baseline="rloo", outcomes=outcomes, groups=groups)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, kl_coef=0.0)
    grad = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    # outcome-only RLOO written out: -(R_i - mean of the others' R) * sum_t log p_t / #tokens
    b = torch.tensor([0.0, 1.0, 1.0, 0.0])[:, None]
    ref = -((torch.tensor(outcomes)[:, None] - b) * logp * mask).sum() / mask.sum()
    ref_grad = torch.autograd.grad(ref, logits)[0]
    assert torch.allclose(grad, ref_grad) and float(loss.detach()) == pytest.approx(float(ref.detach()))
    w_pav = [step_weights("pav", o, s, 1.0, h)[0] for o, s, h in zip(outcomes, sc, n_steps)]
    adv_pav = advantages(token_weights(w_pav, step_index), mask, baseline="rloo", outcomes=outcomes, groups=groups)
    assert not torch.allclose(adv_pav, adv)  # α > 0 changes it


def test_kl_penalty_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.log(torch.tensor([[0.5, 0.2]]))
    mask = torch.ones(1, 2)
    _, kl = policy_loss(logp, logp, torch.zeros(1, 2), mask, 1.0)
    assert float(kl) == 0.0
    _, kl = policy_loss(logp, torch.log(torch.tensor([[0.4, 0.3]])), torch.zeros(1, 2), mask, 1.0)
    assert float(kl) > 0


def test_entropy_bonus_subtracts_the_mean_masked_entropy_and_raises_it():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.4, 0.1], [3.0, -2.0, 0.0]]], requires_grad=True)
    logp_all = torch.log_softmax(logits, -1)
    ent = -(logp_all.exp() * logp_all).sum(-1)  # (1, 3)
    logp = logp_all[..., 0]
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding: its entropy does not count
    adv = torch.tensor([[0.3, -0.2, 5.0]])
    base, kl0 = policy_loss(logp, logp.detach(), adv, mask, 0.1)
    loss, kl = policy_loss(logp, logp.detach(), adv, mask, 0.1, ent, entropy_coef=0.5)
    assert float(kl) == float(kl0)
    assert float(loss) == pytest.approx(float(base) - 0.5 * float(ent[0, :2].mean()))
    # a step down the bonus's gradient raises the unmasked tokens' entropy; the padded one's is untouched
    bonus = -0.5 * (ent * mask).sum() / mask.sum()
    g = torch.autograd.grad(bonus, logits)[0]
    after = torch.log_softmax(logits - 0.1 * g, -1)
    ent_after = -(after.exp() * after).sum(-1)
    assert torch.all(ent_after[0, :2] > ent[0, :2]) and float(ent_after[0, 2]) == pytest.approx(float(ent[0, 2]))
    with pytest.raises(ValueError, match="entropies"):
        policy_loss(logp, logp.detach(), adv, mask, 0.1, None, entropy_coef=0.5)


def test_non_finite_rewards_are_refused_and_window_cuts_are_counted():
    with pytest.raises(NonFiniteReward):
        step_weights("orm", float("nan"), None, 1.0, 2)
    broken = StepScores(float("nan"), np.array([np.nan, np.nan]), np.array([np.nan, np.nan]),
                        np.array([np.nan, np.nan]), float("nan"))
    with pytest.raises(NonFiniteReward, match="non-finite"):
        step_weights("pav", 1.0, broken, 1.0, 2)
    hole = StepScores(0.1, np.array([np.nan, 0.5]), np.array([np.nan, 0.5]), np.array([np.nan, 0.1]), 0.5)
    with pytest.raises(NonFiniteReward):
        step_weights("pav", 1.0, hole, 1.0, 2)
    cut = StepScores(0.1, np.array([0.4, np.nan]), np.array([0.5, np.nan]), np.array([0.3, np.nan]), float("nan"))
    w, seen = step_weights("pav", 1.0, cut, 1.0, 2)
    assert w.tolist() == pytest.approx([1.3, 1.0]) and seen is False
    with pytest.raises(NonFiniteReward):
        token_weights([np.array([np.inf])], torch.tensor([[0]]))


def test_the_graded_answer_step_changes_nothing_where_the_values_are_exact():
    import random

    from pav.tasks.modreach import ModReach
    from pav.verifier.exact import ExpertScorer

    task, rng = ModReach(), random.Random(0)
    problems = task.problems(30, seed=1)
    steps = [task.demonstrate(p, rng) for p in problems]
    scores = ExpertScorer(task, k=4).score([task.prompt(p) for p in problems], steps)
    for p, st, sc in zip(problems, steps, scores):
        o = task.outcome(p, st)
        np.testing.assert_allclose(step_weights("pav", o, sc, 1.0, len(st), graded_final=True)[0],
                                   step_weights("pav", o, sc, 1.0, len(st))[0], atol=1e-12)
