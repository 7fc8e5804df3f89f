"""Run directories: where a stage writes its resolved config, metrics and outputs.

A run is finished once its ``COMPLETE`` marker exists; the marker is written last, atomically.
``prepare_run_dir`` refuses to reuse a finished run unless told to overwrite, and then clears the
folder first so nothing stale survives. To avoid wiping a folder that is not a run (``--out .``),
contents are only deleted when the folder carries the ``.pav_run`` tag that ``prepare_run_dir``
writes, or a ``COMPLETE`` marker.

``summary.json`` is a stage's summary record: a frozen dataclass of the stage's library module
(`pav.sft.train.SFTSummary`, `pav.rollouts.label.LabelSummary`, ...) whose ``STAGES`` names the run
tags it belongs to. `mark_complete` writes it beside the stage and the schema version;
`read_summary` reads it back as that record, or says in one line what the file is instead. A
record's fields are the top level of the file; nested values (curves, tables) are plain JSON.

``--out`` is the user's own choice and may name any folder; code that takes paths from others
(`pav serve`) fences them itself.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pav.core.io import atomic_open, write_json

logger = logging.getLogger(__name__)

S = TypeVar("S")  # a stage's summary record

COMPLETE = "COMPLETE"
RUN_TAG = ".pav_run"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.toml"
RUN_SCHEMA_VERSION = 2  # of the run tag and summary.json; 1: the tag held the stage name alone, the summary a bare dict
COMMANDS = {"import": "import-labels", "export": "export-labels", "verifier": "train-verifier"}  # stage tag -> command


class RunExistsError(ValueError):
    """The output folder holds a finished run and overwriting was not asked for."""


class UnfinishedRunError(ValueError):
    """A command was asked to read a run that has not finished."""


class RunFormatError(ValueError):
    """A directory that is not the kind of pav run a command reads, or a run of another schema."""


def is_complete(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    return (Path(run_dir) / COMPLETE).is_file()


def readable_run(path: str | Path, what: str) -> Path:
    """``path`` if a command may read it: it exists and, when it is a pav run, that run has finished
    (a command reading an unfinished one would quietly work on part of its output)."""
    run = Path(path)
    if not str(path).strip():
        raise ValueError(f"{what} is not set; name a run with --set {what}=PATH")
    if not run.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist; check the path")
    if (run / RUN_TAG).is_file() and not is_complete(run):
        raise UnfinishedRunError(f"{what}: {path} is an unfinished run (no {COMPLETE} marker); finish it by rerunning "
                             "the command that wrote it with the same --out, or name a finished run")
    return run


def write_run_tag(run_dir: Path, stage: str) -> None:
    """The tag that marks ``run_dir`` as a pav run of ``stage`` and of this schema."""
    (run_dir / RUN_TAG).write_text(json.dumps({"stage": stage, "schema_version": RUN_SCHEMA_VERSION}) + "\n",
                                   encoding="utf-8")


def run_tag(path: str | Path) -> tuple[str | None, int | None]:
    """(stage, schema version) a run directory's tag records; (None, None) when it has no tag."""
    tag = Path(path) / RUN_TAG
    if not tag.is_file():
        return None, None
    text = tag.read_text(encoding="utf-8").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return text, 1  # schema 1: the stage name alone
    return data.get("stage"), data.get("schema_version")


def _command(stage: str) -> str:
    base = stage.split("-")[0] if stage.startswith(("verifier-", "rl-")) else stage
    return f"`pav {COMMANDS.get(base, base)}`"


def check_run(path: str | Path, what: str, stages: tuple[str, ...], kind: str) -> Path:
    """``path`` if it is a finished run of one of ``stages`` (a tag ``verifier-pqv`` is of stage
    ``verifier``) written with this schema; else one line saying what it is and what was expected
    (``kind``: what such a run is called, e.g. "label")."""
    run = readable_run(path, what)
    stage, schema = run_tag(run)
    expected = " or ".join(_command(s) for s in stages) + " run directory"
    if stage is None:
        raise RunFormatError(f"{what}: {path} is not a pav run directory (no {RUN_TAG} file); expected a {expected}")
    if not any(stage == s or stage.startswith(f"{s}-") for s in stages):
        raise RunFormatError(f"{what}: {path} is a {_command(stage)} run, not a {kind} run (expected a {expected})")
    if schema != RUN_SCHEMA_VERSION:
        age = "an older" if isinstance(schema, int) and schema < RUN_SCHEMA_VERSION else "another"
        raise RunFormatError(f"{what}: {path} is a {_command(stage)} run of schema {schema}, written by {age} pav; "
                             f"this pav reads schema {RUN_SCHEMA_VERSION}: rerun {_command(stage)} to write it again")
    return run


def summary_fields(record: Any) -> dict[str, Any]:
    """A summary record as the JSON object ``summary.json`` holds, without the stage and schema
    fields: its fields in order, the dict a record names in ``REST`` spread out in its place."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name == getattr(record, "REST", None):
            out.update(getattr(record, f.name))
        else:
            out[f.name] = getattr(record, f.name)
    return out


def read_summary(run_dir: str | Path, what: str, record_type: type[S]) -> S:
    """The ``record_type`` record `mark_complete` wrote into ``run_dir``, checked on the way in: this
    schema (an older pav's summary is a bare dict: schema 1), one of the record's ``STAGES``, every
    field present and of its type, no other key. Anything else is a one-line `RunFormatError`
    saying what the file is and what was expected."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFormatError(f"{what}: {path} cannot be read as a pav summary ({exc})") from None
    schema = data.get("schema_version", 1) if isinstance(data, dict) else None
    if schema != RUN_SCHEMA_VERSION:
        raise RunFormatError(f"{what}: {run_dir} holds a run summary of schema {schema}, written by another pav; this "
                             f"pav reads schema {RUN_SCHEMA_VERSION}: rerun it (--overwrite) to write it again")
    expected = " or ".join(dict.fromkeys(_command(s) for s in record_type.STAGES))
    stage = data.get("stage")
    if stage not in record_type.STAGES:
        raise RunFormatError(f"{what}: {path} is the summary of a {_command(str(stage))} run, not of a {expected} run")
    data = {k: v for k, v in data.items() if k not in ("schema_version", "stage")}
    hints, rest = typing.get_type_hints(record_type), getattr(record_type, "REST", None)
    names = [f.name for f in dataclasses.fields(record_type)]
    problems = [f"no {n}" for n in names if n not in data and n != rest]
    if rest:
        data[rest] = {k: data.pop(k) for k in list(data) if k not in names}
    problems += [f"unknown key {k}" for k in data if k not in names]
    problems += [f"{n} {why}" for n in names if n in data and (why := _type_error(data[n], hints[n]))]
    if rest:
        value_type = typing.get_args(hints[rest])[1]
        problems += [f"{k} {why}" for k, v in data[rest].items() if (why := _type_error(v, value_type))]
    if problems:
        raise RunFormatError(f"{what}: {path} is not a {expected} summary of schema {RUN_SCHEMA_VERSION} "
                             f"({'; '.join(problems[:3])}); rerun {expected} (--overwrite) to write it again")
    return record_type(**data)


def _type_error(value: Any, tp: Any) -> str | None:
    """Why a JSON value is not of the annotation ``tp`` (the outer type only: a ``dict[str, Any]``
    is any object); None when it is."""
    if tp is Any:
        return None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        ok = any(_type_error(value, t) is None for t in typing.get_args(tp))
    else:
        base = typing.get_origin(tp) or tp
        ok = (value is None if base is type(None) else not isinstance(value, bool) and isinstance(value, (int, float))
              if base is float else not isinstance(value, bool) and isinstance(value, int) if base is int
              else isinstance(value, base))
    if ok:
        return None
    name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
    return f"is {type(value).__name__ if value is not None else 'null'}, not {name or str(tp).replace('typing.', '')}"


def _default_run_dir(stage: str) -> Path:
    base = Path("runs") / f"{stage}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = base, 1
    while run_dir.exists():  # two runs started within the same second
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def _clear(run_dir: Path) -> None:
    if not ((run_dir / RUN_TAG).exists() or (run_dir / COMPLETE).exists()):
        raise RunExistsError(f"refusing to delete the contents of {run_dir}: it is not a pav run "
                             f"directory (no {RUN_TAG} or {COMPLETE} file); choose another --out")
    logger.warning("--overwrite: deleting the previous contents of %s", run_dir)
    (run_dir / COMPLETE).unlink(missing_ok=True)  # first, so a half-cleared folder is not 'finished'
    for child in run_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def prepare_run_dir(out: str | Path | None, stage: str, overwrite: bool = False) -> Path:
    """Create (or reuse) the run directory; default ``runs/<stage>-<YYYYmmdd-HHMMSS>``."""
    run_dir = _default_run_dir(stage) if out is None else Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunExistsError(f"--out {run_dir} is a file, not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if overwrite:
            _clear(run_dir)
        elif is_complete(run_dir):
            raise RunExistsError(f"{run_dir} holds a finished run; pass --overwrite to replace it "
                                 f"or choose another --out")
        else:
            logger.warning("reusing the unfinished run directory %s", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_tag(run_dir, stage)
    return run_dir


def start_run(out: str | Path | None, stage: str, cfg: Any, overwrite: bool = False) -> Path:
    """`prepare_run_dir`, then record the resolved config in ``config.toml``.

    An unfinished run is continued only with the config it was started with; a different one is
    refused (continuing it would mix two experiments in one directory), unless the run failed before
    writing anything but its config (a missing input): then the new config replaces it.
    """
    from pav.core.config import load_config, save_config

    run_dir = prepare_run_dir(out, stage, overwrite)
    path = run_dir / CONFIG_FILE
    if path.exists() and _produced_nothing(run_dir):  # it failed before its first output: start afresh
        path.unlink()
    if path.exists() and load_config(type(cfg), path) != cfg:
        raise RunExistsError(f"{run_dir} holds an unfinished {stage} run with a different config; rerun with "
                             "the same settings to continue it, or pass --overwrite")
    save_config(cfg, path)
    logger.info("%s: run directory %s", stage, run_dir)
    return run_dir


def _produced_nothing(run_dir: Path) -> bool:
    return {p.name for p in run_dir.iterdir()} <= {RUN_TAG, CONFIG_FILE}


def mark_complete(run_dir: str | Path, summary: Any = None) -> None:
    """Write ``summary.json`` (if a summary record is given) and then, last, the ``COMPLETE`` marker.
    The record (a stage's frozen dataclass, e.g. `pav.sft.train.SFTSummary`) must belong to the
    run's stage; it is written with the stage and the schema version, which `read_summary` checks."""
    run_dir = Path(run_dir)
    if summary is not None:
        stage, _ = run_tag(run_dir)
        if stage not in summary.STAGES:
            raise ValueError(f"a {type(summary).__name__} is the summary of a {'/'.join(summary.STAGES)} run; "
                             f"{run_dir} is a run of {stage}")
        write_json(run_dir / SUMMARY_FILE, {"schema_version": RUN_SCHEMA_VERSION, "stage": stage,
                                            **summary_fields(summary)})
    with atomic_open(run_dir / COMPLETE, "w") as f:
        f.write(f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n")
