"""File I/O: error locations, atomic writes, Parquet schema and version checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pav.core.io import atomic_open, read_jsonl, read_parquet, write_json, write_jsonl, write_parquet
from pav.core.records import Problem, RecordError, Solution, StepLabel

LABELS = [StepLabel("p", "s", h, h, 4, "pi", "mu") for h in range(3)]


def test_jsonl_bad_json_reports_file_and_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    write_jsonl(path, LABELS)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-1]  # drop the closing brace
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:2: invalid JSON: "):
        read_jsonl(path, StepLabel)


def test_jsonl_bad_record_reports_file_and_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    rows = [r.to_dict() for r in LABELS]
    rows[2]["n_correct"] = 9
    path.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n")  # blank lines are skipped
    with pytest.raises(RecordError) as info:
        read_jsonl(path, StepLabel)
    assert str(info.value) == f"{path}:5: StepLabel: n_correct (9) must be <= n_rollouts (4)"
    assert isinstance(info.value.__cause__, RecordError)


def test_jsonl_rejects_nan_literal(tmp_path):
    path = tmp_path / "s.jsonl"
    row = Solution("p", "s", [], "pi", 0.5).to_dict()
    path.write_text(json.dumps(row).replace("0.5", "NaN") + "\n")
    with pytest.raises(RecordError, match=r":1: invalid JSON: non-finite number NaN"):
        read_jsonl(path, Solution)


def test_jsonl_wrong_kind_reports_line(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [Problem("p", "q", "a")])
    with pytest.raises(RecordError, match=r":1: Solution: field 'kind' must be 'solution', got 'problem'"):
        read_jsonl(path, Solution)


def test_jsonl_is_utf8_one_record_per_line(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [Problem("p", "x\u2028y\nz ☃", "a")])
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and "☃".encode() in raw


def test_atomic_write_leaves_only_the_target(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", LABELS)
    write_parquet(tmp_path / "a.parquet", LABELS)
    write_json(tmp_path / "a.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.jsonl", "a.parquet"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, LABELS)
    before = path.read_bytes()

    def broken():
        yield LABELS[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_atomic_open_creates_parents_and_rejects_modes(tmp_path):
    with atomic_open(tmp_path / "x" / "y.txt") as f:
        f.write("hi")
    assert (tmp_path / "x" / "y.txt").read_text() == "hi"
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(tmp_path / "z", "a"):
            pass


def test_write_json_rejects_nan_and_handles_numpy(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "s.json", {"x": float("nan")})
    assert not list(tmp_path.iterdir())
    write_json(tmp_path / "s.json", {"x": np.float32(0.5), "y": np.arange(2), "p": tmp_path})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 0.5, "y": [0, 1], "p": str(tmp_path)}


def test_parquet_schema_is_explicit(tmp_path):
    path = tmp_path / "s.parquet"
    write_parquet(path, [Solution("p", "s", ["a"], "pi")])
    schema = pq.read_schema(path)
    assert schema.field("steps").type == pa.list_(pa.field("item", pa.string(), nullable=False))
    assert schema.field("outcome").type == pa.float64() and schema.field("outcome").nullable
    assert not schema.field("problem_id").nullable
    assert schema.metadata[b"pav.schema_version"] == b"1"
    assert schema.metadata[b"pav.kind"] == b"solution"
    write_parquet(path, [Problem("p", "q", "a", {"k": [1, None]})])
    assert pq.read_table(path).column("meta").to_pylist() == ['{"k": [1, null]}']


def _rewrite_metadata(path, metadata):
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(metadata), path)


@pytest.mark.parametrize("metadata, message", [
    ({b"pav.schema_version": b"2", b"pav.kind": b"step_label"},
     "schema_version 2 is newer than supported (1)"),
    ({b"pav.kind": b"step_label"}, "no pav schema version in the Parquet metadata"),
    ({b"pav.schema_version": b"x", b"pav.kind": b"step_label"}, "must be a positive int, got 'x'"),
    ({b"pav.schema_version": b"1", b"pav.kind": b"problem"},
     "holds 'problem' records, expected 'step_label'"),
])
def test_parquet_metadata_checked_on_read(tmp_path, metadata, message):
    path = tmp_path / "l.parquet"
    write_parquet(path, LABELS)
    _rewrite_metadata(path, metadata)
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_parquet(path, StepLabel)


def test_parquet_bad_row_is_reported(tmp_path):
    path = tmp_path / "l.parquet"
    write_parquet(path, LABELS)
    table = pq.read_table(path)
    n_correct = table.schema.get_field_index("n_correct")
    table = table.set_column(n_correct, table.schema.field(n_correct), pa.array([0, 1, 7], pa.int64()))
    pq.write_table(table, path)
    with pytest.raises(RecordError, match=r"row 2: StepLabel: n_correct \(7\) must be <= n_rollouts \(4\)"):
        read_parquet(path, StepLabel)


def test_parquet_write_errors(tmp_path):
    with pytest.raises(RecordError, match="without record_type"):
        write_parquet(tmp_path / "e.parquet", [])
    with pytest.raises(RecordError, match="record 1 is a Problem, expected StepLabel"):
        write_parquet(tmp_path / "m.parquet", [LABELS[0], Problem("p", "q", "a")])
    assert not os.listdir(tmp_path)


def test_importing_core_is_cheap():
    code = "import sys, pav.core; print('torch' in sys.modules, 'pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
