"""The out-of-tree example task (examples/arith_task), used as a user would: its folder on the
path (what `pip install -e examples/arith_task` gives), selected with task.source, run through the
real `pav` CLI with no change to pav."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.tasks.build import build_task, task_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arith_task"
TASK = ["--set", "task.source=arith_task:make_task", "--set", "task.options.n_ops=2"]


@pytest.fixture
def on_path(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_example_task_grades_its_own_demonstrations(on_path):
    task = build_task(task_config("arith_task:make_task", n_ops=3, p_slip=0.0))  # checked as every stage checks it
    problems = task.problems(20, seed=1)
    assert all(task.outcome(p, task.demonstrate(p, random.Random(0))) == 1.0 for p in problems)
    assert not {p.question for p in problems} & {p.question for p in task.problems(20, 1, "heldout")}


def test_sft_and_label_run_on_the_example_task(on_path):
    cli = CliRunner()
    brief = ["--set", "steps=40", "--set", "eval_problems=2", "--set", "eval_samples=2"]  # runs, not what it learns
    res = cli.invoke(app, ["sft", "--quick", "--quiet", "--out", "sft", *TASK, *brief])
    assert res.exit_code == 0, res.output[-2000:]
    res = cli.invoke(app, ["label", "--quick", "--quiet", "--out", "labels", *TASK, "--set", "policy=sft"])
    assert res.exit_code == 0, res.output[-2000:]
    summary = json.loads((on_path / "labels" / "summary.json").read_text())
    assert summary["rollouts"] > 0 and summary["records"] > 0
    problems = [json.loads(line) for line in (on_path / "labels" / "problems.jsonl").read_text().splitlines()]
    assert len(problems) == 6 and all(p["meta"]["prompt"] == p["question"] + "\n" for p in problems)  # the plug-in's own prompts


@pytest.mark.slow
def test_the_example_task_through_every_stage_of_the_cli(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(EXAMPLE), "OMP_NUM_THREADS": "1"}

    def pav(*args):
        res = subprocess.run([sys.executable, "-m", "pav.cli", *args, "--quiet"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]

    pav("sft", "--out", "sft", *TASK, "--set", "steps=400", "--set", "eval_problems=10", "--set", "eval_samples=4")
    pav("label", "--quick", "--out", "labels", *TASK, "--set", "policy=sft")
    pav("train-verifier", "--quick", "--out", "pqv", "--set", "labels=labels", "--set", "backbone=sft")
    pav("train-verifier", "--quick", "--out", "orm", "--set", "labels=labels", "--set", "backbone=sft",
        "--set", "view=orm")
    pav("search", "--quick", "--out", "search", *TASK, "--set", "policy=sft", "--set", "verifier=pqv",
        "--set", "orm=orm")
    pav("rl", "--quick", "--out", "rl", *TASK, "--set", "policy=sft", "--set", "verifier=pqv", "--set", "rft_steps=0")
    pav("eval-policy", "--out", "eval", *TASK, "--set", "policy=rl", "--set", "problems=10", "--set", "samples=2")
    for run in ("sft", "labels", "pqv", "orm", "search", "rl", "eval"):
        assert (tmp_path / run / "COMPLETE").is_file(), run
    sft = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert sft["heldout"]["pass@1"] > 0  # 400 steps teach the tiny GPT the example's grammar
