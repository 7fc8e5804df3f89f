"""ValueVerifier: step-end positions, one pass == each prefix alone, truncation, save/load offline."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.verifier.model import ValueVerifier, encode_solution, encode_solutions, step_end_positions

torch.set_num_threads(1)
CHAR = build_char_tokenizer()


def word_tokenizer(pattern: str, vocab_words: list[str], bos: bool = False):
    """A WordLevel tokenizer whose pre-tokenizer cuts text with ``pattern`` (each match one token)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", *vocab_words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>")


# "<step>" is three tokens: "<", "step", ">"; a BOS token with an empty span comes first.
STEP_TOK = word_tokenizer(r"<|>|step|ans|[0-9]|[+=q ]", ["<", ">", "step", "ans", "+", "=", "q", " ",
                                                          *"0123456789"], bos=True)
# "\n" merges with a following digit into one token "\n5" (a BPE-like merge across the boundary).
MERGE_TOK = word_tokenizer(r"\n[0-9]|[0-9]|\n|[a-z+=]", ["\n", *[f"\n{d}" for d in range(10)], *"0123456789",
                                                         *"abcdefghijklmnopqrstuvwxyz", "+", "="])


def test_char_tokenizer_reads_the_delimiter_token_of_every_prefix():
    assert step_end_positions(CHAR, "ab\n", ["1", "23"], "\n") == [2, 4, 7]
    assert step_end_positions(CHAR, "ab\n\n", ["1", "23"], "\n\n") == [3, 6, 10]  # 2-token delimiter: its last


def test_a_delimiter_of_several_tokens_is_read_at_its_last_token():
    prompt, steps = "q<step>", ["1+2", "ans 3"]
    enc = encode_solution(STEP_TOK, prompt, steps, "<step>")
    tokens = STEP_TOK.convert_ids_to_tokens(enc.input_ids)
    assert tokens[0] == "<s>"  # special token first: positions account for it
    assert enc.positions == [4, 10, 16]
    assert [tokens[p] for p in enc.positions] == [">", ">", ">"]
    assert [tokens[p - 2: p + 1] for p in enc.positions] == [["<", "step", ">"]] * 3
    assert enc.straddling == 0


def test_a_token_merging_the_delimiter_with_the_next_step_is_read_and_counted():
    enc = encode_solution(MERGE_TOK, "ab\n", ["5+1=6", "7"], "\n")
    tokens = MERGE_TOK.convert_ids_to_tokens(enc.input_ids)
    assert tokens == ["a", "b", "\n5", "+", "1", "=", "6", "\n7", "\n"]
    assert enc.positions == [2, 7, 8]  # the token covering each delimiter's end, never the one before
    assert enc.straddling == 2


def test_truncated_prefixes_are_dropped_not_shifted():
    full = step_end_positions(CHAR, "ab\n", ["1", "23", "4"], "\n")
    assert full == [2, 4, 7, 9]
    enc = encode_solution(CHAR, "ab\n", ["1", "23", "4"], "\n", max_length=7)
    assert enc.positions == [2, 4] and enc.n_prefixes == 4
    assert enc.input_ids == CHAR("ab\n1\n23\n4\n")["input_ids"][:5]
    assert encode_solution(CHAR, "abcd\n", ["1"], "\n", max_length=3).positions == []


def test_prompt_must_end_with_the_delimiter():
    with pytest.raises(ValueError, match="must end with"):
        step_end_positions(CHAR, "ab", ["1"], "\n")


STEPS = st.lists(st.text(alphabet="0123456789+=", min_size=1, max_size=8), max_size=5)  # every tokenizer's alphabet


@settings(max_examples=60, deadline=None)
@given(prompts=st.lists(st.text(alphabet="q", max_size=6), min_size=1, max_size=6), data=st.data(),
       max_length=st.one_of(st.none(), st.integers(1, 40)))
def test_encoding_many_solutions_at_once_equals_one_at_a_time(prompts, data, max_length):
    """One tokenizer call for the batch gives each solution's ids, positions and counts exactly."""
    for tok, delim in ((CHAR, "\n"), (STEP_TOK, "<step>"), (MERGE_TOK, "\n")):
        ps = [p + delim for p in prompts]
        steps = [data.draw(STEPS) for _ in ps]
        assert encode_solutions(tok, ps, steps, delim, max_length) == \
            [encode_solution(tok, p, s, delim, max_length) for p, s in zip(ps, steps)]
    assert encode_solutions(CHAR, [], [], "\n") == []


def make_verifier(tokenizer, delimiter="\n", seed=0, features="none"):
    model = tiny_gpt2(len(tokenizer), n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=seed)
    reference = tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=seed + 7) \
        if features == "logprob" else None
    verifier = ValueVerifier(model, tokenizer, delimiter, seed=seed, reference=reference)
    with torch.no_grad():  # heads far from zero, so values differ clearly between prefixes
        verifier.head.weight.mul_(20.0)
        if reference is not None:
            verifier.feature_head[0].weight.mul_(5.0)
    return verifier


SOLUTIONS = {
    "\n": [("3 to 5\n", ["3+1=4", "4+1=5", "ans 5"]), ("7 to 1 max 4\n", ["7 to 1"]),
           ("2 to 9\n", ["2*3=6", "6+3=9", "9 to 9", "ans 9", "ans 9"])],
    "<step>": [("q<step>", ["1+2", "ans 3"]), ("q 12<step>", ["3"]), ("q<step>", ["1", "2", "3", "ans 9"])],
}


@pytest.mark.parametrize("tokenizer,delimiter", [(CHAR, "\n"), (STEP_TOK, "<step>")])
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("features", ["none", "logprob"])
def test_one_pass_equals_scoring_each_prefix_alone(tokenizer, delimiter, padding_side, features):
    verifier = make_verifier(tokenizer, delimiter, features=features)
    prompts, steps = zip(*SOLUTIONS[delimiter])
    together = verifier.prefix_values(prompts, steps, batch_size=3, padding_side=padding_side)
    for prompt, s, values in zip(prompts, steps, together):
        assert values.shape == (len(s) + 1,)
        alone = [verifier.prefix_values([prompt], [s[:h]])[0][-1] for h in range(len(s) + 1)]
        np.testing.assert_allclose(values, alone, atol=1e-5, rtol=0)
    flat = np.concatenate(together)
    assert flat.std() > 1e-3  # the check is not vacuous: prefixes get different values


@pytest.mark.parametrize("features", ["none", "logprob"])
def test_save_and_load_offline_give_identical_values(tmp_path, features):
    verifier = make_verifier(CHAR, features=features)
    prompts, steps = zip(*SOLUTIONS["\n"])
    before = verifier.prefix_values(prompts, steps)
    verifier.save(tmp_path / "v")
    assert not [p for p in (tmp_path / "v").iterdir() if p.suffix in {".bin", ".pt", ".pkl", ".pth"}]
    loaded = ValueVerifier.load(tmp_path / "v")
    after = loaded.prefix_values(prompts, steps)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    assert loaded.delimiter == "\n" and loaded.max_length == verifier.max_length == 64
    assert loaded.features == features
    other = make_verifier(CHAR, seed=1, features=features).prefix_values(prompts, steps)
    assert not np.allclose(np.concatenate(other), np.concatenate(after))  # the load did load something


def test_truncated_solutions_score_fewer_prefixes():
    verifier = make_verifier(CHAR)
    steps = ["1+1=2"] * 12  # 3 + 12 * 6 = 75 characters > 64 positions
    (values,) = verifier.prefix_values(["a\n"], [steps])
    assert len(values) == (64 - 2) // 6 + 1  # prefixes ending at token 1, 7, ..., 61
    full = [verifier.prefix_values(["a\n"], [steps[:h]])[0][-1] for h in range(len(values))]
    np.testing.assert_allclose(values, full, atol=1e-5, rtol=0)


def test_logprob_features_by_hand():
    """Step sum, step min and running min of the reference's token log-probs, per prefix."""
    verifier = make_verifier(CHAR, features="logprob")
    prompt, steps = "3 to 5\n", ["3+1=4", "4+1=5", "ans 5"]
    enc = verifier.encode(prompt, steps)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logits = verifier.reference(input_ids=ids).logits[0]
    logp = [0.0] + [float(torch.log_softmax(logits[t - 1], -1)[ids[0, t]]) for t in range(1, ids.shape[1])]
    pos = enc.positions
    want, run = [[0.0, 0.0, 0.0]], 0.0
    for h in range(1, len(pos)):
        span = logp[pos[h - 1] + 1: pos[h] + 1]  # the characters of step h and its delimiter
        assert len(span) == len(steps[h - 1]) + 1
        run = min(run, min(span))
        want.append([sum(span), min(span), run])
    mask = torch.ones_like(ids)
    got = verifier.logprob_features(ids, mask, torch.arange(ids.shape[1])[None], torch.tensor([pos]))
    np.testing.assert_allclose(got[0].numpy(), np.array(want), atol=1e-4, rtol=0)
    assert (got[0, 1:, 0] < 0).all()  # not vacuous


def test_the_reference_stays_frozen_while_the_rest_trains():
    verifier = make_verifier(CHAR, features="logprob")
    ref_before = {n: p.detach().clone() for n, p in verifier.reference.named_parameters()}
    head_before = verifier.feature_head[0].weight.detach().clone()
    verifier.train()
    assert not verifier.reference.training
    opt = torch.optim.SGD([p for p in verifier.parameters() if p.requires_grad], lr=0.1)
    enc = verifier.encode("3 to 5\n", ["3+1=4", "ans 4"])
    logits = verifier(torch.tensor([enc.input_ids]), torch.ones(1, len(enc.input_ids), dtype=torch.long),
                      torch.tensor([enc.positions]))
    logits.sum().backward()
    opt.step()
    assert all(torch.equal(p, ref_before[n]) for n, p in verifier.reference.named_parameters())
    assert not torch.equal(verifier.feature_head[0].weight, head_before)


def test_unknown_features_are_refused(tmp_path):
    verifier = make_verifier(CHAR)
    verifier.save(tmp_path / "v")
    meta = (tmp_path / "v" / "verifier.json").read_text().replace('"none"', '"magic"')
    (tmp_path / "v" / "verifier.json").write_text(meta)
    with pytest.raises(ValueError, match="unknown features"):
        ValueVerifier.load(tmp_path / "v")
