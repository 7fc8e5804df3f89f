"""Shared fixtures: a tiny randomly initialised Qwen2-style model with a locally trained BPE tokenizer."""

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests write their runs in pytest's temporary folders, so the runs root (`pav.core.rundir`) is the
# system's temporary folder; subprocesses inherit it.
os.environ.setdefault("PAV_RUNS_ROOT", tempfile.gettempdir())

DATA = Path(__file__).parent / "data"
GSM8K_TINY = DATA / "gsm8k_tiny.jsonl"


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in GSM8K_TINY.read_text().splitlines()]
    corpus = [r["question"] + "\n" + r["answer"] + "\nThe answer is 7." for r in rows]
    from pav.policies.tiny import tiny_qwen2

    return tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen") / "model", corpus)
