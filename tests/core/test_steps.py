"""The step rule (`pav.core.steps`): a blank line never becomes a step, and nothing is lost."""

from hypothesis import given
from hypothesis import strategies as st

from pav.core.steps import complete_steps, split_steps
from pav.policies.base import scan_steps

TEXT = st.text(alphabet="ab \n", max_size=30)


def test_blank_lines_join_the_next_step():
    assert complete_steps("a\n\nb\nc", "\n") == (["a", "\nb"], "c")
    assert split_steps("a\n\n  \nb\n\n", "\n") == ["a", "\n  \nb"]
    assert split_steps("\n\n", "\n") == [] and split_steps("", "\n") == []
    assert split_steps("x\n\ny\n\n", "\n\n") == ["x", "y"]  # paragraphs


@given(TEXT, st.sampled_from(["\n", "\n\n", " | "]))
def test_steps_and_rest_give_back_the_text_and_no_step_is_blank(text, delim):
    steps, rest = complete_steps(text, delim)
    assert "".join(s + delim for s in steps) + rest == text
    assert all(s.strip() for s in split_steps(text, delim))
    assert split_steps(text, delim)[: len(steps)] == steps


@given(TEXT, st.integers(1, 4))
def test_the_samplers_stop_rule_counts_the_same_steps(text, max_steps):
    scan = scan_steps(text, 0, until="solution", delimiter="\n", max_steps=max_steps, is_final_step=None)
    steps, _ = complete_steps(text, "\n")
    assert scan.n_steps == min(len(steps), max_steps)
    if scan.end is not None:  # cut after the max_steps-th step: those steps, delimiters included
        assert split_steps(text[: scan.end], "\n") == steps[:max_steps]
