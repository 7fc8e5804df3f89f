"""sft → label → train-verifier → search through the real CLI on a GSM8K-format set, with a tiny
Qwen2-style model (BPE tokenizer trained locally, chat template) and the network off."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.rollouts.views import read_labels

GSM8K_TINY = Path(__file__).parent / "data" / "gsm8k_tiny.jsonl"

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
MATH = ["--set", "task.source=pav.tasks.math_task:make_task", "--set", f"task.options.train={GSM8K_TINY}",
        "--set", "task.options.grader_workers=1"]


def pav(*args, cwd):
    res = subprocess.run([sys.executable, "-m", "pav.cli", *args, "--quiet"], cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def pipeline(tiny_qwen, tmp_path_factory):
    root = tmp_path_factory.mktemp("math-cli")
    pav("sft", "--out", "sft", *MATH, "--set", f"init={tiny_qwen}", "--set", "steps=20", "--set", "batch_size=8",
        "--set", "eval_problems=4", "--set", "eval_samples=8", cwd=root)
    pav("label", "--out", "labels", *MATH, "--set", "policy=sft", "--set", "problems=6", "--set", "n_cov=2",
        "--set", "n_mc=2", "--set", "shard_size=3", cwd=root)
    for view in ("pqv", "orm"):  # the ORM with LoRA adapters (merged when saved); in this process (no torch import)
        lora = ["--set", "train.lora.r=4"] if view == "orm" else []
        res = CliRunner().invoke(app, ["train-verifier", "--quiet", "--out", str(root / view), "--set",
                                       f"labels={root / 'labels'}", "--set", f"backbone={root / 'sft'}", "--set",
                                       f"view={view}", "--set", "train.steps=5", *lora])
        assert res.exit_code == 0, (res.output[-3000:], res.exception)
    pav("rl", "--out", "rl", *MATH, "--set", "policy=sft",  # no RFT: the untrained tiny model solves nothing
        "--set", "verifier=pqv", "--set", "iterations=2", "--set", "problems_per_iter=2", "--set",
        "samples_per_problem=2", "--set", "eval_problems=2", "--set", "eval_samples=2", "--set", "final_samples=2",
        "--set", "eval_every=1", "--set", "checkpoint_every=1", "--set", "max_new_tokens=48", cwd=root)
    pav("search", "--out", "search", *MATH, "--set", "policy=sft", "--set", "verifier=pqv", "--set", "orm=orm",
        "--set", "problems=4", "--set", "val_problems=2", "--set", "ns=[2,4]", "--set", "alpha_grid=[0,0.5]",
        "--set", "alpha_width=2", "--set", "prover_ks=[]", "--set", "workers=0", "--set", "step_tokens=16",
        "--set", "max_new_tokens=48", cwd=root)
    return root


def test_sft_fine_tunes_the_given_model_and_saves_it_loadable_offline(pipeline):
    from pav.policies.hf import load_causal_lm

    summary = json.loads((pipeline / "sft" / "summary.json").read_text())
    assert 0 <= summary["heldout"]["pass@1"] <= 1 and summary["gate"]["passed"] is None
    model, tok = load_causal_lm(str(pipeline / "sft" / "policy"))
    assert model.config.model_type == "qwen2" and tok.chat_template


def test_label_stores_chat_prompts_and_counts(pipeline):
    problems = [json.loads(line) for line in (pipeline / "labels" / "problems.jsonl").read_text().splitlines()]
    assert len(problems) == 6
    assert all(p["meta"]["prompt"].startswith("<|im_start|>user\n" + p["question"]) for p in problems)
    labels = read_labels(pipeline / "labels")
    assert labels and all(0 <= lab.n_correct <= lab.n_rollouts for lab in labels)
    # every prefix but a complete solution's (its checked outcome: one rollout of length 0) got n_mc rollouts
    assert {lab.n_rollouts for lab in labels} <= {1, 2} and any(lab.n_rollouts == 2 for lab in labels)


def test_verifiers_and_search_ran_on_the_math_set(pipeline):
    for view in ("pqv", "orm"):
        assert (pipeline / view / "verifier" / "config.json").is_file()
    summary = json.loads((pipeline / "search" / "summary.json").read_text())
    assert summary["problems"] == 4 and set(summary["curves"]) >= {"orm", "pqv_beam", "pav_beam"}
    rows = [json.loads(line) for line in (pipeline / "search" / "results" / "pqv_beam_N2.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["outcome"] in (0.0, 1.0) for r in rows)


def test_rl_trains_the_policy_on_the_math_set(pipeline):
    from pav.core.metrics import read_metrics
    from pav.policies.hf import load_causal_lm

    summary = json.loads((pipeline / "rl" / "summary.json").read_text())
    assert summary["reward"] == "pav" and summary["samples"] == 2 * 2 * 2
    assert 0 <= summary["final"]["pass@1"] <= 1
    rows = [r for r in read_metrics(pipeline / "rl") if "rl/reward" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["rl/kl"]) for r in rows)
    model, tok = load_causal_lm(str(pipeline / "rl" / "policy"))
    assert model.config.model_type == "qwen2" and tok.chat_template


def test_an_uncached_hub_name_fails_at_once_offline(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pav.cli", "sft", "--out", "x", *MATH, "--set",
                          "init=some-org/not-a-cached-model", "--quiet"], cwd=tmp_path, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and "HF_HUB_OFFLINE" in res.stderr


def test_eval_verifier_reports_processbench_f1(pipeline):
    items = [{"id": f"pb-{i}", "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?",
              "steps": ["Tom starts with 3 apples.", f"3 + 4 = {7 + i % 2}.", f"The answer is {7 + i % 2}."],
              "label": -1 if i % 2 == 0 else 1} for i in range(6)]
    (pipeline / "pb.json").write_text(json.dumps(items))
    res = pav("eval-verifier", "--out", "pb", "--processbench", "pb.json", "--set", "verifier=pqv", cwd=pipeline)
    summary = json.loads((pipeline / "pb" / "summary.json").read_text())
    assert summary["items"] == 6 and (summary["n_erroneous"], summary["n_correct"]) == (3, 3)
    assert 0 <= summary["f1"] <= 1 and "harmonic mean" in summary["metric"]
    assert "harmonic mean" in res.stderr
    preds = [json.loads(line) for line in (pipeline / "pb" / "predictions.jsonl").read_text().splitlines()]
    assert all(-1 <= p["predicted"] < 3 and len(p["values"]) == 4 for p in preds)
