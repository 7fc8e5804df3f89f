"""Task plug-ins (`pav.tasks.build`): `task.source` selects a factory, `task.options.*` are its keyword
arguments, and a bad plug-in stops a stage with one line naming the module, exit 2, nothing written."""

import random
import textwrap

import pytest
from typer.testing import CliRunner

from pav.cli import app
from pav.core.config import load_config, resolve, save_config
from pav.rollouts.stage import LabelConfig
from pav.tasks.build import MODREACH, TaskConfig, TaskPluginError, build_task, builtin_task, check_source, task_config
from pav.tasks.modreach import ModReach, ModReachConfig

GOOD = '''
import random
from pav.core.records import Problem

class Echo:
    name = "echo"
    step_delimiter = "\\n"
    max_steps = 3
    max_step_chars = 8

    def __init__(self, value=7):
        self.value = value

    def problems(self, n, seed, split="train"):
        return [Problem(f"{split}-{seed}-{i}", "say", str(self.value)) for i in range(n)]

    def prompt(self, problem):
        return problem.question + "\\n"

    def split_steps(self, completion):
        parts = completion.split("\\n")
        return parts[:-1] if parts and parts[-1] == "" else parts

    def is_final_step(self, step):
        return step.startswith("ans ")

    def answer(self, steps):
        return next((s[4:] for s in steps if s.startswith("ans ")), None)

    def outcome(self, problem, steps):
        return float(self.answer(steps) == problem.answer)

    def demonstrate(self, problem, rng):
        return [f"ans {problem.answer}"]

def make_task(value: int = 7):
    return Echo(value)
'''

BAD = {  # source -> what the one line must say
    "nosuch_task_module:make_task": "'nosuch_task_module' cannot be imported",
    "plug:nothing_here": "has no 'nothing_here'",
    "plug:not_a_task": "'name' is missing",
    "plug:no_outcome": "without a method outcome()",
    "plug:int_prompt": "prompt() must return a str, got int",
    "broken:make_task": "'broken' cannot be imported: RuntimeError: no numpy here",
}


@pytest.fixture
def plug(tmp_path, monkeypatch):
    """A module `plug` on sys.path with a good factory and one per kind of mistake."""
    (tmp_path / "plug.py").write_text(GOOD + textwrap.dedent('''
        def not_a_task():
            return {"name": "echo"}

        class NoOutcome(Echo):
            outcome = None

        def no_outcome():
            return NoOutcome()

        class IntPrompt(Echo):
            def prompt(self, problem):
                return 3

        def int_prompt():
            return IntPrompt()
    '''))
    (tmp_path / "broken.py").write_text('raise RuntimeError("no numpy here")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_plugin_factory_gets_its_options_typed_by_its_annotations(plug):
    task = build_task(resolve(LabelConfig, overrides=["task.source=plug:make_task", "task.options.value=9"]).task)
    assert task.value == 9 and task.problems(1, 0)[0].answer == "9"


def test_the_built_in_knobs_are_task_options():
    cfg = resolve(LabelConfig, overrides=["task.options.modulus=7", "task.options.slack=[1, 2]"])
    task = build_task(cfg.task)
    assert isinstance(task, ModReach) and task.cfg.modulus == 7 and task.cfg.slack == (1, 2)
    assert cfg.task.source == MODREACH and build_task(TaskConfig()).cfg == ModReachConfig()


def test_options_from_a_preset_and_the_command_line_merge_and_round_trip(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text('[task]\nsource = "pav.tasks.modreach:make_task"\n[task.options]\nmodulus = 7\nd_min = 2\n')
    cfg = resolve(LabelConfig, preset, ["task.options.d_min=4"])
    assert cfg.task.options == {"modulus": 7, "d_min": "4"}
    save_config(cfg, tmp_path / "c.toml")
    assert load_config(LabelConfig, tmp_path / "c.toml") == cfg


def test_the_demo_s_modreach_knobs_become_options_that_differ_from_the_defaults():
    cfg = builtin_task(ModReachConfig(modulus=7, slack=(1,)))
    assert cfg == task_config(MODREACH, modulus=7, slack=[1])
    assert build_task(cfg).cfg == ModReachConfig(modulus=7, slack=(1,))


def test_an_option_the_factory_does_not_take_is_refused(plug):
    with pytest.raises(TaskPluginError, match=r"no option 'valu' \(it takes: value\)"):
        check_source(task_config("plug:make_task", valu="3"))
    with pytest.raises(TaskPluginError, match="did you mean modulus"):
        check_source(task_config(MODREACH, modulu="3"))


@pytest.mark.parametrize("source", sorted(BAD))
def test_a_bad_plugin_stops_the_stage_with_one_line_and_exit_2(plug, source):
    res = CliRunner().invoke(app, ["label", "--set", f"task.source={source}", "--set", "policy=nowhere",
                                   "--out", "run"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD[source] in lines[0] and source.split(":")[0] in lines[0], lines
    assert not (plug / "run").exists()  # stopped before any work


def test_a_good_plugin_passes_the_check_and_a_bad_demonstration_is_not_a_type_error(plug):
    check_source(task_config("plug:make_task"))
    task = build_task(task_config("plug:make_task", value=3))
    assert task.demonstrate(task.problems(1, 0)[0], random.Random(0)) == ["ans 3"]


def test_the_docs_example_task_passes_the_check(tmp_path, monkeypatch):
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "your-task.md").read_text()
    (tmp_path / "docs_echo_task.py").write_text(doc.split("```python\n")[1].split("```")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    task = build_task(task_config("docs_echo_task:make_task"))
    p = task.problems(2, 0)[1]
    assert task.outcome(p, task.split_steps("x\n\nans 1\n")) == 1.0


def test_the_docs_error_lines_are_what_the_check_says(plug):
    (plug / "my_task.py").write_text(GOOD + "\nclass Three(Echo):\n    def prompt(self, problem):\n        return 3\n"
                                     "\ndef make_int():\n    return Three()\n")
    with pytest.raises(TaskPluginError) as missing:
        check_source(task_config("my_task:make_tsk"))
    with pytest.raises(TaskPluginError) as wrong:
        check_source(task_config("my_task:make_int"))
    assert str(missing.value) == "task module 'my_task' has no 'make_tsk' (task.source = 'my_task:make_tsk')"
    assert str(wrong.value) == "task my_task:make_int: prompt() must return a str, got int 3"


def test_an_installed_plugin_is_found_by_its_entry_point_name(plug, monkeypatch):
    from importlib.metadata import EntryPoint

    import importlib.metadata

    eps = [EntryPoint("echo", "plug:make_task", "pav.tasks")]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == "pav.tasks" else [])
    assert build_task(task_config("echo", value=5)).value == 5
    with pytest.raises(TaskPluginError, match=r"no task plug-in named 'ecko' \(installed: echo\)"):
        check_source(task_config("ecko"))


def test_show_config_lists_the_factory_s_options(plug):
    res = CliRunner().invoke(app, ["label", "--show-config", "--set", "task.options.n_ops=5"])
    assert res.exit_code == 0 and 'task.options.n_ops = "5"' in res.stdout and "task.options.p_err = 0.08" in res.stdout
    res = CliRunner().invoke(app, ["label", "--show-config", "--set", "task.source=plug:make_task"])
    assert "task.options.value = 7" in res.stdout and "task.options =" not in res.stdout
