"""Run directories: refuse finished runs, overwrite cleanly, reuse unfinished ones."""

import json
import logging
import re

import pytest

from pav.core.rundir import RunExistsError, is_complete, mark_complete, prepare_run_dir
from pav.rollouts.export import ExportSummary

SUMMARY = ExportSummary(format="trl-stepwise", rows=3, steps=7, solutions=3, mean_label=None, file="x.jsonl")


def test_default_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = prepare_run_dir(None, "label")
    assert run_dir.parent.as_posix() == "runs"
    assert re.fullmatch(r"label-\d{8}-\d{6}", run_dir.name)
    assert run_dir.is_dir() and not is_complete(run_dir)
    second = prepare_run_dir(None, "label")  # same second (or not): never the same folder
    assert second != run_dir and second.is_dir()


def test_mark_complete_writes_summary_then_marker(tmp_path):
    run_dir = prepare_run_dir(tmp_path / "export", "export")
    mark_complete(run_dir, SUMMARY)
    assert is_complete(run_dir)
    assert json.loads((run_dir / "summary.json").read_text()) == {
        "schema_version": 2, "stage": "export", "format": "trl-stepwise", "rows": 3, "steps": 7, "solutions": 3,
        "mean_label": None, "file": "x.jsonl"}
    assert sorted(p.name for p in run_dir.iterdir()) == [".pav_run", "COMPLETE", "summary.json"]


def test_finished_run_is_refused(tmp_path):
    run_dir = prepare_run_dir(tmp_path / "run", "label")
    mark_complete(run_dir, None)
    with pytest.raises(RunExistsError) as info:
        prepare_run_dir(run_dir, "label")
    assert str(info.value) == (f"{run_dir} holds a finished run; pass --overwrite to replace it "
                               f"or choose another --out")
    assert is_complete(run_dir)


def test_overwrite_clears_everything(tmp_path, caplog):
    run_dir = prepare_run_dir(tmp_path / "run", "label")
    (run_dir / "old.jsonl").write_text("stale")
    (run_dir / "ckpt").mkdir()
    (run_dir / "ckpt" / "w.bin").write_text("stale")
    mark_complete(run_dir)
    with caplog.at_level(logging.WARNING, logger="pav.core.rundir"):
        again = prepare_run_dir(run_dir, "label", overwrite=True)
    assert again == run_dir and not is_complete(run_dir)
    assert [p.name for p in run_dir.iterdir()] == [".pav_run"]
    assert "deleting the previous contents" in caplog.text


def test_unfinished_run_is_reused_with_warning(tmp_path, caplog):
    run_dir = prepare_run_dir(tmp_path / "run", "label")
    (run_dir / "partial.jsonl").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="pav.core.rundir"):
        assert prepare_run_dir(run_dir, "label") == run_dir
    assert (run_dir / "partial.jsonl").read_text() == "kept"
    assert "reusing the unfinished run directory" in caplog.text


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(RunExistsError, match="refusing to delete the contents"):
        prepare_run_dir(tmp_path, "label", overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_out_must_not_be_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunExistsError, match="is a file"):
        prepare_run_dir(tmp_path / "f", "label")
    assert issubclass(RunExistsError, ValueError)


def test_empty_existing_folder_is_used_silently(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert prepare_run_dir(tmp_path, "label", overwrite=True) == tmp_path
    assert caplog.text == ""


def test_start_run_records_config_and_refuses_a_different_one(tmp_path):
    from dataclasses import dataclass

    from pav.core.config import knob, load_config
    from pav.core.rundir import start_run

    @dataclass(frozen=True)
    class Cfg:
        steps: int = knob(3, "steps")

    run = start_run(tmp_path / "r", "demo", Cfg())
    assert load_config(Cfg, run / "config.toml") == Cfg()
    assert start_run(tmp_path / "r", "demo", Cfg()) == run  # same config: the unfinished run continues
    # a run that failed before writing anything but its config (a missing input) takes the corrected one
    assert start_run(tmp_path / "r", "demo", Cfg(steps=5)) == run
    assert load_config(Cfg, run / "config.toml") == Cfg(steps=5)
    (run / "metrics.jsonl").write_text("{}\n")  # it has started: another config is refused
    with pytest.raises(RunExistsError, match="different config"):
        start_run(tmp_path / "r", "demo", Cfg(steps=4))
    assert start_run(tmp_path / "r", "demo", Cfg(steps=4), overwrite=True) == run
