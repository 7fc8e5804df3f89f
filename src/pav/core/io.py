"""Reading and writing record files (JSONL and Parquet) and small JSON summaries.

Every write is atomic: the bytes go to a temporary file in the destination folder, are flushed and
fsynced, and only then ``os.replace`` puts the file in place, so a crash never leaves a half-written
file under the final name. JSON is written with ``allow_nan=False``. Parquet files carry an explicit
schema derived from the record dataclass (``meta`` as a JSON string column, ``steps`` as
``list<string>``) and the schema version and record kind in their key-value metadata. pyarrow is
imported only by the Parquet functions, so ``import pav.core`` stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar, get_args, get_type_hints

from pav.core.records import Record, RecordError, SCHEMA_VERSION, check_schema_version

R = TypeVar("R", bound=Record)

_META_VERSION = b"pav.schema_version"
_META_KIND = b"pav.kind"


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success fsync it and move it into place.

    ``mode`` is ``"w"`` (UTF-8 text, ``\\n`` newlines) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    text_kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, mode, **text_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    """Let summaries hold numpy scalars/arrays and paths."""
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, obj: Any) -> None:
    """Write a small JSON document (a summary, a manifest) atomically, pretty-printed."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    with atomic_open(path, "w") as f:
        f.write(text + "\n")


# ----------------------------------------------------------------------------------------------
# JSONL


def write_jsonl(path: str | Path, records: Iterable[Record]) -> None:
    """Write one record per line (``to_dict`` form) atomically."""
    with atomic_open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False) + "\n")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def read_jsonl(path: str | Path, record_type: type[R]) -> list[R]:
    """Read a JSONL file of ``record_type``; errors name ``file:line``. Blank lines are skipped."""
    records: list[R] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_reject_constant)
            except ValueError as exc:
                raise RecordError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
            try:
                records.append(record_type.from_dict(obj))
            except RecordError as exc:
                raise RecordError(f"{path}:{lineno}: {exc}") from exc
    return records


# ----------------------------------------------------------------------------------------------
# Parquet


def _arrow_schema(record_type: type[Record]) -> Any:
    """Arrow schema for ``record_type``, with schema version and kind in the metadata."""
    import pyarrow as pa

    arrow_types = {
        str: pa.string(),
        int: pa.int64(),
        float | None: pa.float64(),
        tuple[str, ...]: pa.list_(pa.field("item", pa.string(), nullable=False)),
        dict[str, Any]: pa.string(),  # JSON text
    }
    hints = get_type_hints(record_type)
    fields = [
        pa.field(f.name, arrow_types[hints[f.name]], nullable=type(None) in get_args(hints[f.name]))
        for f in dataclasses.fields(record_type)
    ]
    metadata = {_META_VERSION: str(SCHEMA_VERSION).encode(), _META_KIND: record_type.KIND.encode()}
    return pa.schema(fields, metadata=metadata)


def _to_row(record: Record) -> dict[str, Any]:
    row = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    if "meta" in row:
        row["meta"] = json.dumps(row["meta"], ensure_ascii=False, allow_nan=False)
    return row


def write_parquet(path: str | Path, records: Iterable[Record],
                  record_type: type[Record] | None = None) -> None:
    """Write records of one type to Parquet atomically.

    ``record_type`` is needed only to write an empty file; otherwise it is taken from the records.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = list(records)
    record_type = record_type or (type(records[0]) if records else None)
    if record_type is None:
        raise RecordError(f"{path}: cannot write an empty Parquet file without record_type")
    for i, record in enumerate(records):
        if type(record) is not record_type:
            raise RecordError(f"{path}: record {i} is a {type(record).__name__}, "
                              f"expected {record_type.__name__}")
    table = pa.Table.from_pylist([_to_row(r) for r in records], schema=_arrow_schema(record_type))
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def read_parquet(path: str | Path, record_type: type[R]) -> list[R]:
    """Read a Parquet file written by ``write_parquet``; checks schema version and kind."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    version = metadata.get(_META_VERSION)
    if version is None:
        raise RecordError(f"{path}: no pav schema version in the Parquet metadata (not written by pav?)")
    version = int(version) if version.isdigit() else version.decode(errors="replace")
    check_schema_version(version, where=str(path))
    kind = metadata.get(_META_KIND, b"").decode()
    if kind != record_type.KIND:
        raise RecordError(f"{path}: holds {kind or 'unknown'!r} records, expected {record_type.KIND!r}")
    header = {"schema_version": version, "kind": kind}
    records: list[R] = []
    for i, row in enumerate(table.to_pylist()):
        if "meta" in row and isinstance(row["meta"], str):
            row["meta"] = json.loads(row["meta"], parse_constant=_reject_constant)
        try:
            records.append(record_type.from_dict({**header, **row}))
        except RecordError as exc:
            raise RecordError(f"{path}: row {i}: {exc}") from exc
    return records
