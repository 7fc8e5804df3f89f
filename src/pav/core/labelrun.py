"""The layout of a label run directory (`pav label`, `pav import-labels`): the one place its files
and folders are named, for every writer and reader.

::

    problems.jsonl                 the labelled problems with their prompts (Problem records)
    solutions/shard-00000.jsonl    seed solutions of shard 0 (Solution records)
    labels/shard-00000.parquet     their step labels (StepLabel records); written last: the shard is done

A shard is finished once its labels file exists; a kill can leave ``.shard-*.tmp`` files of an
unfinished write, which `stale_temps` lists. The run itself carries the run tag and summary of
`pav.core.rundir` (stage ``label`` or ``import``, schema version).
"""

from __future__ import annotations

from pathlib import Path

from pav.core.io import read_jsonl
from pav.core.records import Problem, Solution

PROBLEMS_FILE = "problems.jsonl"
SOLUTIONS_DIR = "solutions"
LABELS_DIR = "labels"
STAGES = ("label", "import")  # the stages whose run directories are label runs


def check_label_run(path: str | Path, what: str = "labels") -> Path:
    """``path`` if it is a finished label run of this schema, else a one-line `RunFormatError`."""
    from pav.core.rundir import check_run

    return check_run(path, what, STAGES, "label")


def problems_path(run: str | Path) -> Path:
    return Path(run) / PROBLEMS_FILE


def shard_paths(run: str | Path, shard: int) -> tuple[Path, Path]:
    """(solutions file, labels file) of shard ``shard``."""
    run = Path(run)
    return run / SOLUTIONS_DIR / f"shard-{shard:05d}.jsonl", run / LABELS_DIR / f"shard-{shard:05d}.parquet"


def solution_files(run: str | Path, finished: bool = False) -> list[Path]:
    """Solutions files in shard order; ``finished``: only of shards whose labels file exists."""
    run = Path(run)
    files = sorted((run / SOLUTIONS_DIR).glob("shard-*.jsonl"))
    return [f for f in files if (run / LABELS_DIR / f"{f.stem}.parquet").exists()] if finished else files


def label_files(run: str | Path) -> list[Path]:
    """Labels files of the finished shards, in shard order."""
    return sorted((Path(run) / LABELS_DIR).glob("shard-*.parquet"))


def stale_temps(run: str | Path) -> list[Path]:
    """Temp files of shard writes cut short by a kill."""
    run = Path(run)
    return [*run.glob(f"{LABELS_DIR}/.shard-*.tmp"), *run.glob(f"{SOLUTIONS_DIR}/.shard-*.tmp")]


def read_problems(run: str | Path) -> list[Problem]:
    path = problems_path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {run} a `pav label` run directory?")
    return read_jsonl(path, Problem)


def read_solutions(run: str | Path, finished: bool = False) -> list[Solution]:
    """Every seed solution of the run in shard order (``finished``: of finished shards only)."""
    return [s for f in solution_files(run, finished) for s in read_jsonl(f, Solution)]
