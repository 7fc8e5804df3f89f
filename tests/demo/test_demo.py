"""`pav demo --quick` through the real CLI: the report's files, the summary's keys and ranges, caching."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from pav.demo.pipeline import STAGES

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def pav(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    res = pav("demo", "--quick", "--out", "run", cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, res


def _in_unit(x):
    return x is None or (0.0 <= x <= 1.0)


def test_demo_writes_the_report_with_every_figure(demo):
    root, res = demo
    run = root / "run"
    for name in ("report.md", "report.html", "summary.json", "config.toml", "demo_main.png", "labels.png", "COMPLETE"):
        assert (run / name).is_file(), name
    md = (run / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert {"demo_main.png", "labels.png", "pqv-eval/verifier_quality.png", "search/search_curves.png",
            "rl/rl_curves.png"} <= set(images)
    for img in images:
        assert (run / img).stat().st_size > 10_000, img  # a real figure, not an empty file
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(images)  # self-contained: every figure embedded
    assert ".png\"" not in html and "<table>" in html
    assert "headline" in res.stdout and "pav demo: stages" in res.stdout  # the final summary tables
    for i, st in enumerate(STAGES, start=1):
        assert f"[{i}/{len(STAGES)}] {st.title}" in res.stderr  # one header per stage


def test_demo_summary_keys_and_value_ranges(demo):
    root, _ = demo
    s = json.loads((root / "run" / "summary.json").read_text())
    assert set(s) >= {"stages", "total_seconds", "headline", "base_policy", "labels", "verifiers", "calibration",
                      "search", "rl", "settings"}
    assert [r["name"] for r in s["stages"]] == [st.name for st in STAGES]
    assert all(p["vs_zero"]["problems"] == s["search"]["val_problems"] for p in s["search"]["alpha_sweep"])
    margin = "points over α = 0, paired by problem" in (root / "run" / "report.md").read_text()
    assert margin == (s["search"]["alpha"] != 0)  # the settings line says how far the chosen α is above α = 0
    assert all(r["seconds"] > 0 and not r["cached"] for r in s["stages"])
    assert s["total_seconds"] == pytest.approx(sum(r["seconds"] for r in s["stages"]))
    names = " ".join(r["name"] for r in s["headline"])
    for key in ("compute PAV beam needs", "accuracy gain of PAV beam", "sample efficiency", "final accuracy gain"):
        assert key in names
    assert all(r["here"] and r["paper"] for r in s["headline"])
    assert _in_unit(s["base_policy"]["pass@1"]) and _in_unit(s["base_policy"]["pass@8"])
    lab = s["labels"]
    assert lab["records"] > 0 and lab["tokens_generated"] > 0
    assert sum(lab["q_base"]["hist"]) == lab["prefixes"] == lab["records"]
    assert sum(lab["adv_prover"]["hist"]) == sum(lab["adv_base"]["hist"]) <= lab["prefixes"]
    assert _in_unit(s["calibration"]["auroc_complete"]) and s["calibration"]["prefixes"] > 0
    assert s["verifiers"]["pqv"]["steps"] == s["settings"]["verifier.steps"]
    assert s["verifiers"]["orm"]["steps"] == s["settings"]["orm_verifier.steps"]
    assert s["verifiers"]["prover-pav"]["steps"] == s["settings"]["prover_verifier.steps"]
    assert s["rl"]["prover"].endswith("prover-pav")  # RL's A^μ: the learned PAV of the task's expert
    [prover_row] = [r for r in s["stages"] if r["name"] == "prover-labels"]
    assert "rollouts of modreach-expert(" in prover_row["result"]
    search = s["search"]
    assert search["ns"] == [2, 4] and search["alpha"] in (0.0, 0.5)
    for pts in search["curves"].values():
        assert [p["n"] for p in pts] == [2, 4]
        assert all(_in_unit(p["accuracy"]) and p["generated"] > 0 for p in pts)
    assert all(_in_unit(p["accuracy"]) for p in search["pass_at"])
    rl = s["rl"]
    assert set(rl["rewards"]) == {"orm", "pav"} and rl["seeds"] == [0, 1]
    for d in rl["rewards"].values():
        assert all(_in_unit(a) for a in d["mean"] + d["final"]) and d["samples"][-1] == 4 * 4
        assert math.isfinite(d["kl_final"])


def test_a_rerun_reuses_finished_stages_and_redoes_the_rest(demo):
    root, _ = demo
    run = root / "run"
    before = json.loads((run / "summary.json").read_text())
    (run / "COMPLETE").unlink()  # as if the demo had been killed during its last stage
    for p in sorted((run / "rl").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    res = pav("demo", "--quick", "--quiet", "--out", "run", cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    for st in STAGES[:-1]:
        assert f"{st.title}: finished earlier" in res.stderr
    after = json.loads((run / "summary.json").read_text())
    assert [r["cached"] for r in after["stages"]] == [True] * (len(STAGES) - 1) + [False]
    assert after["search"] == before["search"] and after["labels"] == before["labels"]
    assert after["rl"]["rewards"] == before["rl"]["rewards"]  # the same seeds give the same RL runs


def test_a_finished_demo_is_not_overwritten_silently(demo):
    root, _ = demo
    res = pav("demo", "--quick", "--quiet", "--out", "run", cwd=root)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_a_demo_killed_mid_pipeline_continues_with_the_same_command(demo, tmp_path):
    """kill -9 once the verifiers are trained, rerun: earlier stages are reused, the result is the same.
    The killed run starts from a copy of the finished demo's first three stages (SFT and both label
    runs: most of a quick demo's time), so the killed process trains the verifiers and is killed
    after them; a demo run from an empty folder is the fixture's."""
    root, _ = demo
    (tmp_path / "run").mkdir()
    for name in (".pav_run", "config.toml"):
        shutil.copy2(root / "run" / name, tmp_path / "run" / name)
    for st in STAGES[:3]:
        shutil.copytree(root / "run" / st.name, tmp_path / "run" / st.name, symlinks=True)
    cmd = [sys.executable, "-m", "pav.cli", "demo", "--quick", "--out", "run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if f"[5/{len(STAGES)}]" in line:  # the stage after the verifiers
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert any(f"[4/{len(STAGES)}] {STAGES[3].title} →" in line for line in seen)  # the killed run trained them
    assert not (tmp_path / "run" / "COMPLETE").exists()
    res = pav("demo", "--quick", "--quiet", "--out", "run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for st in STAGES[:4]:
        assert f"{st.title}: finished earlier" in res.stderr
    done = json.loads((tmp_path / "run" / "summary.json").read_text())
    first = json.loads((root / "run" / "summary.json").read_text())
    assert done["search"] == first["search"] and done["rl"]["rewards"] == first["rl"]["rewards"]


def test_device_sets_every_stage_load_device(monkeypatch, tmp_path):
    """--set device=... reaches the load section of every stage the demo runs (here: captured, not run)."""
    import dataclasses

    from pav.demo import pipeline

    seen = {}

    def capture(name):
        def run(c, *args, **kwargs):
            seen[name] = (c.rl if name == "rl-compare" else c).load.device
            return {}
        return run

    import pav.rl.compare
    import pav.rollouts.stage
    import pav.search.stage
    import pav.sft.stage
    import pav.verifier.stage

    for module, fn, name in ((pav.sft.stage, "run_sft", "sft"), (pav.rollouts.stage, "run_label", "label"),
                             (pav.verifier.stage, "run_eval_verifier", "eval"),
                             (pav.search.stage, "run_search", "search"), (pav.rl.compare, "run_rl_compare", "rl-compare")):
        monkeypatch.setattr(module, fn, capture(name))
    cfg = dataclasses.replace(pipeline.DemoConfig(), device="cuda:1")
    for stage in pipeline.STAGES:
        if stage.name != "verifiers":  # run as jobs in workers; their config comes from verifier_config
            stage.run(cfg, tmp_path, False)
    seen["pqv"] = pipeline.verifier_config(cfg, tmp_path, "pqv").load.device
    seen["prover-pav"] = pipeline.verifier_config(cfg, tmp_path, "prover-pav").load.device
    assert seen == dict.fromkeys(["sft", "label", "eval", "search", "rl-compare", "pqv", "prover-pav"], "cuda:1")
    assert pipeline.verifier_config(pipeline.DemoConfig(), tmp_path, "orm").load.device == "cpu"  # unset: the stage's own
