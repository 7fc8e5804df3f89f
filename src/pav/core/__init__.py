"""Foundations every stage shares: record types, atomic file I/O with schema versions, config
dataclasses (defaults -> preset -> CLI), seeding, metrics logging and run directories.

Nothing here imports torch; pyarrow is imported only when a Parquet file is read or written.
"""

from pav.core.config import ConfigError, apply_overrides, describe, knob, load_config, resolve, save_config
from pav.core.io import read_jsonl, read_parquet, write_json, write_jsonl, write_parquet
from pav.core.metrics import MetricsLogger, read_metrics
from pav.core.records import SCHEMA_VERSION, Problem, RecordError, Solution, StepLabel
from pav.core.rundir import RunExistsError, is_complete, mark_complete, prepare_run_dir
from pav.core.seeding import derive_seed, seed_everything

__all__ = [
    "SCHEMA_VERSION", "ConfigError", "MetricsLogger", "Problem", "RecordError", "RunExistsError",
    "Solution", "StepLabel", "apply_overrides", "derive_seed", "describe", "is_complete", "knob",
    "load_config", "mark_complete", "prepare_run_dir", "read_jsonl", "read_metrics", "read_parquet",
    "resolve", "save_config", "seed_everything", "write_json", "write_jsonl", "write_parquet",
]
