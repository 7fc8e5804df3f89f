"""Verifier training: every parameter moves, the loss falls, kill-and-resume is exact, and broken
checkpoints are skipped with their reason (or refused when none is usable)."""

import json
import logging
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pav.core.metrics import read_metrics
from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.verifier.data import VerifierExample
from pav.verifier.model import ValueVerifier
from pav.verifier.checkpoint import CheckpointError, _sha256
from pav.verifier.train import (
    VerifierTrainConfig,
    evaluate,
    fit_examples,
    soft_bce,
    train_verifier,
)

torch.set_num_threads(1)
TOK = build_char_tokenizer()


def fixture_examples(n=32, seed=0):
    """Hand-made labels: Q̂ of a prefix is 0.9 after an "up" step, 0.1 after "dn", 0.5 for the question."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        steps = tuple(str(rng.choice(["up", "dn"])) for _ in range(int(rng.integers(1, 6))))
        targets = (0.5, *[0.9 if s == "up" else 0.1 for s in steps])
        k = len(targets)
        out.append(VerifierExample(f"p{i}", f"p{i}/s0", f"q{i % 7}\n", steps, tuple(range(k)), targets,
                                   (1.0,) * k, (16,) * k))
    return out


def fresh_verifier(seed=0):
    model = tiny_gpt2(len(TOK), n_layer=1, n_embd=32, n_head=2, n_positions=64, seed=seed)
    return ValueVerifier(model, TOK, "\n", seed=seed)


CFG = VerifierTrainConfig(steps=12, batch_size=4, lr=3e-3, warmup=2, eval_every=5, checkpoint_every=4,
                          keep_checkpoints=5, seed=0)


def test_soft_bce_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    targets = torch.tensor([[0.25, 1.0], [0.5, 0.0]])
    weights = torch.tensor([[1.0, 2.0], [1.0, 0.0]])  # the last entry is padding
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    bce = lambda z, t: -(t * np.log(sig(z)) + (1 - t) * np.log(1 - sig(z)))  # noqa: E731
    expected = (bce(0.0, 0.25) + 2 * bce(2.0, 1.0) + bce(1.0, 0.5)) / 4
    assert soft_bce(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)


def test_every_trainable_parameter_changes_after_one_step(tmp_path):
    verifier = fresh_verifier()
    before = {n: p.detach().clone() for n, p in verifier.named_parameters()}
    cfg = dataclasses.replace(CFG, steps=1, warmup=0, lr=1e-2, weight_decay=0.0, grad_clip=1e9)
    train_verifier(verifier, fixture_examples(), [], tmp_path, cfg)
    unchanged = [n for n, p in verifier.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged


def test_loss_goes_down_on_a_tiny_fixture(tmp_path):
    examples = fixture_examples(48)
    verifier = fresh_verifier()
    rows, _ = fit_examples(verifier, examples)
    before = evaluate(verifier, rows, 64)["verifier/heldout_mse"]
    cfg = dataclasses.replace(CFG, steps=60, batch_size=8, warmup=5, checkpoint_every=60, eval_every=60)
    summary = train_verifier(verifier, examples, examples[:8], tmp_path, cfg)
    after = evaluate(verifier, rows, 64)["verifier/heldout_mse"]
    losses = [r["verifier/loss"] for r in read_metrics(tmp_path) if "verifier/loss" in r]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert after < 0.25 * before and after < 0.02  # the best constant predictor has MSE ~0.15
    assert summary["heldout_mse"] < summary["heldout_mse_constant"]
    assert ValueVerifier.load(tmp_path / "verifier").prefix_values(["q1\n"], [["up"]])[0][1] > 0.7


class Killed(Exception):
    pass


def kill_at(step):
    def on_step(done, loss):
        if done == step:
            raise Killed
    return on_step


def test_kill_and_resume_ends_with_the_parameters_of_an_uninterrupted_run(tmp_path):
    examples, heldout = fixture_examples(), fixture_examples(6, seed=1)
    straight = fresh_verifier()
    train_verifier(straight, examples, heldout, tmp_path / "a", CFG)
    with pytest.raises(Killed):
        train_verifier(fresh_verifier(), examples, heldout, tmp_path / "b", CFG, on_step=kill_at(6))
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["step-00000004"]
    resumed = fresh_verifier(seed=5)  # a new process: the initial weights do not matter
    summary = train_verifier(resumed, examples, heldout, tmp_path / "b", CFG)
    assert summary["resumed_from"] == 4
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    metrics_a, metrics_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(metrics_a) == strip(metrics_b)  # no replayed or duplicated lines


def test_broken_checkpoints_are_skipped_with_the_reason(tmp_path, caplog):
    examples = fixture_examples()
    cfg = dataclasses.replace(CFG, steps=10, checkpoint_every=2)
    train_verifier(fresh_verifier(), examples, [], tmp_path, cfg)
    ckpt = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == [f"step-{s:08d}" for s in (2, 4, 6, 8, 10)]
    (ckpt / "step-00000010" / "COMPLETE").unlink()
    with open(ckpt / "step-00000008" / "model.safetensors", "r+b") as f:  # flip bytes in the middle
        f.seek(200)
        f.write(b"\x00\xff" * 8)
    garbage_with_valid_checksum(ckpt / "step-00000006", "optimizer.safetensors")
    wrong_shape(ckpt / "step-00000004")
    (tmp_path / "checkpoints" / ".tmp-step-00000012-x").mkdir()  # a write cut short
    resumed = fresh_verifier()
    with caplog.at_level(logging.WARNING):
        summary = train_verifier(resumed, examples, [], tmp_path, cfg)
    assert summary["resumed_from"] == 2
    text = caplog.text
    assert "step-00000010: missing COMPLETE marker" in text
    assert "step-00000008: checksum mismatch in model.safetensors" in text
    assert "step-00000006: unreadable file optimizer.safetensors" in text
    assert "step-00000004: shape mismatch: head.weight is (1, 5)" in text
    assert not (ckpt / ".tmp-step-00000012-x").exists()


def garbage_with_valid_checksum(path, name):
    (path / name).write_bytes(b"not a safetensors file")
    rewrite_marker(path)


def wrong_shape(path):
    state = load_file(path / "model.safetensors")
    state["head.weight"] = torch.zeros(1, 5)
    save_file(state, path / "model.safetensors")
    rewrite_marker(path)


def rewrite_marker(path):
    marker = json.loads((path / "COMPLETE").read_text())
    marker["files"] = {name: _sha256(path / name) for name in marker["files"]}
    (path / "COMPLETE").write_text(json.dumps(marker))


def test_all_checkpoints_broken_raises_unless_restart(tmp_path, caplog):
    examples = fixture_examples()
    cfg = dataclasses.replace(CFG, steps=4, checkpoint_every=2)
    train_verifier(fresh_verifier(), examples, [], tmp_path, cfg)
    for path in (tmp_path / "checkpoints").iterdir():
        (path / "COMPLETE").unlink()
    with pytest.raises(CheckpointError, match="none can be resumed"):
        train_verifier(fresh_verifier(), examples, [], tmp_path, cfg)
    with caplog.at_level(logging.WARNING):
        summary = train_verifier(fresh_verifier(), examples, [], tmp_path, cfg, restart=True)
    assert summary["resumed_from"] == 0 and "training from step 0" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path) if "verifier/loss" in r] == [1, 2, 3, 4]


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    examples = fixture_examples()
    train_verifier(fresh_verifier(), examples, [], tmp_path, dataclasses.replace(CFG, steps=4))
    with pytest.raises(CheckpointError, match="another training config or data"):
        train_verifier(fresh_verifier(), examples, [], tmp_path, dataclasses.replace(CFG, steps=4, lr=1e-3))
