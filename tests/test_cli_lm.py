"""`pav sft` and `pav label` through the real CLI, with tiny models and the network off."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.core.io import read_parquet
from pav.core.records import StepLabel

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def pav(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600, **kw)


def pav_here(*args, cwd) -> subprocess.CompletedProcess:
    """`pav <args>` through the CLI app in this process, from ``cwd``: for the runs after a command's first
    end-to-end run here (a fresh interpreter spends ~5 s importing torch). Read as `pav`'s result."""
    back = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(back)
    crash = "" if res.exception is None or isinstance(res.exception, SystemExit) else repr(res.exception)
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr + crash)


@pytest.fixture(scope="module")
def sft_run(sft_quick):
    return sft_quick


def test_sft_writes_a_loadable_policy_and_reports_the_gate(sft_run):
    run, res = sft_run
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["heldout"]) >= {"pass@1", "pass@8", "step_mix", "tokens_generated"}
    assert summary["heldout"]["pass@1"] > 0  # the quick preset's easy task is learned in its 400 steps
    assert summary["gate"]["passed"] is False and summary["gate"]["reasons"]  # pass@64 needs 64 samples a problem
    assert "QUALITY GATE MISSED" in res.stderr
    from pav.policies.hf import load_causal_lm

    model, tok = load_causal_lm(str(run / "policy"))  # offline, from the directory alone
    assert tok("3+4=7\n")["input_ids"] and model.config.n_layer == 2
    assert (run / "metrics.jsonl").read_text().count("sft/loss") >= 1


def test_label_cli_writes_shards_with_counts(label_quick):
    out, res = label_quick  # `pav label --quick` on the quick SFT policy (conftest)
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
    whole = pav_here(*args, "--out", "whole", cwd=tmp_path)  # the reference, in this process
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


def test_train_verifier_then_score_through_the_cli(verifiers, tmp_path):
    labels, pqv = verifiers / "labels", verifiers / "pqv"  # `pav train-verifier --quick` on the quick label run
    summary = json.loads((pqv / "summary.json").read_text())
    assert summary["view"] == "pqv" and summary["train_prefixes"] > 0 and (pqv / "verifier").is_dir()
    sols = sorted((labels / "solutions").glob("*.jsonl"))[0]
    res = pav("eval-verifier", "--set", f"labels={labels}", "--set", f"verifier={pqv}", "--set", "heldout_fraction=0.5",
              "--out", "quality", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    quality = json.loads((tmp_path / "quality" / "summary.json").read_text())
    assert quality["prefixes"] > 0 and quality["mse"] >= 0 and (tmp_path / "quality" / "verifier_quality.png").is_file()
    res = pav("score", "--set", f"solutions={sols}", "--set", f"problems={labels / 'problems.jsonl'}", "--set",
              f"verifier={pqv}", "--set", "alpha=0.5", "--out", "scores", cwd=tmp_path)
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


@pytest.fixture(scope="module")
def verifiers(sft_run, label_quick, tmp_path_factory):
    """The quick label run (linked as labels/) and a PQV and an ORM trained on it, next to the quick SFT policy."""
    run, _ = sft_run
    root = tmp_path_factory.mktemp("verifiers")
    (root / "labels").symlink_to(label_quick[0])
    for view in ("pqv", "orm"):
        res = pav("train-verifier", "--quick", "--quiet", "--set", "labels=labels", "--set", f"backbone={run}",
                  "--set", f"view={view}", "--out", view, cwd=root)
        assert res.returncode == 0, res.stderr
    return root


def test_expert_prover_labels_and_a_verifiers_error_against_their_exact_values(sft_run, verifiers, tmp_path):
    run, _ = sft_run
    res = pav_here("label", "--quick", "--quiet", "--set", f"policy={run}", "--set", "prover=expert", "--out", "expert",
                   cwd=tmp_path)  # the fixture's seed solutions, rolled out by the task's noisy expert
    assert res.returncode == 0, res.stderr

    def read(d):
        return [lab for p in sorted((d / "labels").glob("*.parquet")) for lab in read_parquet(p, StepLabel)]

    by_policy, by_expert = read(verifiers / "labels"), read(tmp_path / "expert")
    assert [(b.solution_id, b.prefix_len) for b in by_expert] == [(a.solution_id, a.prefix_len) for a in by_policy]
    assert all(b.prover_id.startswith("modreach-expert(") and b.policy_id == a.policy_id
               for a, b in zip(by_policy, by_expert))
    seeds = [sorted((d / "solutions").glob("*.jsonl")) for d in (verifiers / "labels", tmp_path / "expert")]
    assert seeds[0] and [p.read_text() for p in seeds[0]] == [p.read_text() for p in seeds[1]]
    res = pav_here("eval-verifier", "--set", "labels=expert", "--set", f"verifier={verifiers / 'pqv'}", "--set",
                   "heldout_fraction=0.5", "--out", "quality", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    exact = json.loads((tmp_path / "quality" / "summary.json").read_text())["exact"]
    assert exact["prefixes"] > 0 and exact["steps"] > 0 and 0 <= exact["rmse_value"] <= 1
    assert "against the exact values" in (tmp_path / "quality" / "report.md").read_text()


def test_search_cli_compares_every_method_and_resumes(sft_run, verifiers, tmp_path):
    run, _ = sft_run
    args = ["search", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
            "--set", f"orm={verifiers / 'orm'}", "--out", "search"]
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
    again = pav_here(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["curves"] == summary["curves"]


def test_search_with_alpha_zero_reuses_the_pqv_beam_runs(sft_run, verifiers, tmp_path):
    run, _ = sft_run
    res = pav("search", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
              "--set", "alpha=0", "--set", "prover_ks=", "--out", "search", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "search"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["curves"]["pav_beam"] == summary["curves"]["pqv_beam"]
    assert not list((out / "jobs").glob("pav_beam*"))  # nothing searched twice
    for n in (2, 4):
        assert (out / "results" / f"pav_beam_N{n}_a0.jsonl").read_text() == \
            (out / "results" / f"pqv_beam_N{n}.jsonl").read_text()
    res = pav_here("search", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
                   "--set", "alpha=1", "--set", "prover_ks=", "--set", "prover=expert", "--set", "ns=2",
                   "--out", "expert", cwd=tmp_path)  # A^μ exact from the task's expert, Q̂^π still the PQV's
    assert res.returncode == 0, res.stderr
    expert = json.loads((tmp_path / "expert" / "summary.json").read_text())
    assert expert["prover"] == "expert" and expert["curves"]["pqv_beam"][0] == summary["curves"]["pqv_beam"][0]
    assert "exact A^μ of the task's expert" in (tmp_path / "expert" / "report.md").read_text()
    res = pav_here("search", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
                   "--set", "alpha=1", "--set", "prover_ks=", "--set", f"prover={verifiers / 'orm'}", "--set", "ns=2",
                   "--out", "prover-verifier", cwd=tmp_path)  # A^μ from another verifier's values (here the ORM's)
    assert res.returncode == 0, res.stderr
    other = json.loads((tmp_path / "prover-verifier" / "summary.json").read_text())
    assert other["curves"]["pqv_beam"][0] == summary["curves"]["pqv_beam"][0]
    assert other["curves"]["pav_beam"][0]["scored"] > other["curves"]["pqv_beam"][0]["scored"]  # two models read
    assert f"A^μ from the verifier {verifiers / 'orm'}" in (tmp_path / "prover-verifier" / "report.md").read_text()


def test_search_on_ray_gives_the_local_results(sft_run, verifiers, tmp_path):
    pytest.importorskip("ray")
    run, _ = sft_run
    args = ["search", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
            "--set", "alpha=0.5", "--set", "prover_ks=", "--set", "ns=2", "--set", "problems=4", "--set", "workers=2"]
    for out, extra in (("local", []), ("ray", ["--executor", "ray"])):
        res = pav(*args, *extra, "--out", out, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    local, ray = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "ray"))
    assert ray["curves"] == local["curves"]
    for f in sorted((tmp_path / "local" / "results").iterdir()):
        assert (tmp_path / "ray" / "results" / f.name).read_text() == f.read_text(), f.name


def test_rl_cli_trains_evaluates_and_checkpoints(sft_run, verifiers, tmp_path):
    run, _ = sft_run
    args = ["rl", "--quick", "--quiet", "--set", f"policy={run}", "--set", f"verifier={verifiers / 'pqv'}",
            "--out", "rl"]
    res = pav(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "rl"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"] == "pav" and summary["samples"] == 16 and set(summary["final"]) >= {"pass@1", "pass@4"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "rl/heldout_accuracy" in rows[-1]
    assert (out / "policy" / "model.safetensors").is_file() and len(list((out / "checkpoints").iterdir())) == 2
    assert "rl pav: held-out accuracy" in res.stderr
    res = pav_here("rl", "--quick", "--set", f"policy={run}", "--out", "no-verifier", cwd=tmp_path)  # refusals
    assert res.returncode == 2 and "verifier" in res.stderr
    wrong = tmp_path / "all-wrong"  # the quick label run with every seed solution graded wrong
    shutil.copytree(verifiers / "labels", wrong)
    for shard in (wrong / "solutions").glob("*.jsonl"):
        rows = [{**json.loads(line), "outcome": 0.0} for line in shard.read_text().splitlines()]
        shard.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = pav_here("rl", "--quick", "--set", f"policy={run}", "--set", "reward=orm", "--set", f"rft_labels={wrong}",
                   "--out", "no-correct", cwd=tmp_path)
    assert res.returncode == 2 and "no correct seed solution" in res.stderr


def test_rl_takes_a_prover_verifiers_terms_and_needs_no_pqv_for_them(verifiers):
    from pav.rl.stage import RLConfig, check_verifiers, step_scorer
    from pav.tasks.modreach import ModReach
    from pav.verifier.scorer import MixedScorer

    task, pqv, prover = ModReach(), str(verifiers / "pqv"), str(verifiers / "orm")  # any verifier can be μ's
    problem = task.problems(1, seed=0)[0]
    args = ([task.prompt(problem)], [task.demonstrate(problem, random.Random(0))])
    check_verifiers(RLConfig(policy="p", prover=prover))  # reward=pav reads only Q^μ and A^μ
    [alone] = step_scorer(RLConfig(policy="p", prover=prover), task).score(*args)
    assert not isinstance(step_scorer(RLConfig(policy="p", verifier=pqv, prover=prover), task), MixedScorer)
    mixed_scorer = step_scorer(RLConfig(policy="p", verifier=pqv, prover=prover, reward="pqv"), task)
    [mixed] = mixed_scorer.score(*args)
    [base] = step_scorer(RLConfig(policy="p", verifier=pqv, reward="pqv"), task).score(*args)
    assert isinstance(mixed_scorer, MixedScorer)
    np.testing.assert_array_equal(mixed.adv_prover, alone.adv_prover)
    np.testing.assert_array_equal(mixed.q_base, base.q_base)
    assert not np.array_equal(mixed.adv_prover, base.adv_prover)
    assert step_scorer(RLConfig(policy="p", prover=prover, reward="orm"), task) is None
    with pytest.raises(ValueError, match="verifier=PQV_RUN"):
        check_verifiers(RLConfig(policy="p", prover=prover, reward="pqv"))
    with pytest.raises(ValueError, match="drop"):
        check_verifiers(RLConfig(policy="p", verifier="expert", prover=prover))


def test_rl_compare_cli_reports_every_arm(sft_run, verifiers, tmp_path):
    run, _ = sft_run
    res = pav("rl-compare", "--quick", "--quiet", "--set", f"rl.policy={run}", "--set",
              f"rl.verifier={verifiers / 'pqv'}", "--out", "cmp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "cmp"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["rewards"]) == {"orm", "pav"} and summary["reference"] == "orm"
    for d in summary["rewards"].values():
        assert d["samples"] == [0, 8, 16] and len(d["final"]) == 2 and all(0 <= a <= 1 for a in d["mean"])
    [c] = summary["comparisons"]
    assert c["reward"] == "pav" and "sample_efficiency" in c and set(c["pass_at_gain"]) == {"pass@1", "pass@2", "pass@4"}
    assert {p.name for p in (out / "arms").iterdir()} == {"orm_s0", "pav_s0", "orm_s1", "pav_s1"}
    assert (out / "rl_curves.png").is_file() and "prover Bo1(π₀) through the PQV" in (out / "report.md").read_text()
    rows = {a: json.loads((out / "jobs" / f"{a}.json").read_text())["final"]["problems"] for a in ("orm_s0", "pav_s0")}
    assert len(rows["orm_s0"]) == len(rows["pav_s0"]) >= 1  # every held-out problem, the same in both arms of a seed
    assert [r["problem_id"] for r in rows["orm_s0"]] == [r["problem_id"] for r in rows["pav_s0"]]
    assert c["coverage"]["problems"] == 2 * len(rows["orm_s0"]) and "**Coverage" in (out / "report.md").read_text()
    start = json.loads((out / "jobs" / "start_s0.json").read_text())["final"]["problems"]  # the start policy, same problems
    assert [r["problem_id"] for r in start] == [r["problem_id"] for r in rows["orm_s0"]]
    assert set(summary["start"]["pass_at"]) == set(c["pass_at_gain"])
    report = (out / "report.md").read_text()  # no rl.rft_labels: RL starts from the sft run itself
    assert summary["rft"] is False and "| start policy, before RL |" in report and "(RFT)" not in report
