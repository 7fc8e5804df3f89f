"""`accelerate launch` with two CPU processes (gloo) trains the verifier that one process trains."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
from safetensors.torch import load_file

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
TRAIN = ["--set", "labels=labels", "--set", "backbone=sft", "--set", "train.steps=12", "--set", "train.batch_size=8",
         "--set", "train.eval_every=6", "--set", "train.checkpoint_every=6", "--quiet"]


def run(cmd, cwd):
    res = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sft_quick, label_quick):
    root = tmp_path_factory.mktemp("ddp")
    pav = [sys.executable, "-m", "pav.cli"]
    (root / "sft").symlink_to(sft_quick[0])
    (root / "labels").symlink_to(label_quick[0])  # `pav label --quick` on that policy (conftest)
    run([*pav, "train-verifier", *TRAIN, "--out", "one"], root)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "pav.cli", "train-verifier",
         *TRAIN, "--out", "two"], root)
    return root


def test_two_processes_train_the_parameters_of_one(runs):
    one, two = (load_file(str(runs / r / "verifier" / "model.safetensors")) for r in ("one", "two"))
    assert one.keys() == two.keys()
    moved = load_file(str(runs / "one" / "verifier" / "model.safetensors"))["head.weight"]
    assert moved.abs().sum() > 0
    for name in one:  # the same global batches and gradients; only float summation order differs
        assert torch.allclose(one[name], two[name], atol=1e-4), name
    summaries = [json.loads((runs / r / "summary.json").read_text()) for r in ("one", "two")]
    assert [s["processes"] for s in summaries] == [1, 2]
    assert summaries[1]["final_loss"] == pytest.approx(summaries[0]["final_loss"], abs=1e-4)


def test_only_rank_zero_writes(runs):
    lines = [json.loads(line) for line in (runs / "two" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "verifier/loss" in r]
    assert steps == list(range(1, 13))  # one line per step, none from the second rank
    assert sorted(p.name for p in (runs / "two" / "checkpoints").iterdir() if not p.name.startswith(".")) == \
        ["step-00000006", "step-00000012"]
    assert (runs / "two" / "COMPLETE").is_file()
