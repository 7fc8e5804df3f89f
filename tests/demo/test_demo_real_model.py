"""A miniature of `pav demo --preset smollm2` through the real CLI: a chat model given as a GGUF file,
DeepMind's arithmetic as the task, every stage on tiny budgets (sft → labels → PQV and ORM → search →
ORM-RL vs PAV-RL → report). The model is a tiny random Llama with a BPE tokenizer and a chat template
that the test writes as GGUF itself, so nothing is downloaded; the numbers exercise the code only."""

import json
import os
import subprocess
import sys

import pytest

from tests.policies.test_gguf import tiny_llama, write_gguf

TINY = ["sft.steps=2", "sft.batch_size=2", "sft.eval_problems=4", "sft.eval_samples=1",
        "label.problems=8", "label.shard_size=4", "label.n_mc=2", "heldout_fraction=0.5",
        "verifier.steps=2", "verifier.eval_every=1", "verifier.checkpoint_every=1",
        "orm_verifier.steps=2", "orm_verifier.eval_every=1", "orm_verifier.checkpoint_every=1",
        "search.problems=4", "search.val_problems=2", "search.ns=[2]", "search.alpha_grid=[0.0,0.5]",
        "search.alpha_width=2", "rl.seeds=[0]", "rl.rl.iterations=2", "rl.rl.eval_every=1", "rl.rl.eval_problems=4",
        "rl.rl.problems_per_iter=2", "rl.rl.samples_per_problem=2", "rl.rl.final_samples=2",
        "rl.rl.checkpoint_every=1", "workers=2"]


@pytest.mark.slow
def test_the_smollm2_preset_runs_end_to_end_on_a_gguf_chat_model(tmp_path):
    model, tok = tiny_llama()
    gguf = write_gguf(model, tok, tmp_path / "tiny-llama.F32.gguf")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAV_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    sets = [a for s in [f"sft.init={gguf}", *TINY] for a in ("--set", s)]
    res = subprocess.run([sys.executable, "-m", "pav.cli", "demo", "--preset", "smollm2", *sets, "--quiet",
                          "--out", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    s = json.loads((run / "summary.json").read_text())
    assert [r["name"] for r in s["stages"]] == ["sft", "labels", "prover-labels", "verifiers", "pqv-eval", "search", "rl"]
    assert s["stages"][2]["result"] == "rl_prover=policy"  # no expert for this task: A^μ comes from the PQV
    assert s["labels"]["rollouts"] > 0 and s["labels"]["by_kind_base"] == {}  # DeepMind's checker names no step kinds
    assert set(s["verifiers"]) == {"pqv", "orm"}
    assert set(s["rl"]["rewards"]) == {"orm", "pav"}
    assert {c["n"] for c in s["search"]["curves"]["pav_beam"]} == {2}
    md = (run / "report.md").read_text()
    assert "deepmind:arithmetic/add_sub_multiple:easy" in md  # the task by its own name
    assert "tiny-llama.F32.gguf" in md  # the report names the starting model
    assert "step kind" not in md  # no step-kind table without a checker
    assert (run / "labels.png").stat().st_size > 10_000
