"""The built-in character tokenizer: one token per character, and an offline save/load round trip."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pav.policies.tokenizer import BUILTIN_ALPHABET, build_char_tokenizer, encode_plain  # noqa: E402

TEXT = "0 to 8 mod 10 ops *3 +3 *2 max 6\n0+3=3\n3*2=6\n6*3=8\nans 8\n"


def test_builtin_alphabet_ids():
    tok = build_char_tokenizer()
    assert len(BUILTIN_ALPHABET) == 69 and len(tok) == 71
    assert tok.pad_token_id == 0 and tok.eos_token_id == 70
    assert tok.convert_tokens_to_ids(list("\n +")) == [1, 2, 3]
    assert tok("\n\n", add_special_tokens=True)["input_ids"] == [1, 1]  # newline: one token, no BOS/EOS added


def test_round_trip_one_token_per_character():
    tok = build_char_tokenizer()
    ids = tok(TEXT)["input_ids"]
    assert len(ids) == len(TEXT)
    assert ids == [BUILTIN_ALPHABET.index(ch) + 1 for ch in TEXT]
    assert tok.decode(ids) == TEXT
    assert tok.decode(ids + [tok.eos_token_id, 0], skip_special_tokens=True) == TEXT


def test_unknown_character_is_an_error():
    with pytest.raises(Exception):
        build_char_tokenizer("ab")("abc")


def test_save_and_load_offline_encode_identically(tmp_path):
    from transformers import AutoTokenizer

    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    assert loaded.decode(loaded(TEXT)["input_ids"]) == TEXT
    assert (loaded.pad_token_id, loaded.eos_token_id, len(loaded)) == (0, 70, 71)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(alphabet="ab 12\n+=The answer is", max_size=30), min_size=1, max_size=8))
def test_encode_plain_equals_the_tokenizer_call(tiny_qwen, texts):
    """The backend shortcut gives the ids and offsets of ``tokenizer(texts, return_offsets_mapping=True)``
    for the character tokenizer and a byte-level BPE with its own special tokens."""
    from transformers import AutoTokenizer

    for tok in (build_char_tokenizer(), AutoTokenizer.from_pretrained(tiny_qwen)):
        enc = tok(texts, add_special_tokens=True, return_offsets_mapping=True)
        plain = encode_plain(tok, texts)
        assert [(e.ids, e.offsets) for e in plain] == [(list(i), [tuple(o) for o in m])
                                                       for i, m in zip(enc["input_ids"], enc["offset_mapping"])]
        assert [len(e) for e in plain] == [len(i) for i in enc["input_ids"]]


def test_encode_plain_declines_when_the_backend_would_truncate():
    tok = build_char_tokenizer()
    tok._tokenizer.enable_truncation(3)
    assert encode_plain(tok, ["abcdef"]) is None
    tok._tokenizer.no_truncation()
    assert encode_plain(tok, ["abcdef"])[0].ids == tok("abcdef")["input_ids"]
