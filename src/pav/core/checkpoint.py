"""Training checkpoints on disk: folders written atomically, and optimiser states as safetensors.

A checkpoint folder is filled under a temp name beside its destination, every file is fsynced and
the folder is renamed into place, so a kill leaves either the whole checkpoint or none (a stale
``.tmp-*`` folder at most, which no reader lists). Optimiser state dicts are split into their
tensors (saved with safetensors, never pickled) and their JSON scalars. torch is imported only by
the callers that pass tensors in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def remove_cut_writes(root: Path) -> None:
    """Delete the ``.tmp-*`` folders under ``root`` that a kill left mid-write (call on resume)."""
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_dir_atomically(dst: Path, fill: Callable[[Path], Any]) -> None:
    """``fill`` a temp folder beside ``dst``, fsync every file, then rename it to ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".tmp-{dst.name}-"))
    try:
        fill(tmp)
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if dst.exists():  # same step written again (a rerun of a finished run): replace it
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".tmp-old-{dst.name}-"))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dst)
        _fsync(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # directories cannot be fsynced everywhere
        pass
    finally:
        os.close(fd)


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optimizer state dict -> ({"<param>.<key>": tensor}, JSON of param groups and scalars)."""
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if hasattr(value, "detach"):  # a tensor
                tensors[f"{pid}.{key}"] = value.detach().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[key] = value
    return tensors, scalars


def unflatten_optimizer(tensors: dict[str, Any], scalars: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten_optimizer`: a state dict ``optimizer.load_state_dict`` takes."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(entry) for pid, entry in scalars["state"].items()}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": scalars["param_groups"]}


def checkpoint_dirs(root: Path, prefix: str) -> list[Path]:
    """``root/<prefix>-XXXXXXXX`` folders, newest first (temp folders of a killed write excluded)."""
    return sorted(root.glob(f"{prefix}-*"), reverse=True) if root.is_dir() else []


def prune(root: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in checkpoint_dirs(root, prefix)[keep:]:
        shutil.rmtree(old)
