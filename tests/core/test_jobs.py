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


def test_ray_executor_runs_jobs_in_order_and_commits_each_once(tmp_path):
    pytest.importorskip("ray")
    from pav.core.jobs import Executor

    jobs = [Job("a", square, 1, {"x": 3}), Job("b", square, 1, {"x": 4}, after=("a",)), Job("c", square, 1, {"x": 5})]
    out = run_jobs(jobs, tmp_path, Executor("ray", 2, "", 2), show=False)
    assert {k: v["value"] for k, v in out.items()} == {"a": 9, "b": 16, "c": 25}
    assert os.getpid() not in {v["pid"] for v in out.values()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]
    with pytest.raises(RuntimeError, match="boom"):  # a job's own error is not retried away
        run_jobs([Job("bad", fail, 1)], tmp_path, Executor("ray", 1, "", 0), show=False)


def test_executor_settings_are_checked():
    from pav.core.jobs import Executor

    with pytest.raises(ValueError, match="executor"):
        Executor("dask", 0, "", 0)
    with pytest.raises(ValueError, match=">= 0"):
        Executor("ray", -1, "", 0)


def test_with_absolute_paths_makes_only_existing_local_paths_absolute_and_keeps_links(tmp_path, monkeypatch):
    from dataclasses import dataclass, field

    from pav.core.jobs import with_absolute_paths

    @dataclass(frozen=True)
    class Inner:
        train: str = ""

    @dataclass(frozen=True)
    class Outer:
        policy: str = ""
        inner: Inner = field(default_factory=Inner)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    cfg = with_absolute_paths(Outer("runs", Inner("org/hub-model")), "policy", "inner.train")
    assert cfg == Outer(str(tmp_path / "runs"), Inner("org/hub-model"))
    (tmp_path / "sft").symlink_to(tmp_path / "runs")  # a link keeps its name (policy ids are named after it)
    assert with_absolute_paths(Outer("./sft"), "policy").policy == str(tmp_path / "sft")
