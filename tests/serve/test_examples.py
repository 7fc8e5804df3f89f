"""The adapter examples run as documented, offline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(name, *args):
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_trl_grpo_example():
    pytest.importorskip("trl")
    out = run("trl_grpo_with_pav_reward.py", "--steps", "2")
    assert out.count("mean pav reward") == 2


def test_verl_example():
    out = run("verl_token_rewards.py")
    assert "reward tensor (2," in out and out.count("response 1, token") == 3  # three steps, three rewards
