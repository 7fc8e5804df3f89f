"""A pickle where weights are expected is refused and never unpickled; every loader reads safetensors."""

import json
import os
import pickle
import shutil

import pytest

from pav.policies.base import PolicyLoadError
from pav.policies.hf import load_causal_lm, save_policy, tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer


class Payload:
    """Unpickling this runs os.system: it creates the sentinel file."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture
def policy_dir(tmp_path):
    tok = build_char_tokenizer()
    return save_policy(tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=0), tok,
                       tmp_path / "policy")


def plant(path, sentinel):
    with open(path, "wb") as f:
        pickle.dump(Payload(sentinel), f)


def test_a_pickled_checkpoint_in_a_model_directory_is_refused(policy_dir, tmp_path):
    sentinel = tmp_path / "EXECUTED"
    (policy_dir / "model.safetensors").unlink()
    plant(policy_dir / "pytorch_model.bin", sentinel)  # the file transformers would unpickle
    with pytest.raises(PolicyLoadError):
        load_causal_lm(str(policy_dir))
    assert not sentinel.exists()


def test_a_pickle_named_like_safetensors_is_refused(policy_dir, tmp_path):
    sentinel = tmp_path / "EXECUTED"
    plant(policy_dir / "model.safetensors", sentinel)
    with pytest.raises(Exception):
        load_causal_lm(str(policy_dir))
    assert not sentinel.exists()


def test_a_pickle_in_a_verifier_checkpoint_is_skipped_never_loaded(tmp_path, caplog):
    from pav.verifier.checkpoint import CheckpointError, _sha256
    from pav.verifier.data import VerifierExample
    from pav.verifier.model import ValueVerifier
    from pav.verifier.train import VerifierTrainConfig, train_verifier

    tok = build_char_tokenizer()

    def fresh_verifier():
        return ValueVerifier(tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=0), tok, "\n")

    examples = [VerifierExample(f"p{i}", f"p{i}/s0", "q\n", ("up",), (0, 1), (0.5, 0.9), (1.0, 1.0), (4, 4))
                for i in range(4)]
    sentinel = tmp_path / "EXECUTED"
    cfg = VerifierTrainConfig(steps=4, batch_size=2, warmup=1, eval_every=2, checkpoint_every=2)
    train_verifier(fresh_verifier(), examples, [], tmp_path / "run", cfg)
    for ckpt in (tmp_path / "run" / "checkpoints").iterdir():
        for name in ("model.safetensors", "optimizer.safetensors"):
            plant(ckpt / name, sentinel)
        marker = json.loads((ckpt / "COMPLETE").read_text())  # even with checksums that match the planted files
        marker["files"] = {f: _sha256(ckpt / f) for f in marker["files"]}
        (ckpt / "COMPLETE").write_text(json.dumps(marker))
    with pytest.raises(CheckpointError, match="none can be resumed"):
        train_verifier(fresh_verifier(), examples, [], tmp_path / "run", cfg)
    assert not sentinel.exists() and "unreadable file model.safetensors" in caplog.text
    shutil.rmtree(tmp_path / "run")
