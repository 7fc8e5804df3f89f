"""Tiny end-to-end runs of the real `pav` CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PAV = [sys.executable, "-m", "pav.cli"]


def pav(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*PAV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    res = pav("didactic", "--quick", "--quiet", "--out", "run", cwd=root)
    assert res.returncode == 0, res.stderr
    return root, root / "run", res


def test_quick_run_writes_the_report_files(quick_run):
    _, run, _ = quick_run
    for name in ("COMPLETE", "config.toml", "summary.json", "report.md", "fig3a_accuracy.png",
                 "fig3b_prover_strength.png", "fig3c_pass_at_n.png", "remark_3_1_bok.png",
                 "q_base_estimators.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"fig3a", "fig3b", "fig3c", "remark_3_1", "checks", "wall_seconds", "q_base"}
    assert set(summary["fig3b"]) == {"adam", "sgd"}
    assert {"sft", "effective@40", "outcome@40"} <= set(summary["fig3c"])
    for curve in summary["fig3c"].values():
        assert all(0.0 <= p <= 1.0 for p in curve["pass_at_n_median"])
        assert curve["pass_at_n_median"] == sorted(curve["pass_at_n_median"])  # Pass@N grows with N
    assert "| figure | measured | target | paper | pass |" in (run / "report.md").read_text()


def test_finished_run_is_not_overwritten(quick_run):
    root, run, _ = quick_run
    before = (run / "summary.json").read_text()
    res = pav("didactic", "--quick", "--quiet", "--out", "run", cwd=root)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert (run / "summary.json").read_text() == before


def test_unknown_setting_is_rejected_with_a_suggestion(tmp_path):
    res = pav("didactic", "--quick", "--set", "rl.iteratons=5", cwd=tmp_path)
    assert res.returncode == 2
    assert "rl.iteratons" in res.stderr and "rl.iterations" in res.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_show_config_lists_settings_with_help(tmp_path):
    res = pav("didactic", "--show-config", cwd=tmp_path)
    assert res.returncode == 0
    assert "rl.iterations" in res.stdout and "sweep.gammas" in res.stdout


def test_interrupted_run_reuses_finished_jobs(quick_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quick_run[1], run)  # a copy of the finished quick run
    (run / "COMPLETE").unlink()  # as if killed after the jobs but before the report
    (run / "jobs" / "remark.json").unlink()
    stamp = (run / "jobs" / "fig3a.json").stat().st_mtime_ns
    again = pav("didactic", "--quick", "--quiet", "--out", "run", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (run / "jobs" / "fig3a.json").stat().st_mtime_ns == stamp  # reused, not recomputed
    assert (run / "jobs" / "remark.json").is_file() and (run / "COMPLETE").is_file()
    changed = pav("didactic", "--quick", "--quiet", "--out", "run", "--set", "q_base.seeds=0", "--set",
                  "rl.iterations=50", "--overwrite", cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr


def test_version():
    res = subprocess.run([*PAV, "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("pav ")


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def test_same_seed_gives_identical_summaries(quick_run, tmp_path):
    _, run, _ = quick_run
    res = pav("didactic", "--quick", "--quiet", "--out", "again", "--set", "workers=2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    first = json.loads((run / "summary.json").read_text())
    second = json.loads((tmp_path / "again" / "summary.json").read_text())
    # workers=2 spreads the jobs over processes: results must not depend on it
    assert _without_timings(first) == _without_timings(second)
