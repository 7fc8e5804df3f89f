"""The shared stop rule `scan_steps`, hand-checked, and cheap imports of `pav.policies`."""

import subprocess
import sys

import pytest

from pav.policies.base import (
    Generation,
    StepScan,
    check_sample_args,
    cut_over_long,
    over_long_end,
    scan_steps,
    tokens_covering,
)


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


def test_the_first_step_that_reaches_max_step_chars_is_cut_exactly_there():
    def end(text, m):
        return over_long_end(text, "\n", m)

    assert end("abcdefgh", 5) == 5  # an unfinished step
    assert end("abcde\n", 5) == 5  # it reached 5 before its delimiter
    assert end("abcd\n", 5) is None and end("abcd", 5) is None and end("", 1) is None
    assert end("1+1=2\nans 2 is long\nxxxxxxxxxxxx", 6) == 12  # the first over-long step, a final one too
    assert end("1+1=2\nxxxxx\nyyyyyyyyy", 6) == 18  # "xxxxx" is 5: the next step is cut
    # a step counts the blank lines it starts with (`pav.core.steps`): "\n\nbcd" is 5 characters
    assert end("a\n\n\nbcd", 5) == 7 and end("a\n\n\nbcd", 6) is None
    assert over_long_end("x;;abcdef;;", ";;", 4) == 7  # another delimiter: "abcdef" is cut after "abcd"


def test_cut_over_long_keeps_the_tokens_that_cover_the_cut():
    pieces = {1: "ab", 2: "c", 3: "def", 4: "\n", 5: "ans 1", 6: "\n", 0: ""}  # 0: eos
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    assert [tokens_covering(decode, [1, 2, 3, 4], n) for n in (1, 2, 3, 4, 6, 7)] == [1, 1, 2, 3, 3, 4]
    ids = [1, 2, 3, 4, 5, 6, 0]
    gen = Generation("abcdef\nans 1\n", 7, True)
    cut = dict(delimiter="\n", decode=decode)
    assert cut_over_long(gen, ids, max_step_chars=4, **cut) == Generation("abcd", 3, False)  # "ab" "c" "def" cover 4
    assert cut_over_long(gen, ids, max_step_chars=6, **cut) == Generation("abcdef", 3, False)
    assert cut_over_long(gen, ids, max_step_chars=7, **cut) is gen  # no step reaches 7: untouched
    assert cut_over_long(gen, ids, max_step_chars=None, **cut) is gen


@pytest.mark.parametrize("bad", [dict(n=0), dict(until="line"), dict(max_steps=0), dict(max_new_tokens=0),
                                 dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5),
                                 dict(max_step_chars=0)])
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
