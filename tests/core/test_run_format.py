"""Run directories say what they are: a stage and a schema version in the run tag and summary.json,
checked when a command reads one; anything else is one line on stderr and exit 2. summary.json is a
stage's typed record, written by mark_complete and read back, checked, by read_summary."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.core.labelrun import check_label_run
from pav.core.rundir import (RUN_SCHEMA_VERSION, RunFormatError, mark_complete, prepare_run_dir, read_summary,
                             run_tag, summary_fields)
from pav.eval.policy import EvalPolicySummary
from pav.rollouts.label import LabelSummary
from pav.sft.train import SFTSummary

SFT = SFTSummary(train_seconds=2.5, final_loss=1.0, policy_dir="sft/policy", heldout={"pass@1": 0.25},
                 gate={"passed": None, "reasons": []})


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
    mark_complete(sft, SFT)
    return tmp_path


def test_a_run_records_its_stage_and_schema_and_reads_back_its_summary(runs):
    assert run_tag(runs / "sft") == ("sft", RUN_SCHEMA_VERSION)
    record = json.loads((runs / "sft" / "summary.json").read_text())
    assert record == {"schema_version": RUN_SCHEMA_VERSION, "stage": "sft", "train_seconds": 2.5, "final_loss": 1.0,
                      "policy_dir": "sft/policy", "heldout": {"pass@1": 0.25}, "gate": {"passed": None, "reasons": []}}
    assert read_summary(runs / "sft", "demo", SFTSummary) == SFT
    with pytest.raises(RunFormatError, match="schema 1, written by another pav; this pav reads schema 2"):
        read_summary(runs / "old-labels", "demo", LabelSummary)


def _rewrite(run, **changes):
    path = run / "summary.json"
    path.write_text(json.dumps({k: v for k, v in {**json.loads(path.read_text()), **changes}.items() if v != "DROP"}))


@pytest.mark.parametrize(("changes", "message"), [
    ({"stage": "label"}, "summary.json is the summary of a `pav label` run, not of a `pav sft` run"),
    ({"final_loss": "DROP"}, r"is not a `pav sft` summary of schema 2 \(no final_loss\); rerun `pav sft` \(--overwrite\)"),
    ({"final_loss": "1.0"}, r"\(final_loss is str, not float\)"),
    ({"final_loss": None}, r"\(final_loss is null, not float\)"),
    ({"heldout": [0.25]}, r"\(heldout is list, not dict\[str, Any\]\)"),
    ({"train_seconds": True}, r"\(train_seconds is bool, not float\)"),
    ({"extra": 1}, r"\(unknown key extra\)"),
])
def test_read_summary_names_the_file_what_it_is_and_what_was_expected(runs, changes, message):
    _rewrite(runs / "sft", **changes)
    with pytest.raises(RunFormatError, match=message) as info:
        read_summary(runs / "sft", "demo", SFTSummary)
    assert "\n" not in str(info.value) and str(info.value).startswith(f"demo: {runs / 'sft'}")


def test_a_record_is_written_only_into_a_run_of_its_stage(tmp_path):
    label = prepare_run_dir(tmp_path / "labels", "label")
    with pytest.raises(ValueError, match="SFTSummary is the summary of a sft run"):
        mark_complete(label, SFT)
    assert not (label / "summary.json").exists() and not (label / "COMPLETE").exists()


def test_an_int_is_a_float_and_rest_keys_stay_at_the_top_of_the_file(tmp_path):
    run = prepare_run_dir(tmp_path / "eval", "eval-policy")
    metrics = {"pass@1": 0.5, "pass@1_se": 0.1, "maj@1": 0.5, "maj@1_se": 0.1}
    summary = EvalPolicySummary(policy="p", task="t", split="heldout", problems=4, samples_per_problem=1,
                                metrics=metrics, mean_steps=3, mean_tokens=20.5, no_answer=0.0, blank_step=0.0,
                                long_step=0.0, cut_by_budget=0.25, tokens_generated=82, seconds=1.5)
    mark_complete(run, summary)
    data = json.loads((run / "summary.json").read_text())
    assert list(data)[2:11] == ["policy", "task", "split", "problems", "samples_per_problem", *metrics]
    assert "metrics" not in data and summary_fields(summary) == {k: data[k] for k in list(data)[2:]}
    back = read_summary(run, "report", EvalPolicySummary)
    assert back == summary and back.metrics == metrics and back.mean_steps == 3
    _rewrite(run, **{"pass@2": "x"})
    with pytest.raises(RunFormatError, match=r"pass@2 is str, not float"):
        read_summary(run, "report", EvalPolicySummary)


def test_every_stage_summary_is_a_frozen_record_of_one_stage_without_defaults():
    """Each record has STAGES, JSON-able annotated fields and no defaults (the stage fills every one)."""
    import typing

    from pav.demo.report import DemoSummary
    from pav.didactic.experiments import DidacticSummary
    from pav.rl.report import RLCompareSummary
    from pav.rl.train import RLSummary
    from pav.rollouts.export import ExportSummary
    from pav.rollouts.imports import ImportSummary
    from pav.search.report import SearchSummary
    from pav.verifier.processbench import ProcessBenchSummary
    from pav.verifier.quality import QualitySummary
    from pav.verifier.scorer import ScoreSummary
    from pav.verifier.train import VerifierSummary

    records = (SFTSummary, LabelSummary, ExportSummary, ImportSummary, VerifierSummary, ScoreSummary, QualitySummary,
               ProcessBenchSummary, SearchSummary, RLSummary, RLCompareSummary, EvalPolicySummary, DidacticSummary,
               DemoSummary)
    stages = [s for r in records for s in r.STAGES]
    assert len(stages) == len(set(stages))  # one record per run tag
    for record in records:
        assert record.__dataclass_params__.frozen, record
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   for f in dataclasses.fields(record)), record
        typing.get_type_hints(record)  # resolvable: read_summary checks each field against its annotation


def test_the_demo_refuses_a_stage_run_of_an_older_pav_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sft = tmp_path / "run" / "sft"  # a finished sft run from before typed summaries: a bare dict
    sft.mkdir(parents=True)
    (sft / ".pav_run").write_text("sft\n")
    (sft / "summary.json").write_text(json.dumps({"final_loss": 1.0}))
    (sft / "COMPLETE").write_text("x\n")
    _one_line_exit_2(["demo", "--quick", "--quiet", "--out", "run"], "demo: run/sft holds a run summary of schema 1")


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
