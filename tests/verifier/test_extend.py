"""Scoring solutions that extend the last call's: the same values as a full pass, fewer tokens read."""

import contextlib

import numpy as np
import pytest
import torch

from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.verifier.extend import extend_values
from pav.verifier.model import ValueVerifier
from pav.verifier.scorer import MixedScorer, VerifierScorer, extending_prefixes

TOK = build_char_tokenizer()
PROMPT = "goal 7 from 3\n"
FIRST = [("3+4=7",), ("3*2=6",), ("3+1=4",)]
# extensions of the first call's solutions (one twice, one by two steps), an exact repeat, a stranger
SECOND = [("3*2=6", "6+1=7"), ("3*2=6", "6*2=12"), ("3+1=4", "4+3=7", "ans 7"), ("3+4=7",), ("9+9=18", "ans 18")]


def gpt2_verifier(seed: int = 0, max_length: int | None = None, logprob: bool = False) -> ValueVerifier:
    reference = tiny_gpt2(len(TOK), seed=seed + 10, eos_token_id=TOK.eos_token_id) if logprob else None
    verifier = ValueVerifier(tiny_gpt2(len(TOK), seed=seed, eos_token_id=TOK.eos_token_id), TOK, max_length=max_length,
                             seed=seed, reference=reference)
    if logprob:  # a feature head that matters: the values then depend on every feature
        with torch.no_grad():
            for param in verifier.feature_head.parameters():
                param.mul_(20)
    return verifier


def fed_tokens(verifier: ValueVerifier) -> list[int]:
    """Records the number of input columns of every backbone pass."""
    seen: list[int] = []
    verifier.backbone.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].shape[1]), with_kwargs=True)
    return seen


@pytest.mark.parametrize(("max_length", "logprob"), [(None, False), (30, False), (None, True), (30, True)])
def test_extending_gives_the_full_pass_values_and_reads_only_new_tokens(max_length, logprob):
    """Log-prob features too: the reference reads one token more (the last reused one)."""
    verifier = gpt2_verifier(max_length=max_length, logprob=logprob)
    first = verifier.encode_many([PROMPT] * len(FIRST), FIRST)
    second = verifier.encode_many([PROMPT] * len(SECOND), SECOND)
    want = verifier.values_of(second)
    seen = fed_tokens(verifier)
    got1, store = extend_values(verifier, first, {}, batch_size=2)
    for g, w in zip(got1, verifier.values_of(first), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)
    seen.clear()
    got2, store2 = extend_values(verifier, second, store, batch_size=1)
    for g, w in zip(got2, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-6)
    if max_length is None and not logprob:  # the new steps' characters and delimiters; the repeat unread; the stranger whole
        assert sorted(seen) == [len("6+1=7\n"), len("6*2=12\n"), len("4+3=7\nans 7\n"), len(second[-1].input_ids)]
    if logprob:
        reference: list[int] = []
        verifier.reference.register_forward_pre_hook(lambda m, a, k: reference.append(k["input_ids"].shape[1]),
                                                     with_kwargs=True)
        backbone = list(seen)
        extend_values(verifier, second, store, batch_size=1)
        assert sorted(reference) == sorted(n + (n < len(second[-1].input_ids)) for n in backbone)
    assert set(store2) == {tuple(e.input_ids) for e in second if e.positions}  # only this call's solutions
    if max_length:
        assert any(len(w) < e.n_prefixes for w, e in zip(want, second))  # the window did cut


def test_extending_works_on_a_bpe_tokenizer_and_a_llama_style_backbone(tiny_qwen):
    """Exact id matches on a byte-level BPE tokenizer and a Qwen2 backbone (rotary positions, GQA)."""
    verifier = ValueVerifier.from_policy(tiny_qwen, seed=1)
    prompt = "Natalia sold 48 clips.\n"
    first = verifier.encode_many([prompt] * len(FIRST), FIRST)
    second = verifier.encode_many([prompt] * len(SECOND), SECOND)
    want = verifier.values_of(second)
    _, store = extend_values(verifier, first, {}, batch_size=3)
    seen = fed_tokens(verifier)
    got, _ = extend_values(verifier, second, store, batch_size=1)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
    n = [len(e.input_ids) for e in second]
    assert sorted(seen) == sorted([n[0] - len(first[1].input_ids), n[1] - len(first[1].input_ids),
                                   n[2] - len(first[2].input_ids), n[4]])


def test_a_scorer_extends_inside_its_context_only_and_scores_the_same():
    """`VerifierScorer` with a prover verifier and an ORM, and a `MixedScorer`: the same scores inside
    `extending_prefixes` as outside, over consecutive calls; the stores go when the context ends."""
    scorer = VerifierScorer(gpt2_verifier(0, logprob=True), k=None, prover=gpt2_verifier(1), orm=gpt2_verifier(2))
    mixed = MixedScorer(VerifierScorer(gpt2_verifier(3), k=4), scorer)
    for s in (scorer, mixed):
        want = [s.score([PROMPT] * len(c), c) for c in (FIRST, SECOND)]
        with extending_prefixes(s):
            got = [s.score([PROMPT] * len(c), c) for c in (FIRST, SECOND)]
            assert len(scorer._stores) == 3
        assert scorer._stores is None
        for gs, ws in zip(got, want):
            for g, w in zip(gs, ws, strict=True):
                for name in ("q_base", "q_prover", "adv_prover"):
                    np.testing.assert_allclose(getattr(g, name), getattr(w, name), atol=1e-6)
                assert g.outcome == pytest.approx(w.outcome, abs=1e-6) and g.verifier_tokens == w.verifier_tokens


@pytest.mark.parametrize("logprob", [False, True])
def test_beam_search_chooses_the_same_solutions_when_the_scorer_extends(monkeypatch, logprob):
    """A batched beam search: the same complete solutions, chosen answers and compute with the
    scorer's reuse as without it, and fewer verifier input columns."""
    from pav.policies.hf import HFPolicy
    from pav.search.beam import BeamSettings, beam_search
    from pav.tasks.modreach import ModReach

    torch.set_num_threads(1)
    model = tiny_gpt2(len(TOK), seed=3, eos_token_id=TOK.eos_token_id)
    with torch.no_grad():  # end lines often
        w = model.lm_head.weight[TOK.convert_tokens_to_ids("\n")]
        model.transformer.ln_f.bias += 2.5 * w / w.square().sum()
    policy = HFPolicy(model, TOK, "random", batch_size=64)
    scorer = VerifierScorer(gpt2_verifier(4, logprob=logprob), k=4)
    seen = fed_tokens(scorer.pqv)
    task = ModReach()
    problems = task.problems(5, seed=1, split="heldout")
    settings = BeamSettings(width=3, candidates=3, alpha=0.5, max_steps=5, step_tokens=16, temperature=1.0,
                            top_p=1.0, dedup=True)
    extended = beam_search(policy, scorer, task, problems, settings, seed=5)
    n_extended, seen[:] = sum(seen), []
    monkeypatch.setattr(VerifierScorer, "extending_prefixes", lambda self: contextlib.nullcontext())
    full = beam_search(policy, scorer, task, problems, settings, seed=5)
    assert [r.steps for r in extended] == [r.steps for r in full]
    assert [[s for s, _ in r.complete] for r in extended] == [[s for s, _ in r.complete] for r in full]
    for a, b in zip(extended, full):
        assert [v for _, v in a.complete] == pytest.approx([v for _, v in b.complete], abs=1e-5)
    assert [r.compute for r in extended] == [r.compute for r in full]
    assert max(r.depth for r in extended) > 2
    assert n_extended < 0.7 * sum(seen)  # padded columns fed: fewer with reuse
