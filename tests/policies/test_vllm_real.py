"""`pav label` and `pav search` with ``--set load.backend=vllm`` through the real CLI and real vLLM (its
CPU build here), on a tiny random Llama written as a GGUF file, so the runs also go through pav's
GGUF cache (the folder vLLM reads). Runs where vLLM is installed (a venv of its own:
docs/benchmarks.md), skipped elsewhere; slow (vLLM's engine start-up, ~1.5 min on 2 cores). What it
pins: the runs complete, every label is well-formed and the counts are what the labelling job
implies, and a search starts one engine for all its jobs. vLLM's draws on a CPU carry no
per-request seed, so nothing here compares texts or labels with another run."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pav.core.labelrun import read_solutions
from pav.rollouts.views import read_labels
from tests.policies.test_gguf import tiny_llama, write_gguf

pytest.importorskip("vllm")  # only this real-engine test; the adapter's own tests use a stand-in engine

pytestmark = pytest.mark.slow

GSM8K_TINY = Path(__file__).parents[1] / "data" / "gsm8k_tiny.jsonl"
MATH = ["--set", "task.source=pav.tasks.math_task:make_task", "--set", f"task.options.train={GSM8K_TINY}",
        "--set", "task.options.grader_workers=1"]
VLLM = ["--set", "load.backend=vllm", "--set", "load.max_model_len=512"]
PROBLEMS, N_COV, N_MC = 4, 2, 3


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    model, tok = tiny_llama(seed=1, hidden_size=64, num_attention_heads=2)  # head size 32: vLLM's CPU kernels take it
    return write_gguf(model, tok, tmp_path_factory.mktemp("vllm") / "tiny-llama.F32.gguf")


def pav(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAV_CACHE": str(Path(cwd) / "pav-cache"), "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_pav_label_runs_on_real_vllm_and_writes_well_formed_labels(gguf, tmp_path):
    pav("label", "--quiet", "--out", "labels", *MATH, *VLLM, "--set", f"policy={gguf}", "--set", f"problems={PROBLEMS}",
        "--set", f"n_cov={N_COV}", "--set", f"n_mc={N_MC}", "--set", "shard_size=2", "--set", "max_new_tokens=24",
        cwd=tmp_path)
    run = tmp_path / "labels"
    summary = json.loads((run / "summary.json").read_text())
    assert tomllib.loads((run / "config.toml").read_text())["load"]["backend"] == "vllm"
    solutions = read_solutions(run)
    labels = read_labels(run)
    assert len(solutions) == PROBLEMS * N_COV
    # strategy=all: every prefix of a seed solution gets N_MC rollouts, the complete one its checked outcome
    assert len(labels) == summary["records"] == sum(len(s.steps) + 1 for s in solutions)
    for lab in labels:
        assert 0 <= lab.n_correct <= lab.n_rollouts and lab.n_rollouts in (1, N_MC)
        assert lab.policy_id == lab.prover_id == summary["policy_id"]
    rollouts = [lab for lab in labels if lab.n_rollouts == N_MC]
    assert len(rollouts) * N_MC == summary["rollouts"]
    assert all(0 < lab.tokens_generated <= N_MC * 24 for lab in rollouts)  # each rollout within its token budget
    assert summary["tokens_generated"] >= sum(lab.tokens_generated for lab in rollouts)


def test_pav_search_runs_on_real_vllm_with_one_engine_for_all_its_jobs(gguf, tmp_path):
    pav("label", "--quiet", "--out", "labels", *MATH, "--set", f"policy={gguf}", "--set", "problems=4",  # transformers
        "--set", "n_cov=2", "--set", "n_mc=2", "--set", "max_new_tokens=24", cwd=tmp_path)
    pav("train-verifier", "--quiet", "--out", "pqv", "--set", "labels=labels", "--set", f"backbone={gguf}",
        "--set", "train.steps=3", cwd=tmp_path)
    res = pav("search", "--out", "search", *MATH, *VLLM, "--set", f"policy={gguf}", "--set", "verifier=pqv",
              "--set", "problems=4", "--set", "val_problems=2", "--set", "ns=[2,4]", "--set", "alpha_grid=[0,0.5]",
              "--set", "alpha_width=2", "--set", "prover_ks=[]", "--set", "workers=0", "--set", "step_tokens=16",
              "--set", "max_new_tokens=48", cwd=tmp_path)
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    assert summary["stage"] == "search" and summary["curves"]
    assert tomllib.loads((tmp_path / "search" / "config.toml").read_text())["load"]["backend"] == "vllm"
    assert (res.stdout + res.stderr).count("Initializing a V1 LLM engine") == 1  # every job reused the one engine
