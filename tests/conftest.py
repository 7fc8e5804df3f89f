"""Shared fixtures: a tiny randomly initialised Qwen2-style model with a locally trained BPE tokenizer,
one `pav sft --quick` run that every test reading a built-in-task policy shares (read-only), and one
`pav label --quick` run on it for the tests that train verifiers on quick labels (read-only)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).parent / "data"
GSM8K_TINY = DATA / "gsm8k_tiny.jsonl"


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in GSM8K_TINY.read_text().splitlines()]
    corpus = [r["question"] + "\n" + r["answer"] + "\nThe answer is 7." for r in rows]
    from pav.policies.tiny import tiny_qwen2

    return tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen") / "model", corpus)


@pytest.fixture(scope="session")
def sft_quick(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`pav sft --quick` through the real CLI, run once per session: (run directory, the finished process).
    Tests only read it; one that writes into a policy folder must copy it first."""
    root = tmp_path_factory.mktemp("sft-quick")
    res = subprocess.run([sys.executable, "-m", "pav.cli", "sft", "--quick", "--quiet", "--out", "run"], cwd=root,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "run", res


@pytest.fixture(scope="session")
def label_quick(sft_quick, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`pav label --quick` on the `sft_quick` policy through the real CLI, run once per session: (run
    directory, the finished process). Tests only read it; one that changes labels must copy them first."""
    root = tmp_path_factory.mktemp("label-quick")
    res = subprocess.run([sys.executable, "-m", "pav.cli", "label", "--quick", "--quiet", "--set",
                          f"policy={sft_quick[0]}", "--out", "labels"], cwd=root,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "labels", res
