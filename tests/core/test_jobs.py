"""The job runner: results cached per job, dependencies respected, worker processes used."""

import json
import os

import pytest

from pav.core.jobs import Job, run_jobs


def square(progress, x):
    progress(1)
    return {"value": x * x, "pid": os.getpid()}


def fail(progress):
    raise RuntimeError("boom")


def test_runs_in_workers_and_caches_results(tmp_path):
    jobs = [Job("a", square, 1, {"x": 3}), Job("b", square, 1, {"x": 4}, after=("a",))]
    out = run_jobs(jobs, tmp_path, workers=2, show=False)
    assert out["a"]["value"] == 9 and out["b"]["value"] == 16
    assert out["a"]["pid"] != os.getpid()
    assert json.loads((tmp_path / "a.json").read_text())["value"] == 9
    (tmp_path / "b.json").unlink()
    again = run_jobs(jobs, tmp_path, workers=0, show=False)
    assert again["a"]["pid"] == out["a"]["pid"]  # cached, not rerun
    assert again["b"]["pid"] == os.getpid()  # rerun in-process


def test_failed_job_keeps_finished_ones(tmp_path):
    jobs = [Job("ok", square, 1, {"x": 2}), Job("bad", fail, 1, after=("ok",))]
    with pytest.raises(RuntimeError, match="boom"):
        run_jobs(jobs, tmp_path, workers=0, show=False)
    assert (tmp_path / "ok.json").is_file() and not (tmp_path / "bad.json").exists()


def test_rejects_duplicate_names_and_cycles(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run_jobs([Job("a", square, 1, {"x": 1}), Job("a", square, 1, {"x": 1})], tmp_path, 0, False)
    with pytest.raises(ValueError, match="dependencies"):
        run_jobs([Job("a", square, 1, {"x": 1}, after=("b",))], tmp_path, 0, False)
