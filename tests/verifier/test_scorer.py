"""The Scorer: BoK prover values and advantages from one PQV pass, a prover verifier, the ORM."""

import numpy as np
import pytest
import torch

from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.rollouts.estimates import best_of_k
from pav.verifier.model import ValueVerifier
from pav.verifier.scorer import VerifierScorer

TOK = build_char_tokenizer()
PROMPTS = ["3 to 7 mod 10 ops +4 *2 +1 max 5\n", "1 to 2 mod 10 ops *2 +3 +5 max 4\n"]
STEPS = [["3+4=7", "ans 7"], ["1 to 2", "1*2=2", "ans 2"]]


def verifier(seed: int) -> ValueVerifier:
    torch.set_num_threads(1)
    return ValueVerifier(tiny_gpt2(len(TOK), seed=seed, eos_token_id=TOK.eos_token_id), TOK, seed=seed)


def test_bok_prover_scores_follow_from_the_pqv_values():
    pqv = verifier(0)
    scores = VerifierScorer(pqv, k=4).score(PROMPTS, STEPS)
    values = pqv.prefix_values(PROMPTS, STEPS)
    for sc, v, steps in zip(scores, values, STEPS):
        assert sc.q_base.shape == (len(steps),) and sc.v_base == pytest.approx(v[0])
        np.testing.assert_allclose(sc.q_base, v[1:], rtol=1e-6)
        q_mu = best_of_k(v.astype(np.float64), 4)
        np.testing.assert_allclose(sc.q_prover, q_mu[1:], rtol=1e-6)
        np.testing.assert_allclose(sc.adv_prover, np.diff(q_mu), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sc.effective_reward(0.5), v[1:] + 0.5 * np.diff(q_mu), rtol=1e-6)
        assert sc.outcome == pytest.approx(v[-1])  # the PQV as ORM


def test_prover_verifier_and_orm_are_used_when_given():
    pqv, prover, orm = verifier(0), verifier(1), verifier(2)
    scores = VerifierScorer(pqv, k=None, prover=prover, orm=orm).score(PROMPTS, STEPS)
    for sc, vm, vo in zip(scores, prover.prefix_values(PROMPTS, STEPS), orm.prefix_values(PROMPTS, STEPS)):
        np.testing.assert_allclose(sc.adv_prover, np.diff(vm), rtol=1e-6, atol=1e-9)
        assert sc.outcome == pytest.approx(vo[-1])


def test_exactly_one_prover_must_be_named():
    with pytest.raises(ValueError):
        VerifierScorer(verifier(0), k=None)
    with pytest.raises(ValueError):
        VerifierScorer(verifier(0), k=4, prover=verifier(1))


def test_verifier_tokens_count_every_model_pass():
    pqv, orm = verifier(0), verifier(2)
    per_pass = [len(TOK(p + "".join(s + "\n" for s in steps))["input_ids"]) for p, steps in zip(PROMPTS, STEPS)]
    assert [s.verifier_tokens for s in VerifierScorer(pqv, k=4).score(PROMPTS, STEPS)] == per_pass
    assert [s.verifier_tokens for s in VerifierScorer(pqv, k=4, orm=orm).score(PROMPTS, STEPS)] == [2 * t for t in per_pass]


def test_mixed_scorer_takes_q_base_from_the_pqv_and_best_of_k_of_the_prover_verifier():
    """What search and RL build for `--set prover=RUN`: the PQV's Q̂^π and outcome, the prover
    verifier's Best-of-K values and advantages, and both models' tokens."""
    from pav.verifier.scorer import MixedScorer

    pqv, prover = verifier(0), verifier(1)
    mixed = MixedScorer(VerifierScorer(pqv, k=4), VerifierScorer(prover, k=2)).score(PROMPTS, STEPS)
    alone = VerifierScorer(pqv, k=4).score(PROMPTS, STEPS)
    for m, a, vm in zip(mixed, alone, prover.prefix_values(PROMPTS, STEPS)):
        assert (m.v_base, m.outcome) == (a.v_base, a.outcome) and np.array_equal(m.q_base, a.q_base)
        q_mu = best_of_k(vm.astype(np.float64), 2)
        np.testing.assert_allclose(m.q_prover, q_mu[1:], rtol=1e-6)
        np.testing.assert_allclose(m.adv_prover, np.diff(q_mu), rtol=1e-6, atol=1e-9)
        assert m.verifier_tokens == 2 * a.verifier_tokens
    same = MixedScorer(VerifierScorer(pqv, k=4), VerifierScorer(pqv, k=4)).score(PROMPTS, STEPS)
    for s, a in zip(same, alone):  # the PQV as its own prover verifier: the Best-of-K(π) scores
        np.testing.assert_array_equal(s.effective_reward(0.7), a.effective_reward(0.7))


def test_scoring_token_ids_equals_scoring_their_text(tiny_qwen):
    """`score_ids` reads prompt ids + the completion's own ids (the delimiter's ids after an unterminated
    final step; EOS and a trailing blank line unread) and gives exactly what scoring the text gives when
    the ids are the tokenizer's encoding of it: character and byte-level BPE tokenizers, a prover verifier
    and an ORM, a window that cuts the last steps."""
    import dataclasses

    from transformers import AutoTokenizer

    from pav.core.steps import split_steps

    completions = ["3+4=7\nans 7\n", "3+4=7\n\nans 7", "3+4=7\nans 7\n\n", "", "3+4=7\n3*2=6\n7*2=4\nans 4"]
    prompts = [PROMPTS[0]] * len(completions)
    steps = [split_steps(c, "\n") for c in completions]
    for tok in (TOK, AutoTokenizer.from_pretrained(tiny_qwen)):
        def make(seed, max_length=None, tok=tok):
            return ValueVerifier(tiny_gpt2(len(tok), seed=seed, eos_token_id=tok.eos_token_id), tok,
                                 max_length=max_length, seed=seed)

        ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
        for scorer in (VerifierScorer(make(0), k=None, prover=make(1), orm=make(2)), VerifierScorer(make(0, 48), k=4)):
            assert scorer.reads_ids_of(tok)
            got_steps, got = scorer.score_ids(prompts, ids)
            assert got_steps == steps
            for g, want in zip(got, scorer.score(prompts, steps), strict=True):
                np.testing.assert_equal(dataclasses.astuple(g), dataclasses.astuple(want))  # NaN where cut
        assert np.isnan(got[-1].q_base[-1])  # the window did cut
    assert not VerifierScorer(verifier(0), k=4).reads_ids_of(AutoTokenizer.from_pretrained(tiny_qwen))
