"""The shared stop rule `scan_steps`, hand-checked, and cheap imports of `pav.policies`."""

import subprocess
import sys

import pytest

from pav.policies.base import StepScan, check_sample_args, scan_steps


def _scan(text, seen=0, until="solution", max_steps=10, final=None):
    return scan_steps(text, seen, until=until, delimiter="\n", max_steps=max_steps, is_final_step=final)


def test_step_mode_cuts_right_after_the_first_delimiter():
    assert _scan("ab\ncd\n", until="step") == StepScan(3, True, 1)
    assert _scan("abc", until="step") == StepScan(None, False, 0)


def test_solution_mode_stops_at_the_first_final_line_and_not_before():
    final = lambda line: line.startswith("ans")  # noqa: E731
    assert _scan("1+1=2\n", final=final) == StepScan(None, False, 1)
    assert _scan("1+1=2\nans 2\nxx\n", final=final) == StepScan(12, True, 2)
    assert _scan("1+1=2\nans 2", final=final) == StepScan(None, False, 1)  # unfinished line


def test_solution_mode_max_steps_and_incremental_scan():
    seen = []
    final = lambda line: seen.append(line) or False  # noqa: E731
    assert _scan("a\nb\n", max_steps=3, final=final) == StepScan(None, False, 2)
    assert _scan("a\nb\nc\nd\n", 2, max_steps=3, final=final) == StepScan(6, False, 3)
    assert seen == ["a", "b", "c"]  # "a", "b" not re-checked on the second call; "d" never


def test_other_delimiters():
    assert scan_steps("x;;y;", 0, until="solution", delimiter=";;", max_steps=5,
                      is_final_step=lambda s: s == "x") == StepScan(3, True, 1)


@pytest.mark.parametrize("bad", [dict(n=0), dict(until="line"), dict(max_steps=0), dict(max_new_tokens=0),
                                 dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5)])
def test_check_sample_args_rejects(bad):
    args = dict(n=1, until="step", max_steps=1, max_new_tokens=1, temperature=1.0, top_p=1.0) | bad
    with pytest.raises(ValueError):
        check_sample_args(**args)


def test_import_pav_policies_imports_no_torch_or_transformers():
    code = ("import sys, pav.policies; "
            "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
