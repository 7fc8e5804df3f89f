"""The fast GPT-2 decode path (`pav.policies.fast_gpt2`) against transformers and the generic path.

Logits are compared with the transformers forward (teacher-forced, left-padded rows of different
lengths); sampled text is compared with the generic KV-cache path and with the uncached, unpadded
reference decode of test_policy_hf.py, on the same loud random GPT-2.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from transformers import DynamicCache  # noqa: E402
from transformers.activations import ACT2FN  # noqa: E402

from pav.policies import build_char_tokenizer  # noqa: E402
from pav.policies.fast_gpt2 import FastGPT2, PrefixGrid  # noqa: E402
from pav.policies.hf import HFPolicy, cache_argument, tiny_gpt2  # noqa: E402

from .test_policy_hf import ALPHABET, CONTEXTS, _reference, _varied_model  # noqa: E402

torch.set_num_threads(1)

TEXTS = ["12\n3+4=", "7", "0>8 B\n9*9=1\n45*6=2\n", "3 ", "1+2=3\n"]


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


@pytest.fixture(scope="module")
def model(tok):
    return _varied_model(tok, 0)


def _sharp_model(tok, seed):
    """`_varied_model` with larger query/key weights: attention far from uniform, so its scale,
    masking and softmax show in the logits."""
    model = _varied_model(tok, seed)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[:, : 2 * model.config.n_embd].mul_(6)
    return model


def _left_padded(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    mask = enc["attention_mask"]
    return enc["input_ids"], mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("activation", ["gelu_pytorch_tanh", "gelu_new", "gelu"])
def test_forward_logits_equal_transformers(tok, activation):
    model = _sharp_model(tok, 1)
    model.config.activation_function = activation
    for block in model.transformer.h:
        block.mlp.act = ACT2FN[activation]
    ids, mask, pos = _left_padded(tok, TEXTS)
    real = mask.bool()
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (B, T, V)
        fast = FastGPT2(model)
        buf = fast.buffer(len(TEXTS), ids.shape[1] + 2)
        buf.set_padding((1 - mask).sum(-1))
        got = fast.forward(ids, pos, buf, 0)
        assert (got - want)[real].abs().max() < 1e-5
        # the same rows again: a prefill of 4 columns, then one column per step
        buf = fast.buffer(len(TEXTS), ids.shape[1])
        buf.set_padding((1 - mask).sum(-1))
        steps = [fast.forward(ids[:, :4], pos[:, :4], buf, 0)]
        steps += [fast.step(ids[:, j], pos[:, j], buf, j)[:, None] for j in range(4, ids.shape[1])]
        assert (torch.cat(steps, 1) - want)[real].abs().max() < 1e-5
    assert not torch.equal(want[0, -1], want[1, -1])  # rows differ: padding and positions matter


@pytest.mark.parametrize("min_window", [None, 1, 3])
def test_grid_step_logits_equal_transformers(tok, min_window):
    """Teacher-forced decode of shared prefixes: contexts prefilled by transformers (left-padded),
    then 2 and 3 rows per context continue with different tokens, compacted halfway. The suffix
    window read per step (masked past the row's last token) does not change the logits: the CPU
    default (the whole buffer here), one column (a GPU's), and three."""
    prefixes = ["12\n3", "0>8 B\n9*", "7"]
    rows = [(0, "+4=7\n"), (0, "*2=2\n"), (1, "9=1\nA"), (2, "B\n1+1"), (2, "\n\n\n3 "), (2, "=3 4+")]
    ids, mask, pos = _left_padded(tok, prefixes)
    model = _sharp_model(tok, 2)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_argument(model): cache})
        per = 3
        slots = [0, 1, 0, 2, -1, -1, 3, 4, 5]  # 3 contexts x 3 slots, -1: empty (repeats a row)
        src = [r if r >= 0 else 0 for r in slots]
        ctx_of = torch.tensor([rows[r][0] for r in src])
        cont = torch.tensor([tok(rows[r][1])["input_ids"] for r in src])  # (9, 5)
        full = [tok(prefixes[rows[r][0]] + rows[r][1])["input_ids"] for r in src]
        fast = FastGPT2(model)
        if min_window is not None:
            fast.min_window = min_window
        layers = cache.layers
        grid = PrefixGrid([x.keys for x in layers], [x.values for x in layers], mask.bool(), per, 8)
        position = mask.sum(-1)[ctx_of]
        live = list(range(9))
        for t in range(cont.shape[1]):
            if t == 2:  # drop context 1 and an empty slot of context 0: 2 contexts x 3 slots
                live = [0, 1, 2, 6, 7, 8]
                grid.compact(torch.tensor([0, 2]), torch.tensor(live), 3, t)
            logits = fast.grid_step(cont[live, t], position[live] + t, grid, t)  # (n, V)
            for k, slot in enumerate(live):
                if slots[slot] < 0:
                    continue
                n = len(full[slot]) - cont.shape[1] + t  # the token fed is full[n]
                want = model(torch.tensor([full[slot][: n + 1]])).logits[0, -1]
                assert (logits[k] - want).abs().max() < 1e-5, (t, slot)


@pytest.mark.parametrize("batch_size,n", [(3, 4), (7, 4), (64, 4), (5, 1), (64, 1)])
@pytest.mark.parametrize("until", ["step", "solution"])
def test_greedy_fast_equals_generic_and_reference(tok, model, until, batch_size, n):
    final = lambda line: "A" in line or len(line) >= 4  # noqa: E731
    kw = dict(until=until, max_steps=3, max_new_tokens=24, is_final_step=final, temperature=0.0)
    contexts = CONTEXTS + CONTEXTS[1:3] + ["0>8 B\n9*9=1\n45*6=2\n"]  # duplicates, lengths 1..19
    fast = HFPolicy(model, tok, "tiny", batch_size=batch_size).sample(contexts, n, **kw)
    slow = HFPolicy(model, tok, "tiny", batch_size=batch_size, fast=False).sample(contexts, n, **kw)
    ref = [_reference(model, tok, c, **{k: v for k, v in kw.items() if k != "temperature"}) for c in contexts]
    assert fast.generations == slow.generations == [[w] * n for w in ref]
    assert (fast.generated_tokens, fast.prompt_tokens) == (slow.generated_tokens, slow.prompt_tokens)
    assert len({w.n_tokens for w in ref}) >= 3  # rows stop at different times: repacking exercised


def test_rows_stop_at_the_window_like_the_generic_path(tok, model):
    kw = dict(until="solution", max_steps=99, max_new_tokens=50, temperature=0)
    contexts = ["1" * 120, "2" * 100, "3"]
    fast = HFPolicy(model, tok, "tiny").sample(contexts, 2, **kw)
    slow = HFPolicy(model, tok, "tiny", fast=False).sample(contexts, 2, **kw)
    assert fast.generations == slow.generations
    assert all(g.n_tokens <= 8 for g in fast.generations[0])


def test_sampling_is_seeded_and_fast_path_is_used(tok, model, monkeypatch):
    from pav.policies import fast_decode

    steps = []  # grid steps of the fast path
    real = fast_decode.FastGPT2.grids_step
    monkeypatch.setattr(fast_decode.FastGPT2, "grids_step", lambda self, *a: steps.append(1) or real(self, *a))
    kw = dict(until="solution", max_steps=3, max_new_tokens=16)
    policy = HFPolicy(model, tok, "tiny", batch_size=16)  # 7 contexts x 8 rows: several cohorts
    a = policy.sample(CONTEXTS, 8, seed=7, **kw)
    assert len(steps) > 16  # the fast path decodes
    steps.clear()
    widths = []  # input_ids width of each call of the transformers model
    hook = model.register_forward_pre_hook(lambda m, a, k: widths.append(k["input_ids"].shape[1]),
                                           with_kwargs=True)
    try:
        assert not FastGPT2.supports(model)  # a hook would be skipped: such a model takes the generic path
        HFPolicy(model, tok, "tiny", batch_size=16).sample(CONTEXTS, 8, seed=7, **kw)
    finally:
        hook.remove()
    assert steps == [] and widths.count(1) > 16  # the generic path decodes through the model
    assert FastGPT2.supports(model)
    assert a.generations == policy.sample(CONTEXTS, 8, seed=7, **kw).generations
    assert a.texts != policy.sample(CONTEXTS, 8, seed=8, **kw).texts
    assert len({t for row in a.texts for t in row}) > len(CONTEXTS)  # rollouts of a context differ


def test_top_p_and_temperature_on_the_fast_path(tok, model):
    policy = HFPolicy(model, tok, "tiny")
    kw = dict(until="solution", max_steps=4, max_new_tokens=20)
    assert (policy.sample(CONTEXTS, 2, top_p=1e-6, seed=3, **kw).generations
            == policy.sample(CONTEXTS, 2, temperature=0, **kw).generations)
    hot = policy.sample(CONTEXTS, 8, temperature=5.0, seed=3, **kw)
    assert hot.generated_tokens == sum(g.n_tokens for row in hot.generations for g in row)


def test_supports_only_gpt2():
    from transformers import LlamaConfig, LlamaForCausalLM

    assert FastGPT2.supports(tiny_gpt2(10))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    assert not FastGPT2.supports(llama)
    with pytest.raises(ValueError):
        FastGPT2(llama)


def _many_contexts(n_contexts, seed):
    """Contexts of 1..30 characters over the alphabet: greedy rollouts of very different lengths."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_contexts):
        length = int(torch.randint(1, 31, (1,), generator=gen))
        out.append("".join(ALPHABET[int(i)] for i in torch.randint(0, len(ALPHABET), (length,), generator=gen)))
    return out


@pytest.mark.parametrize("max_cohorts", [1, 3])
@pytest.mark.parametrize("batch_size,n", [(4, 3), (9, 2), (16, 5), (40, 3), (7, 1)])
def test_cohort_refill_greedy_equals_generic(tok, model, batch_size, n, max_cohorts):
    """Many contexts of different rollout lengths and duplicates, batches smaller than the rows
    (with several cohorts, new ones start as rows free up; a context may have more rows than a
    batch): the fast path's greedy text and token counts equal the generic path's, row for row."""
    final = lambda line: "A" in line or len(line) >= 5  # noqa: E731
    kw = dict(until="solution", max_steps=4, max_new_tokens=30, is_final_step=final, temperature=0.0)
    contexts = _many_contexts(40, 5)
    contexts += contexts[3:9] + contexts[:2]  # duplicates, not adjacent
    fast = HFPolicy(model, tok, "tiny", batch_size=batch_size, cohorts=max_cohorts).sample(contexts, n, **kw)
    slow = HFPolicy(model, tok, "tiny", batch_size=batch_size, fast=False).sample(contexts, n, **kw)
    assert fast.generations == slow.generations
    assert (fast.generated_tokens, fast.prompt_tokens) == (slow.generated_tokens, slow.prompt_tokens)
    assert fast.generated_tokens == sum(g.n_tokens for row in fast.generations for g in row)
    assert fast.prompt_tokens == sum(len(tok(c)["input_ids"]) for c in dict.fromkeys(contexts))
    lengths = {g.n_tokens for row in fast.generations for g in row}
    assert min(lengths) <= 6 and max(lengths) >= 20  # rows of very different lengths: refills exercised


def test_cohorts_overlap_and_sampling_is_seeded(tok, model, monkeypatch):
    """Continuous batching on: cohorts overlap (a new one starts while others still decode), outputs are
    the same for the same seed, and each context's rollouts land in its own row."""
    from pav.policies import fast_decode

    seen = []
    real = fast_decode.FastGPT2.grids_step

    def spy(self, tokens, positions, grids):
        seen.append(len(grids))
        return real(self, tokens, positions, grids)

    monkeypatch.setattr(fast_decode.FastGPT2, "grids_step", spy)
    policy = HFPolicy(model, tok, "tiny", batch_size=24, cohorts=3)
    kw = dict(until="solution", max_steps=3, max_new_tokens=20)
    contexts = _many_contexts(30, 6)
    a = policy.sample(contexts, 4, seed=11, **kw)
    assert max(seen) >= 2  # several cohorts decoded in one step
    assert a.generations == policy.sample(contexts, 4, seed=11, **kw).generations
    assert [len(row) for row in a.generations] == [4] * len(contexts)
    assert a.generated_tokens == sum(g.n_tokens for row in a.generations for g in row)



def test_grid_width_splits_a_context_when_that_leaves_fewer_empty_slots():
    from pav.policies.fast_decode import GROUP_COST, _grid_width

    def cost(live, w):
        return sum(-(-k // w) for k in live) * (w + GROUP_COST)

    assert _grid_width([16, 3, 2, 1]) == 4  # 28 slots in 7 grid contexts instead of 64 in 4
    assert _grid_width([5, 5, 5]) == 5 and _grid_width([1, 1]) == 1
    for live in ([16, 9, 5, 3, 12], [7], [2, 1, 1, 1, 1, 1], [16] * 8 + [1]):
        w = _grid_width(live)
        assert 1 <= w <= max(live) and all(cost(live, w) <= cost(live, v) for v in range(1, max(live) + 1))


def test_repacking_splits_contexts_and_keeps_every_rollout(tok, model, monkeypatch):
    """Rollouts of one context stop at different times, so a repack may spread a context's live rows
    over several grid contexts (copies of its prefix); every rollout is still the generic path's."""
    from pav.policies import fast_decode

    split = []
    real = fast_decode.PrefixGrid.compact

    def spy(self, contexts, slots, rows_per_context, filled):
        split.append(len(set(contexts.tolist())) < len(contexts))
        return real(self, contexts, slots, rows_per_context, filled)

    monkeypatch.setattr(fast_decode.PrefixGrid, "compact", spy)
    kw = dict(until="solution", max_steps=2, max_new_tokens=24)
    seeds = list(range(21, 21 + len(CONTEXTS)))  # keyed noise: the same draws on both paths
    fast = HFPolicy(model, tok, "tiny", batch_size=64).sample(CONTEXTS, 9, seed=seeds, **kw)
    slow = HFPolicy(model, tok, "tiny", batch_size=64, fast=False).sample(CONTEXTS, 9, seed=seeds, **kw)
    assert any(split)
    assert fast.generations == slow.generations


def test_long_contexts_prefill_through_transformers_with_the_same_result(tok, model, monkeypatch):
    """A cohort whose prefill scores would be large is prefilled by transformers (memory-efficient
    attention) instead of FastGPT2; the generations do not change."""
    from pav.policies import fast_decode

    kw = dict(until="solution", max_steps=3, max_new_tokens=16, temperature=0.0)
    fast_prefills = []
    real = fast_decode._prefill
    monkeypatch.setattr(fast_decode, "_prefill", lambda *a, **k: fast_prefills.append(1) or real(*a, **k))
    small = HFPolicy(model, tok, "tiny", batch_size=8).sample(CONTEXTS, 2, **kw)
    assert fast_prefills
    fast_prefills.clear()
    monkeypatch.setattr(fast_decode, "FAST_PREFILL_MAX_SCORES", 0)
    large = HFPolicy(model, tok, "tiny", batch_size=8).sample(CONTEXTS, 2, **kw)
    assert not fast_prefills and large.generations == small.generations
