"""LoRA verifier training: only adapters and heads train, a killed run resumes exactly, and the
saved verifier is an ordinary one whose values equal the adapted model's."""

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from pav.verifier.lora import LoraOptions, add_lora, has_lora, merge_lora
from pav.verifier.model import ValueVerifier
from pav.verifier.train import train_verifier

from .test_verifier_train import CFG, Killed, fixture_examples, fresh_verifier, kill_at

LORA = dataclasses.replace(CFG, lora=LoraOptions(r=4, alpha=8.0))


def test_only_adapters_and_heads_are_trainable():
    verifier = fresh_verifier()
    frozen_before = {n: p.detach().clone() for n, p in verifier.backbone.named_parameters()}
    add_lora(verifier, LORA.lora)
    trainable = [n for n, p in verifier.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable), trainable
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
            for n, p in verifier.backbone.named_parameters() if "lora_" not in n}
    assert all(torch.equal(base[n], p) for n, p in frozen_before.items())  # the wrap changed no weight


def test_lora_training_moves_only_adapters_then_merges_into_a_plain_verifier(tmp_path):
    examples = fixture_examples()
    verifier = fresh_verifier()
    original = {n: p.detach().clone() for n, p in verifier.backbone.named_parameters()}
    train_verifier(verifier, examples, fixture_examples(6, seed=1), tmp_path, LORA)
    assert not has_lora(verifier)
    merged = dict(verifier.backbone.named_parameters())
    assert set(merged) == set(original)
    moved = [n for n in original if not torch.equal(original[n], merged[n])]
    assert moved and all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in moved), moved
    loaded = ValueVerifier.load(tmp_path / "verifier")  # no peft structure needed
    args = (["q1\n", "q2\n"], [["up", "dn"], ["dn"]])
    for a, b in zip(verifier.prefix_values(*args), loaded.prefix_values(*args)):
        assert np.allclose(a, b, atol=1e-6)


def test_merged_values_equal_the_adapted_model():
    verifier = fresh_verifier()
    add_lora(verifier, LORA.lora)
    with torch.no_grad():
        for n, p in verifier.backbone.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # lora_B starts at 0; make the adapters do something
    args = (["q1\n"], [["up", "dn", "up"]])
    adapted = verifier.prefix_values(*args)[0]
    merge_lora(verifier)
    assert np.allclose(adapted, verifier.prefix_values(*args)[0], atol=1e-5)


def test_a_killed_lora_run_resumes_to_the_same_parameters(tmp_path):
    examples, heldout = fixture_examples(), fixture_examples(6, seed=1)
    straight = fresh_verifier()
    train_verifier(straight, examples, heldout, tmp_path / "a", LORA)
    with pytest.raises(Killed):
        train_verifier(fresh_verifier(), examples, heldout, tmp_path / "b", LORA, on_step=kill_at(6))
    resumed = fresh_verifier(seed=5)
    assert train_verifier(resumed, examples, heldout, tmp_path / "b", LORA)["resumed_from"] == 4
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


def test_bad_lora_settings_are_refused():
    with pytest.raises(ValueError, match="lora"):
        LoraOptions(r=-1)
    with pytest.raises(ValueError, match="lora"):
        LoraOptions(r=4, dropout=1.0)
