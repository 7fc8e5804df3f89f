"""Malformed problem files: no crash, every bad record listed with file, line, field and reason,
exact accepted counts, and a stop only above the configured reject rate."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pav.cli import app
from pav.core.rejects import RejectLedger, TooManyRejects
from pav.tasks.math_data import MathDataConfig, numbered_records, to_problems


def good(i: int) -> bytes:
    return json.dumps({"id": f"g{i}", "question": f"What is {i} + 1?", "answer": f"{i} + 1\n#### {i + 1}"}).encode()


# each bad line with the field and the words its reject must carry
BAD = {
    "truncated": (b'{"id": "t", "question": "What is', "", "invalid JSON"),
    "invalid utf-8": (b'{"id": "u", "question": "\xff\xfe", "answer": "#### 1"}', "", "invalid UTF-8"),
    "nan literal": (b'{"id": "n", "question": "q", "answer": "#### 1", "score": NaN}', "", "NaN"),
    "infinity literal": (b'{"id": "i", "question": "q", "answer": "#### 1", "w": -Infinity}', "", "Infinity"),
    "overflowing number": (b'{"id": "o", "question": "q", "answer": "#### 1", "w": 1e999}', "", "non-finite"),
    "not an object": (b'["q", "#### 1"]', "", "not an object"),
    "missing field": (b'{"id": "m", "answer": "#### 1"}', "question", "missing"),
    "null field": (b'{"id": "z", "question": null, "answer": "#### 1"}', "question", "missing"),
    "wrong type": (b'{"id": "w", "question": ["q"], "answer": "#### 1"}', "question", "wrong type"),
    "empty question": (b'{"id": "e", "question": "  ", "answer": "#### 1"}', "question", "empty"),
    "no final answer": (b'{"id": "f", "question": "q", "answer": "just text"}', "answer", "####"),
    "duplicate id": (b'{"id": "g0", "question": "again", "answer": "#### 2"}', "id", "duplicate"),
    "very long line": (b'{"id": "l", "question": "' + b"x" * (1 << 20) + b'", "answer": "#### 1"}', "", "over"),
}
CFG = MathDataConfig(train="x", id_field="id")


def write(path, lines, bom=False, crlf=False):
    end = b"\r\n" if crlf else b"\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + end.join(lines) + end)


def read(path, rate=1.0):
    ledger = RejectLedger(max_reject_rate=rate)
    problems = to_problems(numbered_records(str(path), ledger), CFG, str(path), ledger)
    return problems, ledger


def test_every_kind_of_bad_line_is_rejected_with_its_line_and_field(tmp_path):
    lines = [good(0)] + [bad for bad, _, _ in BAD.values()] + [good(1), b"", good(2)]
    write(tmp_path / "p.jsonl", lines, bom=True, crlf=True)
    problems, ledger = read(tmp_path / "p.jsonl")
    assert [p.problem_id for p in problems] == ["g0", "g1", "g2"]  # BOM and CRLF accepted
    assert problems[1].question == "What is 1 + 1?" and problems[1].answer == "2"
    assert len(ledger.rejects) == len(BAD)
    for (name, (_, field, words)), reject in zip(BAD.items(), ledger.ordered(), strict=True):
        assert reject.line == 2 + list(BAD).index(name), name
        assert reject.field == field and words in reject.reason and reject.file.endswith("p.jsonl"), name
    out = ledger.write(tmp_path / "rejects.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(2, 2 + len(BAD))) and set(rows[0]) == {"file", "line", "field", "reason"}


def test_above_the_reject_rate_the_source_is_refused(tmp_path):
    write(tmp_path / "p.jsonl", [good(i) for i in range(9)] + [BAD["truncated"][0]])
    assert len(read(tmp_path / "p.jsonl", rate=0.1)[0]) == 9  # 1 of 10: allowed
    with pytest.raises(TooManyRejects, match="1 of 10 records rejected") as err:
        read(tmp_path / "p.jsonl", rate=0.05)
    assert len(err.value.ledger.rejects) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 50).map(lambda i: ("good", i)),
                          st.sampled_from([k for k in BAD if k not in ("very long line", "duplicate id")])
                          .map(lambda k: ("bad", k))), max_size=30),
       st.booleans(), st.booleans())
def test_accepted_counts_are_exact_for_any_mix(tmp_path_factory, mix, bom, crlf):
    path = tmp_path_factory.mktemp("fuzz") / "p.jsonl"
    lines, want_ids, bad_lines = [], [], []
    for lineno, (kind, value) in enumerate(mix, start=1):
        if kind == "good":
            lines.append(good(value))
            if f"g{value}" in want_ids:
                bad_lines.append(lineno)  # a repeated id is a duplicate
            else:
                want_ids.append(f"g{value}")
        else:
            lines.append(BAD[value][0])
            bad_lines.append(lineno)
    write(path, lines, bom=bom, crlf=crlf)
    if not want_ids:
        with pytest.raises(ValueError):  # nothing usable: a clear error, not a crash
            read(path)
        return
    problems, ledger = read(path)
    assert [p.problem_id for p in problems] == want_ids
    assert [r.line for r in ledger.ordered()] == bad_lines
    assert ledger.read[str(path)] == len(mix)


def test_a_stage_writes_the_rejects_file_and_stops_above_the_rate(tiny_qwen, tmp_path, monkeypatch):
    lines = [json.dumps({"question": f"Tom has {i} apples. How many?", "answer": f"He has {i}.\n#### {i}"}).encode()
             for i in range(40)]
    write(tmp_path / "set.jsonl", lines[:20] + [BAD["nan literal"][0], BAD["missing field"][0]] + lines[20:])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["label", "--quiet", "--set", f"policy={tiny_qwen}", "--set",
            "task.source=pav.tasks.math_task:make_task", "--set", "task.options.train=set.jsonl", "--set",
            "task.options.grader_workers=1", "--set", "problems=2", "--set", "n_cov=1",
            "--set", "n_mc=1"]
    ok = subprocess.run([sys.executable, "-m", "pav.cli", *args, "--set", "task.options.max_reject_rate=0.1", "--out",
                         "ok"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    rejects = [json.loads(line) for line in (tmp_path / "ok" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(21, ""), (22, "question")]
    monkeypatch.chdir(tmp_path)  # the refusal through the CLI app in this process: no second torch import
    stop = CliRunner().invoke(app, [*args, "--out", "stop"])
    assert stop.exit_code == 2 and "2 of 42 records rejected" in stop.stderr
    assert len((tmp_path / "stop" / "rejects.jsonl").read_text().splitlines()) == 2
