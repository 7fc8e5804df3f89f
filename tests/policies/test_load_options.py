"""The `load` section every LM stage shares: device, dtype and remote code reach the loaders."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pav.policies.hf import save_policy, tiny_gpt2
from pav.policies.options import LoadOptions
from pav.policies.tokenizer import BUILTIN_ALPHABET, build_char_tokenizer


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = build_char_tokenizer(BUILTIN_ALPHABET)
    path = tmp_path_factory.mktemp("policy") / "policy"
    save_policy(tiny_gpt2(len(tok), seed=0, eos_token_id=tok.eos_token_id), tok, path)
    return path


def test_options_resolve_devices_and_dtypes():
    assert LoadOptions().load_kwargs() == {"device": "cpu", "dtype": None, "trust_remote_code": False}
    assert LoadOptions(device="auto").resolved_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert LoadOptions(dtype="bfloat16", trust_remote_code=True).load_kwargs()["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="load.device"):
        LoadOptions(device=" ")


def test_a_bfloat16_policy_samples_and_a_bfloat16_verifier_scores(policy_dir, tmp_path):
    from pav.policies.load import load_policy
    from pav.verifier.model import ValueVerifier
    from pav.verifier.load import load_verifier

    policy = load_policy(str(policy_dir), 8, load=LoadOptions(dtype="bfloat16"))
    assert policy.model.dtype == torch.bfloat16 and policy.device == torch.device("cpu")
    batch = policy.sample(["0 to 8 mod 10 ops +3 max 5\n"], 3, until="step", max_steps=5, max_new_tokens=8, seed=1)
    assert len(batch.generations[0]) == 3 and batch.generated_tokens > 0

    verifier = ValueVerifier.from_policy(str(policy_dir), features="logprob", dtype="float32")
    verifier.save(tmp_path / "verifier")
    exact = load_verifier(str(tmp_path), LoadOptions())
    half = load_verifier(str(tmp_path), LoadOptions(dtype="bfloat16"))
    assert next(half.backbone.parameters()).dtype == torch.bfloat16 and half.head.weight.dtype == torch.float32
    args = (["0 to 8 mod 10 ops +3 max 5\n"], [["0+3=3", "ans 3"]])
    v32, v16 = exact.prefix_values(*args)[0], half.prefix_values(*args)[0]
    assert v16.dtype == np.float32 and np.allclose(v32, v16, atol=0.05)


def test_stage_commands_take_the_load_section(policy_dir, tmp_path):
    res = subprocess.run([sys.executable, "-m", "pav.cli", "label", "--quiet", "--set", f"policy={policy_dir}",
                          "--set", "problems=2", "--set", "n_cov=1", "--set", "n_mc=2", "--set", "load.dtype=bfloat16",
                          "--out", "labels"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "labels" / "summary.json").read_text())["records"] > 0
    assert 'dtype = "bfloat16"' in (tmp_path / "labels" / "config.toml").read_text()
    from typer.testing import CliRunner

    from pav.cli import app

    for stage in ("sft", "label", "train-verifier", "search", "rl", "score", "eval-verifier"):  # in this process
        shown = CliRunner().invoke(app, [stage, "--show-config"])
        assert shown.exit_code == 0 and "load.device" in shown.stdout and "load.dtype" in shown.stdout, stage
    bad = CliRunner().invoke(app, ["label", "--set", "load.dtype=int3", "--show-config"])
    assert bad.exit_code == 2 and "load.dtype" in bad.stderr
