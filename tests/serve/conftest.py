"""A tiny saved verifier (random GPT-2, character tokenizer) and its scorer."""

import pytest
import torch

from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.verifier.model import ValueVerifier
from pav.verifier.scorer import VerifierScorer


@pytest.fixture(scope="session")
def verifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    tok = build_char_tokenizer()
    verifier = ValueVerifier(tiny_gpt2(len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=64, seed=0), tok, "\n",
                             seed=0)
    with torch.no_grad():
        verifier.head.weight.normal_(0, 1.0)  # values that differ by prefix
    return verifier.save(tmp_path_factory.mktemp("verifier") / "verifier")


@pytest.fixture(scope="session")
def scorer(verifier_dir):
    return VerifierScorer(ValueVerifier.load(verifier_dir), k=4)
