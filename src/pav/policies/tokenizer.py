"""A character-level tokenizer, built locally with the `tokenizers` library (no network).

Each character of the alphabet is one token; ``<pad>`` is id 0, the characters follow in alphabet
order (so the built-in task's characters keep ids 1..69), and ``<eos>``
comes last. Characters outside the alphabet are an encoding error, not a silent ``<unk>``. The
result is a transformers fast tokenizer, so ``save_pretrained`` / ``AutoTokenizer.from_pretrained``
round-trip it offline.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"

# the built-in task's alphabet: "\n +-*=>", digits, upper- and lower-case letters (69 characters).
BUILTIN_ALPHABET = "\n +-*=>" + string.digits + string.ascii_uppercase + string.ascii_lowercase


def build_char_tokenizer(alphabet: str = BUILTIN_ALPHABET) -> PreTrainedTokenizerFast:
    """A character tokenizer: ``<pad>`` = 0, then one id per character, then ``<eos>``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(alphabet)) != len(alphabet) or not alphabet:
        raise ValueError("alphabet must be a non-empty string of distinct characters")
    vocab = {PAD_TOKEN: 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}, EOS_TOKEN: len(alphabet) + 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char
    backend.decoder = decoders.Fuse()  # join tokens without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def check_encodable(tokenizer: Any, texts: list[str]) -> None:
    """A one-line ValueError naming the characters of ``texts`` that a tokenizer without an unknown
    token (the built-in character tokenizer) cannot encode; nothing for any other tokenizer."""
    if getattr(tokenizer, "unk_token", None) is not None or not hasattr(tokenizer, "get_vocab"):
        return
    vocab = tokenizer.get_vocab()
    bad = sorted({c for t in texts for c in t if c not in vocab})
    if bad:
        shown = "".join(bad[:20]) + ("..." if len(bad) > 20 else "")
        raise ValueError(f"the text holds {len(bad)} character(s) the model's character tokenizer cannot encode "
                         f"({shown!r}): it covers only the built-in task's alphabet; for this data use a model with a "
                         "general tokenizer (train-verifier: --set backbone=HF_MODEL_DIR)")


def encode_plain(tokenizer: Any, texts: list[str]) -> list[Any] | None:
    """`tokenizers.Encoding` of each text (special tokens added) straight from the backend of a
    plain transformers fast tokenizer: their ``ids`` and ``offsets`` are what ``tokenizer(texts,
    return_offsets_mapping=True)`` gives, without its per-text Python conversion (``len(e)``
    counts tokens without building a list). None when that call would do more than the backend
    does: a tokenizer class with its own encoding, truncation or padding left set on the backend,
    or special-token splitting that differs; the caller then uses ``tokenizer(...)``."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: no shortcut
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    if not (isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._encode_plus is TokenizersBackend._encode_plus
            and backend is not None and backend.truncation is None and backend.padding is None
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))):
        return None
    return backend.encode_batch(texts, add_special_tokens=True)


def plain_decoder(tokenizer: Any) -> Any | None:
    """The backend's ``decode_batch`` when it is what ``tokenizer.decode`` calls (a plain fast
    tokenizer that does not clean up spaces), else None: `encode_plain`'s counterpart."""
    try:
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    plain = (isinstance(tokenizer, TokenizersBackend) and type(tokenizer)._decode is TokenizersBackend._decode
             and not tokenizer.clean_up_tokenization_spaces and hasattr(backend, "decode_batch"))
    return backend.decode_batch if plain else None
