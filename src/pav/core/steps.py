"""Where steps begin and end in sampled text: one rule for every sampler, task, RL and serve.

A step ends at the step delimiter. A blank line never becomes a step: a part between two
delimiters that is empty or only whitespace is kept as the start of the next step (so the text is
reproduced exactly by joining the steps with the delimiter, and every sampled token belongs to a
step), and a blank run at the very end belongs to no step. Chat models often separate steps with an
empty line ("\\n\\n" under the "\\n" delimiter); with this rule that costs no step of the budget
and yields no empty step for a verifier to score.
"""

from __future__ import annotations


def complete_steps(text: str, delimiter: str) -> tuple[list[str], str]:
    """(the completed steps of ``text``, the unfinished rest after the last completed one).

    ``"a\\n\\nb\\nc"`` with delimiter ``"\\n"`` gives ``(["a", "\\nb"], "c")``; the steps joined with
    the delimiter, followed by the rest, give back ``text``.
    """
    parts = text.split(delimiter)
    steps, pending = [], ""
    for part in parts[:-1]:
        if part.strip():
            steps.append(pending + part)
            pending = ""
        else:
            pending += part + delimiter
    return steps, pending + parts[-1]


def split_steps(text: str, delimiter: str) -> list[str]:
    """The steps of a completion: its completed steps and, if it is not blank, the unfinished rest."""
    steps, rest = complete_steps(text, delimiter)
    return steps + [rest] if rest.strip() else steps
