"""`pav sft` and `pav label` through the real CLI, with tiny models and the network off."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pav.core.io import read_parquet
from pav.core.records import StepLabel

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def pav(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    res = pav("sft", "--quick", "--quiet", "--out", "run", cwd=root)
    assert res.returncode == 0, res.stderr
    return root / "run", res


def test_sft_writes_a_loadable_policy_and_reports_the_gate(sft_run):
    run, res = sft_run
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["heldout"]) >= {"pass@1", "pass@8", "step_mix", "tokens_generated"}
    assert summary["gate"]["passed"] is False and summary["gate"]["reasons"]  # 20 steps: untrained
    assert "QUALITY GATE MISSED" in res.stderr
    from pav.policies.hf import load_causal_lm

    model, tok = load_causal_lm(str(run / "policy"))  # offline, from the directory alone
    assert tok("3+4=7\n")["input_ids"] and model.config.n_layer == 2
    assert (run / "metrics.jsonl").read_text().count("sft/loss") >= 1


def test_label_cli_writes_shards_with_counts(sft_run, tmp_path):
    run, _ = sft_run
    res = pav("label", "--quick", "--quiet", "--set", f"policy={run}", "--out", "labels", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "labels"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"] == 2 and summary["records"] > 0 and summary["tokens_generated"] > 0
    labels = [lab for p in sorted((out / "labels").glob("*.parquet")) for lab in read_parquet(p, StepLabel)]
    assert len(labels) == summary["records"]
    assert all(lab.policy_id.startswith("run@") and lab.prover_id == lab.policy_id for lab in labels)
    assert "label:" in res.stderr and "mean |Â|" in res.stderr  # the one-line summary


def test_label_without_policy_is_a_clear_error(tmp_path):
    res = pav("label", "--quick", cwd=tmp_path)
    assert res.returncode == 2 and "policy" in res.stderr


def test_kill_9_and_resume_gives_identical_shards(sft_run, tmp_path):
    run, _ = sft_run
    args = ["label", "--quiet", "--set", f"policy={run}", "--set", "problems=24", "--set", "shard_size=2",
            "--set", "n_cov=2", "--set", "n_mc=4"]
    whole = pav(*args, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen([sys.executable, "-m", "pav.cli", *args, "--out", "killed"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "labels"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(shards.glob("*.parquet")))
    assert 3 <= done < 12, "the kill must land mid-run"
    again = pav(*args, "--out", "killed", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for sub in ("labels", "solutions"):
        a = sorted((tmp_path / "whole" / sub).iterdir())
        b = sorted((tmp_path / "killed" / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b]
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b)), sub
        assert not [p for p in (tmp_path / "killed" / sub).iterdir() if p.name.startswith(".")]


def test_train_verifier_then_score_through_the_cli(sft_run, tmp_path):
    run, _ = sft_run
    assert pav("label", "--quick", "--quiet", "--set", f"policy={run}", "--out", "labels", cwd=tmp_path).returncode == 0
    res = pav("train-verifier", "--quick", "--quiet", "--set", "labels=labels", "--set", f"backbone={run}",
              "--out", "pqv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "pqv" / "summary.json").read_text())
    assert summary["view"] == "pqv" and summary["train_prefixes"] > 0 and (tmp_path / "pqv" / "verifier").is_dir()
    sols = sorted((tmp_path / "labels" / "solutions").glob("*.jsonl"))[0]
    res = pav("eval-verifier", "--set", "labels=labels", "--set", "verifier=pqv", "--set", "heldout_fraction=0.5",
              "--out", "quality", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    quality = json.loads((tmp_path / "quality" / "summary.json").read_text())
    assert quality["prefixes"] > 0 and quality["mse"] >= 0 and (tmp_path / "quality" / "verifier_quality.png").is_file()
    res = pav("score", "--set", f"solutions={sols}", "--set", "problems=labels/problems.jsonl", "--set",
              "verifier=pqv", "--set", "alpha=0.5", "--out", "scores", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "scores" / "scores.jsonl").read_text().splitlines()]
    solutions = [json.loads(line) for line in sols.read_text().splitlines()]
    assert [r["solution_id"] for r in rows] == [s["solution_id"] for s in solutions]
    for r, s in zip(rows, solutions):
        assert len(r["q_base"]) == len(r["adv_prover"]) == len(s["steps"])
        finite = [q == q for q in r["q_base"]]  # NaN: past the verifier's window (untrained policy rambles)
        assert finite == sorted(finite, reverse=True)  # only a tail can be cut, never a middle step
        for q, a, e, ok in zip(r["q_base"], r["adv_prover"], r["effective_reward"], finite):
            assert not ok or e == pytest.approx(q + 0.5 * a)


def test_search_cli_compares_every_method_and_resumes(sft_run, tmp_path):
    run, _ = sft_run
    assert pav("label", "--quick", "--quiet", "--set", f"policy={run}", "--out", "labels", cwd=tmp_path).returncode == 0
    for view in ("pqv", "orm"):
        res = pav("train-verifier", "--quick", "--quiet", "--set", "labels=labels", "--set", f"backbone={run}",
                  "--set", f"view={view}", "--out", view, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    args = ["search", "--quick", "--quiet", "--set", f"policy={run}", "--set", "verifier=pqv", "--set", "orm=orm",
            "--out", "search"]
    res = pav(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "search"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["curves"]) == {"orm", "pav_as_orm", "majority", "weighted_majority", "pqv_beam", "pav_beam"}
    for points in summary["curves"].values():
        assert [p["n"] for p in points] == [2, 4]
        assert all(0 <= p["accuracy"] <= 1 and p["generated"] > 0 for p in points)
    assert summary["alpha"] in (0.0, 0.5) and [s["alpha"] for s in summary["alpha_sweep"]] == [0.0, 0.5]
    assert set(summary["prover_sweep"]) == {"1", "4"}
    assert all(p["accuracy"] <= 1 for p in summary["pass_at"])
    assert {"compute_efficiency", "mean_gain", "gains_at_equal_compute"} <= set(summary["headline"])
    for name in ("search_curves.png", "search_sweeps.png", "report.md", "results/best_of_n.jsonl"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "results" / "pav_beam_N2_a{:g}.jsonl".format(summary["alpha"]))
            .read_text().splitlines()]
    assert len(rows) == 6 and all(r["generated"] > 0 and r["samples"] >= 6 for r in rows)
    # a finished run is refused; an unfinished one reuses its finished jobs
    assert pav(*args, cwd=tmp_path).returncode == 2
    (out / "COMPLETE").unlink()
    (out / "jobs" / "pqv_beam_N4.json").unlink()
    again = pav(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["curves"] == summary["curves"]
