"""The transformers backend: save/load, `tiny_gpt2`, and the batched KV-cache sampler's contracts.

The sampler is checked against a reference greedy decode with no cache, no padding and one row at
a time, on a tiny random GPT-2 whose output depends strongly on positions and context (so a wrong
``position_ids``, padding mask or cache expansion changes the text).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from pav.policies import Generation, Policy, PolicyLoadError, build_char_tokenizer  # noqa: E402
from pav.policies.hf import HFPolicy, load_causal_lm, save_policy, sinusoidal_positions, tiny_gpt2  # noqa: E402
from pav.core.steps import complete_steps  # noqa: E402
from pav.policies.fast_gpt2 import FastGPT2  # noqa: E402

torch.set_num_threads(1)

ALPHABET = "\n +-*=>0123456789AB"
CONTEXTS = ["12\n", "1+2=3\n", "3 ", "\n", "45*6", "7>", "0>8 B\n9*9=1\n"]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


def _varied_model(tok, seed):
    """A random GPT-2 with an untied output head and loud positions: greedy text varies by row."""
    model = tiny_gpt2(len(tok), seed=seed, eos_token_id=tok.eos_token_id)
    gen = torch.Generator().manual_seed(seed)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=gen))
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(4)
    return model.eval()


@pytest.fixture(scope="module")
def model(tok):
    return _varied_model(tok, 0)


def _reference(model, tok, context, *, until, max_steps, max_new_tokens, is_final_step=None):
    """Greedy decode without cache or padding, one row; then the stop rule, written out by hand."""
    ids = tok(context)["input_ids"]
    text, line = "", ""
    n_steps = 0
    with torch.no_grad():
        for k in range(max_new_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1]
            logits[tok.pad_token_id] = -math.inf
            t = int(logits.argmax())
            ids.append(t)
            if t == tok.eos_token_id:
                return Generation(text, k + 1, True)
            ch = tok.decode([t])
            text += ch
            if ch != "\n":
                line += ch
                continue
            if not line.strip():  # a blank line is no step: it starts the next one (pav.core.steps)
                line += ch
                continue
            n_steps += 1
            if until == "step" or (is_final_step and is_final_step(line)):
                return Generation(text, k + 1, True)
            if n_steps >= max_steps:
                return Generation(text, k + 1, False)
            line = ""
    return Generation(text, max_new_tokens, False)


# ----------------------------------------------------------------------------------------------
# Loading and saving


def test_save_then_load_offline_gives_identical_logits_and_ids(tmp_path, tok, model):
    save_policy(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded, loaded_tok = load_causal_lm(tmp_path)
    ids = loaded_tok(CONTEXTS)["input_ids"]
    assert ids == tok(CONTEXTS)["input_ids"]
    x = torch.tensor([ids[1]])
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_offline_unknown_hub_name_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(PolicyLoadError, match="HF_HUB_OFFLINE"):
        load_causal_lm("pav-no-such-org/no-such-model-7f3a")
    assert time.perf_counter() - start < 5


def test_missing_local_directory_fails(tmp_path):
    with pytest.raises(PolicyLoadError, match="no such"):
        load_causal_lm(tmp_path / "absent")


def test_tiny_gpt2_shape_init_and_seed():
    rng_before = torch.random.get_rng_state()
    a, b, c = tiny_gpt2(70), tiny_gpt2(70), tiny_gpt2(70, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert sum(p.numel() for p in a.parameters()) == 112_768  # docs/design.md
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.transformer.h[0].mlp.c_fc.weight, c.transformer.h[0].mlp.c_fc.weight)
    cfg = a.config
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    wpe = a.transformer.wpe.weight
    assert torch.allclose(wpe[3, 0], torch.tensor(0.1 * math.sin(3.0)))  # i = 0: pos / 10000^0
    assert torch.allclose(wpe[3, 32], torch.tensor(0.1 * math.cos(3.0)))
    assert torch.equal(wpe, sinusoidal_positions(128, 64))


# ----------------------------------------------------------------------------------------------
# Sampler: equivalence with the reference decode


@pytest.mark.parametrize("batch_size", [3, 64])
@pytest.mark.parametrize("until", ["step", "solution"])
def test_greedy_equals_uncached_unpadded_reference(tok, model, until, batch_size):
    final = lambda line: "A" in line or len(line) >= 4  # noqa: E731
    kw = dict(until=until, max_steps=3, max_new_tokens=24, is_final_step=final)
    policy = HFPolicy(model, tok, "tiny", batch_size=batch_size)
    assert isinstance(policy, Policy)
    contexts = CONTEXTS + CONTEXTS[1:3]  # duplicates get their own rows of the same context
    got = policy.sample(contexts, 4, temperature=0.0, **kw).generations
    want = [_reference(model, tok, c, **kw) for c in contexts]
    assert got == [[w] * 4 for w in want]  # every rollout of a context sees the same context
    assert len({w.n_tokens for w in want}) >= 3  # rows stop at different times: drops exercised


def test_tiny_top_p_is_greedy(tok, model):
    policy = HFPolicy(model, tok, "tiny")
    kw = dict(until="solution", max_steps=4, max_new_tokens=20)
    assert (policy.sample(CONTEXTS, 2, top_p=1e-6, seed=3, **kw).generations
            == policy.sample(CONTEXTS, 2, temperature=0, **kw).generations)


# ----------------------------------------------------------------------------------------------
# Sampler: stop rules under sampling


def _sampled(tok, **kw):
    policy = HFPolicy(tiny_gpt2(len(tok), seed=2), tok, "tiny", batch_size=32)
    return policy.sample(["a\n", "ab", "b\nba\n", "\n"], 16, temperature=1.0, seed=0, **kw)


def test_step_mode_stops_exactly_at_the_first_delimiter(tok):
    tok = build_char_tokenizer("\nab")  # "\n" is likely: most rows end by the delimiter
    batch = _sampled(tok, until="step", max_steps=1, max_new_tokens=4)
    kinds = set()
    for g in (g for row in batch.generations for g in row):
        steps, rest = complete_steps(g.text, "\n")  # a blank line is no step (pav.core.steps)
        if g.n_tokens == len(g.text) + 1:  # ended by eos
            assert g.finished and not steps
            kinds.add("eos")
        elif g.finished:
            assert len(steps) == 1 and rest == "" and g.n_tokens == len(g.text)
            kinds.add("step")
        else:
            assert not steps and g.n_tokens == len(g.text) == 4
            kinds.add("cut")
    assert {"step", "cut"} <= kinds


def test_solution_mode_stops_at_a_final_step(tok):
    tok = build_char_tokenizer("\nab")
    seen = []
    final = lambda line: seen.append(line) or line.startswith("b")  # noqa: E731
    batch = _sampled(tok, until="solution", max_steps=3, max_new_tokens=30, is_final_step=final)
    kinds, n_lines = set(), 0
    for g in (g for row in batch.generations for g in row):
        lines, _ = complete_steps(g.text, "\n")  # completed steps (a blank line is none)
        n_lines += len(lines)
        assert not any(line.startswith("b") for line in lines[:-1])
        if g.n_tokens == len(g.text) + 1:
            assert g.finished
            kinds.add("eos")
        elif g.finished:
            assert g.text.endswith("\n") and lines[-1].startswith("b")
            kinds.add("final")
        elif g.n_tokens < 30:
            assert g.text.endswith("\n") and len(lines) == 3 and not lines[-1].startswith("b")
            kinds.add("max_steps")
        else:
            assert g.n_tokens == len(g.text) == 30
    assert {"final", "max_steps"} <= kinds
    assert len(seen) == n_lines  # each completed line judged exactly once


def test_multi_character_delimiter():
    tok = build_char_tokenizer("\nab")
    policy = HFPolicy(tiny_gpt2(len(tok), seed=2), tok, "tiny", delimiter="a\n")
    gens = [g for row in policy.sample(["a\n", "b"], 32, until="step", max_steps=1, max_new_tokens=12,
                                       seed=0).generations for g in row]
    ends = [g for g in gens if g.finished and g.n_tokens == len(g.text)]
    assert ends and all(g.text.endswith("a\n") and len(complete_steps(g.text, "a\n")[0]) == 1 for g in ends)


# ----------------------------------------------------------------------------------------------
# Sampler: accounting, sharing, seeds


@pytest.mark.parametrize("fast", [True, False])
def test_token_counts_by_hand_and_prefill_encodes_each_context_once(tok, model, monkeypatch, fast):
    prefills = []
    def record_prefill(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:  # decode steps feed one token per row
            prefills.append(kwargs["input_ids"].shape)

    forward = FastGPT2.forward
    def fast_forward(self, input_ids, *args, **kwargs):  # FastGPT2 prefills on the fast path
        if input_ids.shape[1] > 1:
            prefills.append(input_ids.shape)
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(FastGPT2, "forward", fast_forward)
    hook = model.register_forward_pre_hook(record_prefill, with_kwargs=True)
    try:
        policy = HFPolicy(model, tok, "tiny", fast=fast)
        batch = policy.sample(["12\n", "12\n", "1\n"], 2, until="step", max_steps=1, max_new_tokens=1, seed=0)
    finally:
        hook.remove()
    assert batch.prompt_tokens == 3 + 2  # "12\n" once (although 4 rows use it), "1\n" once
    assert batch.generated_tokens == 3 * 2 * 1
    assert [len(row) for row in batch.generations] == [2, 2, 2]
    assert all(g.n_tokens == 1 for row in batch.generations for g in row)
    assert prefills == [torch.Size([2, 3])]  # one prefill of the 2 distinct contexts, not 6 rows


def test_generated_tokens_match_rows(tok, model):
    batch = HFPolicy(model, tok, "tiny", batch_size=5).sample(CONTEXTS, 3, until="solution", max_steps=2,
                                                             max_new_tokens=9, seed=1)
    gens = [g for row in batch.generations for g in row]
    per_row = [len(tok(g.text)["input_ids"]) + (g.n_tokens == len(g.text) + 1) for g in gens]  # + eos
    assert batch.generated_tokens == sum(per_row) == sum(g.n_tokens for g in gens)
    assert batch.prompt_tokens == sum(len(tok(c)["input_ids"]) for c in CONTEXTS)


def test_same_seed_same_output_different_seed_different(tok, model):
    policy = HFPolicy(model, tok, "tiny", batch_size=16)
    kw = dict(until="solution", max_steps=3, max_new_tokens=16)
    a = policy.sample(CONTEXTS, 8, seed=7, **kw).texts
    assert a == policy.sample(CONTEXTS, 8, seed=7, **kw).texts
    assert a != policy.sample(CONTEXTS, 8, seed=8, **kw).texts
    assert len({t for row in a for t in row}) > len(CONTEXTS)  # rollouts of one context differ


def test_context_too_long_or_unknown_character(tok, model):
    policy = HFPolicy(model, tok, "tiny")
    with pytest.raises(ValueError):
        policy.sample(["1" * 128], 1, until="step", max_steps=1, max_new_tokens=4)
    with pytest.raises(ValueError):
        policy.sample(["xyz"], 1, until="step", max_steps=1, max_new_tokens=4)


def test_rows_stop_at_the_position_window(tok, model):
    batch = HFPolicy(model, tok, "tiny").sample(["1" * 120], 2, until="solution", max_steps=99,
                                                max_new_tokens=50, temperature=0)
    assert all(g.n_tokens <= 8 for g in batch.generations[0])


def test_count_tokens_matches_the_prompt_tokens_of_a_sample():
    from pav.policies.hf import HFPolicy, tiny_gpt2
    from pav.policies.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    policy = HFPolicy(tiny_gpt2(len(tok), eos_token_id=tok.eos_token_id), tok, "p")
    context = "3 to 7 mod 10 ops +4 *2 +1 max 5\n"
    batch = policy.sample([context], 3, until="step", max_steps=1, max_new_tokens=4, seed=0)
    assert policy.count_tokens([context]) == [batch.prompt_tokens] == [len(context)]
    assert policy.count_tokens([context, "1\n", context]) == [len(context), 2, len(context)]
    assert policy.count_tokens([]) == []


@pytest.mark.parametrize("fast", [True, False])
def test_per_context_seeds_make_rollouts_independent_of_the_batch(tok, model, fast):
    """One seed per context: a context's rollouts are the same alone, beside others, in any order,
    repeated, and at any batch size (step-level beam search relies on this)."""
    kw = dict(until="solution", max_steps=3, max_new_tokens=16)
    seeds = [11, 12, 13, 14, 15, 16, 17]
    together = HFPolicy(model, tok, "tiny", batch_size=16, fast=fast).sample(CONTEXTS, 4, seed=seeds, **kw).texts
    for batch_size in (1, 5, 64):
        policy = HFPolicy(model, tok, "tiny", batch_size=batch_size, fast=fast)
        for c, s, expected in zip(CONTEXTS, seeds, together):
            assert policy.sample([c], 4, seed=[s], **kw).texts == [expected]
    reordered = HFPolicy(model, tok, "tiny", batch_size=16, fast=fast).sample(
        CONTEXTS[::-1] + CONTEXTS[:1], 4, seed=seeds[::-1] + [99], **kw).texts
    assert reordered[:-1] == together[::-1]
    assert reordered[-1] != together[0]  # the repeated context with another seed: other rollouts
    assert len({t for row in together for t in row}) > len(CONTEXTS)  # rollouts of one context differ


def test_per_context_seeds_must_match_the_contexts(tok, model):
    with pytest.raises(ValueError, match="one seed per context"):
        HFPolicy(model, tok, "tiny").sample(CONTEXTS, 2, until="step", max_steps=1, max_new_tokens=4, seed=[1, 2])


# ----------------------------------------------------------------------------------------------
# Sampler: over-long steps (`max_step_chars`)


def _over_long_cut(text, m):
    """The rule by hand: the first step (the blank lines it starts with included) of m characters or
    more, completed or not, ends the text m characters after its start; None: no such step."""
    steps, rest = complete_steps(text, "\n")
    at = 0
    for step in steps:
        if len(step) >= m:
            return at + m
        at += len(step) + 1
    return at + m if len(rest) >= m else None


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("until", ["step", "solution"])
@pytest.mark.parametrize("seed", [5, [21, 22, 23, 24, 25, 26, 27]])
def test_a_step_that_reaches_max_step_chars_is_cut_exactly_there(tok, model, fast, until, seed):
    """The limited sample is the unlimited one cut at its first over-long step (a budget cut,
    n_tokens = characters kept: one token per character), and untouched where no step reaches the
    limit; the limit stops no row sooner, so with one seed for the call the other rows draw the same."""
    kw = dict(until=until, max_steps=3, max_new_tokens=24, seed=seed)
    policy = HFPolicy(model, tok, "tiny", batch_size=16, fast=fast)
    free = policy.sample(CONTEXTS, 6, **kw)
    cut = policy.sample(CONTEXTS, 6, max_step_chars=8, **kw)
    kinds = set()
    for free_row, cut_row in zip(free.generations, cut.generations):
        for g, c in zip(free_row, cut_row):
            end = _over_long_cut(g.text, 8)
            if end is None:
                assert c == g
                kinds.add("kept")
            else:
                assert c == Generation(g.text[:end], end, False)
                kinds.add("cut")
    assert kinds == {"kept", "cut"}
    assert cut.generated_tokens == sum(c.n_tokens for row in cut.generations for c in row) < free.generated_tokens
    assert policy.sample(CONTEXTS, 6, max_step_chars=10**6, **kw).generations == free.generations
