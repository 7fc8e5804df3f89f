"""Bad input at the command line: one line on stderr naming the thing and the fix, exit code 2,
nothing written; --debug / PAV_DEBUG=1 shows the traceback instead. Run in-process (typer's
runner) so the whole table costs one import of the stages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pav.cli import DEBUG_ENV, _errors_as_one_line, app
from pav.core.rundir import write_run_tag


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A folder holding the runs and files the bad inputs point at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    for name, stage, complete in (("labelrun", "label", True), ("unfinished", "label", False), ("done", "sft", True)):
        (tmp_path / name).mkdir()
        write_run_tag(tmp_path / name, stage)
        if complete:
            (tmp_path / name / "COMPLETE").write_text("x\n")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afile.gguf").write_text("not a model")
    return tmp_path


# (argv, what stderr must say): every one exits 2 with exactly one line
CASES = [
    (["label", "--set", "policy=./no/such/model"], "no such model directory or file: ./no/such/model"),
    (["label", "--set", "policy=nosuchmodel"], "'nosuchmodel' is not a local directory and not in the Hugging Face cache"),
    (["label", "--set", "policy=labelrun"], "labelrun is a label run, which holds no policy"),
    (["label", "--set", "policy=unfinished/"], "unfinished/ is a label run"),
    (["label", "--set", "nosuch=1"], "unknown config key 'nosuch'"),
    (["label", "--set", "problems=0"], "must be >= 1"),
    (["label", "--set", "workers=two"], "workers"),
    (["label", "--preset", "no_such_preset"], "no_such_preset"),
    (["label", "--quick", "--preset", "label_quick"], "either --quick or --preset"),
    (["train-verifier", "--set", "labels=missing", "--set", "backbone=done"], "labels: missing does not exist"),
    (["train-verifier", "--set", "labels=unfinished", "--set", "backbone=done"], "unfinished run"),
    (["eval-verifier", "--set", "labels=labelrun", "--set", "verifier=nowhere"], "nowhere"),
    (["export-labels", "--set", "labels=done"], "not a label run"),
    (["score", "--set", "solutions=empty.jsonl", "--set", "problems=empty.jsonl", "--set", "verifier=done"],
     "empty.jsonl holds no solutions"),
    (["sft", "--quick", "--out", "afile"], "afile is a file"),
    (["sft", "--quick", "--out", "done"], "pass --overwrite"),
    (["sft", "--quick", "--out", " "], "--out is empty"),
    (["sft", "--set", "init=./no/such.gguf", "--out", "newrun"], "no such GGUF file: no/such.gguf"),
    (["sft", "--set", "init=afile.gguf", "--out", "newrun"], "afile.gguf is not a GGUF file"),
    (["demo", "--set", "task.source=pav.tasks.deepmind:make_task"], "has none: --set rl_prover=policy"),
    (["demo", "--set", "task.source=no_such_module:make_task"], "task module 'no_such_module' cannot be imported"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(a)[:50] for a, _ in CASES])
def test_a_bad_input_is_one_line_and_exit_2(runs, argv, message):
    before = sorted(p.name for p in runs.iterdir())
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert "Traceback" not in res.output
    if "policy=nosuchmodel" not in argv:  # a hub name is looked up when loaded, in the run (its rerun: below)
        assert sorted(p.name for p in runs.iterdir()) == before  # nothing half-written


def test_debug_shows_the_traceback(runs, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "0")  # --debug sets it in this process; the test ends with it as it found it
    res = CliRunner().invoke(app, ["--debug", "label", "--set", "policy=./no/such/model"])
    assert res.exit_code != 2 and res.exception is not None  # the exception itself, not a one-liner
    assert "no such model directory" in str(res.exception)
    monkeypatch.setenv(DEBUG_ENV, "1")
    res = CliRunner().invoke(app, ["score", "--set", "solutions=empty.jsonl", "--set", "problems=empty.jsonl",
                                   "--set", "verifier=done"])
    assert isinstance(res.exception, ValueError)


def test_interrupt_says_the_command_resumes(capsys):
    import typer

    with pytest.raises(typer.Exit) as stop, _errors_as_one_line():
        raise KeyboardInterrupt
    assert stop.value.exit_code == 130 and "rerun the same command" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_pointing_at_debug(capsys, monkeypatch):
    import typer

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(typer.Exit) as stop, _errors_as_one_line():
        raise KeyError("x")
    err = capsys.readouterr().err
    assert stop.value.exit_code == 1 and "unexpected KeyError" in err and "--debug" in err


def test_show_config_on_a_pipe_is_toml_a_preset_can_start_from(runs):
    import tomllib

    shown = CliRunner().invoke(app, ["rl", "--show-config"])
    assert shown.exit_code == 0
    assert "iterations = 300  # policy updates [default]" in shown.stdout.splitlines()
    values = tomllib.loads(shown.stdout)
    (runs / "rl.toml").write_text(shown.stdout)
    again = CliRunner().invoke(app, ["rl", "--preset", "rl.toml", "--show-config"])
    assert again.stdout == shown.stdout and values["kl_coef"] == 0.001


def test_text_outside_the_character_alphabet_is_named():
    from pav.policies.tokenizer import build_char_tokenizer, check_encodable

    tok = build_char_tokenizer()
    check_encodable(tok, ["1 + 2 = 3\n"])
    with pytest.raises(ValueError, match=r"2 character\(s\).*'\?√'.*general tokenizer"):
        check_encodable(tok, ["What is √4?"])


def test_a_run_that_failed_on_its_input_reruns_into_the_same_out(runs):
    """Corrected settings continue a run that failed before writing anything, without --overwrite."""
    first = CliRunner().invoke(app, ["label", "--quick", "--set", "policy=nosuchmodel", "--out", "lab"])
    assert first.exit_code == 2
    again = CliRunner().invoke(app, ["label", "--quick", "--set", "policy=./other/model", "--out", "lab"])
    assert again.exit_code == 2 and "no such model directory" in again.stderr  # not "a different config"
