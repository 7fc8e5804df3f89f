"""Run directories say what they are: a stage and a schema version in the run tag and summary.json,
checked when a command reads one; anything else is one line on stderr and exit 2."""

import json

import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.core.labelrun import check_label_run
from pav.core.rundir import (RUN_SCHEMA_VERSION, RunFormatError, mark_complete, prepare_run_dir, read_summary,
                             run_tag)


def _one_line_exit_2(argv: list[str], message: str) -> str:
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, (res.output, res.exception)
    errors = [line for line in res.stderr.strip().splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], res.stderr
    return errors[0]


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "old-labels"  # a label run of schema 1: the tag held the stage name alone
    old.mkdir()
    (old / ".pav_run").write_text("label\n")
    (old / "summary.json").write_text(json.dumps({"records": 3}))
    (old / "COMPLETE").write_text("x\n")
    foreign = tmp_path / "hf-dataset"  # another tool's folder
    foreign.mkdir()
    (foreign / "dataset_info.json").write_text("{}")
    sft = prepare_run_dir(tmp_path / "sft", "sft")
    mark_complete(sft, {"final_loss": 1.0})
    return tmp_path


def test_a_run_records_its_stage_and_schema_and_reads_back_its_summary(runs):
    assert run_tag(runs / "sft") == ("sft", RUN_SCHEMA_VERSION)
    record = json.loads((runs / "sft" / "summary.json").read_text())
    assert record == {"schema_version": RUN_SCHEMA_VERSION, "stage": "sft", "final_loss": 1.0}
    assert read_summary(runs / "sft", "demo") == {"final_loss": 1.0}
    with pytest.raises(RunFormatError, match="schema 1, written by another pav; this pav reads schema 2"):
        read_summary(runs / "old-labels", "demo")


def test_check_label_run_says_what_the_folder_is_and_what_was_expected(runs):
    with pytest.raises(RunFormatError, match=r"is a `pav label` run of schema 1, written by an older pav; this pav "
                                             r"reads schema 2: rerun `pav label`"):
        check_label_run(runs / "old-labels")
    with pytest.raises(RunFormatError, match=r"is not a pav run directory \(no .pav_run file\); expected a `pav "
                                             r"label` or `pav import-labels` run directory"):
        check_label_run(runs / "hf-dataset")
    with pytest.raises(RunFormatError, match="is a `pav sft` run, not a label run"):
        check_label_run(runs / "sft")


@pytest.mark.parametrize(("labels", "message"), [
    ("old-labels", "is a `pav label` run of schema 1, written by an older pav"),
    ("hf-dataset", "is not a pav run directory"),
    ("sft", "is a `pav sft` run, not a label run"),
])
def test_commands_refuse_an_older_or_foreign_run_with_one_line_and_exit_2(runs, labels, message):
    before = sorted(p.name for p in runs.iterdir())
    _one_line_exit_2(["export-labels", "--set", f"labels={labels}", "--out", "export"], message)
    _one_line_exit_2(["train-verifier", "--set", f"labels={labels}", "--set", "backbone=sft", "--out", "pqv"], message)
    assert sorted(p.name for p in runs.iterdir()) == before  # nothing half-written
