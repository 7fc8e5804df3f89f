"""The Llama-family fast path (`FastLlama`) and prefix reuse across calls (`HFPolicy.reuse_prefixes`).

Tiny random Llama and Qwen2 models (grouped-query attention, 2 key heads for 4 query heads, Qwen2's
q/k/v biases) decode on the fast path exactly what transformers' own forward decodes: greedy text
equals an uncached, unpadded reference, and keyed sampling gives the generic path's text. Step-mode
calls inside ``reuse_prefixes`` give what the same calls give without it, with fewer tokens encoded.
"""

import contextlib
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from pav.policies import build_char_tokenizer  # noqa: E402
from pav.policies.fast_llama import FastLlama  # noqa: E402
from pav.policies.hf import HFPolicy, tiny_gpt2  # noqa: E402

from .test_policy_hf import ALPHABET, CONTEXTS, _reference  # noqa: E402

torch.set_num_threads(1)
ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer(ALPHABET)


def _model(tok, arch: str, seed: int = 0):
    config_cls, model_cls = ARCHS[arch]
    config = config_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
                        rope_theta=10.0)  # fast-turning rotary positions: a wrong position changes the text
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # a sharp model: greedy text varies by context
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fast_path_is_used_and_greedy_equals_the_uncached_reference(tok, arch, monkeypatch):
    model = _model(tok, arch)
    assert FastLlama.supports(model)
    steps = []
    real = FastLlama.grids_step
    monkeypatch.setattr(FastLlama, "grids_step", lambda self, *a: steps.append(1) or real(self, *a))
    policy = HFPolicy(model, tok, "t", batch_size=5)
    got = policy.sample(CONTEXTS, 1, until="solution", max_steps=12, max_new_tokens=9, temperature=0)
    want = [_reference(model, tok, c, until="solution", max_steps=12, max_new_tokens=9) for c in CONTEXTS]
    assert [row[0] for row in got.generations] == want
    assert steps


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_keyed_sampling_on_the_fast_path_equals_the_generic_path(tok, arch):
    model = _model(tok, arch, seed=1)
    kwargs = dict(until="solution", max_steps=4, max_new_tokens=12, seed=list(range(len(CONTEXTS))))
    fast = HFPolicy(model, tok, "t", batch_size=8).sample(CONTEXTS, 3, **kwargs)
    generic = HFPolicy(model, tok, "t", batch_size=8, fast=False).sample(CONTEXTS, 3, **kwargs)
    assert fast.texts == generic.texts
    assert len({t for row in fast.texts for t in row}) > 5  # the rollouts differ


def test_unsupported_variants_decode_through_transformers(tok):
    model = _model(tok, "llama")
    model.config.hidden_act = "gelu"
    assert not FastLlama.supports(model)
    assert not FastLlama.supports(tiny_gpt2(len(tok)))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("rollouts", [1, 3])  # 1: one buffer per row (parts chain across calls); 3: a shared-prefix grid
@pytest.mark.parametrize("repack", ["default", "at every stop"])
def test_step_calls_that_extend_the_last_rows_reuse_their_cache_and_sample_the_same(tok, arch, rollouts, repack,
                                                                                     monkeypatch):
    """A sample taken one step per call: each call's contexts are the last call's contexts plus one
    of their sampled steps (a beam's kept prefixes). Inside reuse_prefixes only the new tokens are
    encoded, and every call's text is what it is without reuse. New KV buffers start as NaN, so a
    masked column that was never written (contexts reuse different lengths) would show. Stopped
    rows are stored just before a repack moves them: repacking at every stop tests that order."""
    from pav.policies import fast_decode
    from pav.policies.fast_gpt2 import KVBuffer

    if repack != "default":
        monkeypatch.setattr(fast_decode, "FAST_PRUNE_FRACTION", 0.0)

    real_init = KVBuffer.__init__

    def poisoned(self, *a, **k):
        real_init(self, *a, **k)
        for x in (*self.keys, *self.values):
            x.fill_(float("nan"))

    monkeypatch.setattr(KVBuffer, "__init__", poisoned)
    model = tiny_gpt2(len(tok), seed=2, eos_token_id=tok.eos_token_id) if arch == "gpt2" else _model(tok, arch, 2)
    policy = HFPolicy(model, tok, "t", batch_size=8)

    def run(reuse: bool):
        contexts, texts, encoded = list(CONTEXTS), [], 0
        with policy.reuse_prefixes() if reuse else contextlib.nullcontext():
            for depth in range(4):
                batch = policy.sample(contexts, rollouts, until="step", max_steps=1, max_new_tokens=6,
                                      seed=[100 * depth + i for i in range(len(contexts))])
                texts.append(batch.texts)
                encoded += batch.prompt_tokens
                contexts = [c + row[depth % rollouts] for c, row in zip(contexts, batch.texts)]
        return texts, encoded

    plain, encoded_plain = run(False)
    reused, encoded_reused = run(True)
    assert reused == plain
    assert encoded_reused < 0.6 * encoded_plain
    assert policy._prefix_store is None  # freed when the block ends


def test_the_cache_goes_under_the_name_the_forward_takes():
    """transformers renamed ``past_key_values`` to ``cache``; the sampler reads the signature."""
    from pav.policies.hf import cache_argument

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs): ...

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs): ...

    assert cache_argument(Old()) == "past_key_values"
    assert cache_argument(New()) == "cache"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_contexts_with_a_common_header_read_it_encoded_once_and_sample_the_same(tok, arch):
    """A few-shot header shared by every context is encoded once per cohort (`shared_prefix`): keyed
    sampling gives the generic path's text (which encodes each context whole), and the prompt
    tokens counted are the header once plus each context's own tokens."""
    from pav.policies.fast_decode import SHARED_PREFIX_MIN

    header = "1+2=3\n4*5=20\n6-7=-1\n8>9\n"
    assert len(header) >= SHARED_PREFIX_MIN
    contexts = [header + c for c in CONTEXTS if c != "\n"]
    model = tiny_gpt2(len(tok), seed=2, eos_token_id=tok.eos_token_id) if arch == "gpt2" else _model(tok, arch, 3)
    kwargs = dict(until="solution", max_steps=4, max_new_tokens=10, seed=list(range(len(contexts))))
    fast = HFPolicy(model, tok, "t", batch_size=32).sample(contexts, 3, **kwargs)
    generic = HFPolicy(model, tok, "t", batch_size=32, fast=False).sample(contexts, 3, **kwargs)
    assert fast.texts == generic.texts
    ids = [len(c) for c in contexts]  # one id per character, no special tokens
    assert generic.prompt_tokens == sum(ids)
    assert fast.prompt_tokens == sum(ids) - len(header) * (len(contexts) - 1)


def test_the_store_answers_with_the_longest_common_prefix_of_any_row():
    """Re-tokenising a row's text can change its ids at any point: a lookup reads the stored row
    that shares the most leading ids, its KV cut to them (real columns only, across parts), and
    always leaves one id to feed."""
    from pav.policies.prefix_store import Part, PrefixStore

    keys = [torch.arange(2 * 10 * 3, dtype=torch.float32).view(2, 10, 3)]
    padded = [torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3) - 100]  # 1 pad column, then 3 real
    prefix = Part(padded, padded, torch.tensor([False, True, True, True]))
    store = PrefixStore()
    store.put(tuple(range(10)), (Part(keys, [k + 1 for k in keys]),))
    store.put((50, 51, 52, 60, 61), (prefix, Part([k[:, :2] for k in keys], [k[:, :2] for k in keys])))
    n, parts = store.longest([*range(10), 42])
    assert n == 10 and parts[0].keys[0].shape == (2, 10, 3)
    n, parts = store.longest([*range(9), 77, 42])  # token 9 merged into another
    assert n == 9 and parts[0].length == 9
    assert torch.equal(parts[0].keys[0], keys[0][:, :9]) and torch.equal(parts[0].values[0], keys[0][:, :9] + 1)
    n, parts = store.longest([*range(4), 77, 42])  # re-tokenised six ids back: the four before still read
    assert n == 4 and torch.equal(parts[0].keys[0], keys[0][:, :4])
    assert store.longest(list(range(10)))[0] == 9  # one id is left to feed
    n, parts = store.longest([50, 51, 52, 60, 99])  # the prefix part whole, one suffix column
    assert n == 4 and [p.length for p in parts] == [3, 1] and torch.equal(parts[1].keys[0], keys[0][:, :1])
    n, parts = store.longest([50, 51, 7])  # inside the left-padded prefix part: its pad column kept, masked
    assert n == 2 and len(parts) == 1 and parts[0].valid.tolist() == [False, True, True]
    assert torch.equal(parts[0].keys[0], padded[0][:, :3])
    assert store.longest([5, 6, 7]) == (0, ())
    assert store.longest([0]) == (0, ())


def test_parts_are_written_right_aligned_real_columns_only():
    """A part's masked columns (left padding, a gap between reused and new KV) are skipped: the real
    columns of every part, in order, end at column ``end`` of the row; nothing else is touched."""
    from pav.policies.prefix_store import Part, write_parts

    a = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    b = -torch.arange(1, 2 * 2 * 3 + 1, dtype=torch.float32).view(2, 2, 3)
    parts = (Part([a], [a + 0.5], torch.tensor([False, True, True, False, True])), Part([b], [b - 0.5]))
    keys, values = [torch.full((3, 2, 9, 3), 7.0)], [torch.full((3, 2, 9, 3), 7.0)]
    write_parts(parts, keys, values, 1, 8)
    expected = torch.cat([a[:, [1, 2, 4]], b], dim=1)  # 5 real columns: 3 then 8
    assert torch.equal(keys[0][1, :, 3:8], expected) and torch.equal(values[0][1, :, 3:8], torch.cat(
        [a[:, [1, 2, 4]] + 0.5, b - 0.5], dim=1))
    untouched = torch.ones(3, 9, dtype=torch.bool)
    untouched[1, 3:8] = False
    assert (keys[0].transpose(1, 2)[untouched] == 7).all() and (values[0].transpose(1, 2)[untouched] == 7).all()


def test_compacting_a_buffer_keeps_the_chosen_rows_in_order():
    from pav.policies.fast_gpt2 import KVBuffer

    buf = KVBuffer(1, 5, 2, 4, 3, dtype=torch.float32, device=torch.device("cpu"))
    rows = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 2, 4, 3)
    buf.keys[0].copy_(rows)
    buf.values[0].copy_(rows + 10)
    buf.set_padding(torch.tensor([0, 1, 2, 3, 0]))
    bias = buf.bias.clone()
    for keep in ([0, 1, 3, 4], [2, 4]):
        before_k, before_v, before_b = buf.keys[0].clone(), buf.values[0].clone(), buf.bias.clone()
        buf.compact(torch.tensor(keep), 3)
        n = len(keep)
        assert buf.size == n
        assert torch.equal(buf.keys[0][:n, :, :3], before_k[keep, :, :3])
        assert torch.equal(buf.values[0][:n, :, :3], before_v[keep, :, :3])
        assert torch.equal(buf.bias[:n], before_b[keep])
    assert torch.equal(buf.keys[0][:2, 0, 0, 0], torch.tensor([3.0, 4.0])) and torch.equal(buf.bias[:2], bias[[3, 4]])


def test_prefill_passes_split_where_a_pass_saves_more_than_it_costs(monkeypatch):
    from pav.policies import fast_decode
    from pav.policies.fast_decode import _passes

    monkeypatch.setattr(fast_decode, "PREFILL_PASS_COST", 32)
    assert _passes([1, 1, 1, 40, 1, 1]) == [(0, 3), (3, 4), (4, 6)]
    assert _passes([5, 3, 4, 6]) == [(0, 4)]  # no split saves 32 ids
    assert _passes([1] * 64 + [12]) == [(0, 64), (64, 65)]  # 65 x 12 against 64 + 12 + 32
    assert _passes([7]) == [(0, 1)]
    monkeypatch.setattr(fast_decode, "PREFILL_PASS_COST", 0)
    assert _passes([2, 2, 9, 9, 1]) == [(0, 2), (2, 4), (4, 5)]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_prefill_in_several_passes_samples_what_one_pass_samples(tok, arch, monkeypatch):
    """Forced to split wherever the rows' widths differ, each pass encoding only its own width (the
    columns no pass writes are masked), the prefill gives the generic path's text under keyed seeds."""
    from pav.policies import fast_decode

    monkeypatch.setattr(fast_decode, "PREFILL_FILL", 1.01)
    monkeypatch.setattr(fast_decode, "PREFILL_PASS_COST", 0)
    model = tiny_gpt2(len(tok), seed=2, eos_token_id=tok.eos_token_id) if arch == "gpt2" else _model(tok, arch, 3)
    kwargs = dict(until="solution", max_steps=4, max_new_tokens=10, seed=list(range(len(CONTEXTS))))
    fast = HFPolicy(model, tok, "t", batch_size=32).sample(CONTEXTS, 1, **kwargs)
    generic = HFPolicy(model, tok, "t", batch_size=32, fast=False).sample(CONTEXTS, 1, **kwargs)
    assert fast.texts == generic.texts
