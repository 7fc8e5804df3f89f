"""Verifier checkpoints: atomic, checksummed, and resumable to the exact training trajectory.

A checkpoint (``<out>/checkpoints/step-XXXXXXXX/``) is a loadable verifier directory plus
``optimizer.safetensors`` / ``optimizer.json`` (the optimizer state's tensors, flattened, and its
scalars), ``rng.safetensors`` (torch's CPU RNG state) and ``trainer.json`` (step, the sampler's
numpy Generator state, fingerprints of the trajectory-relevant config and of the data). It is
filled in a temp folder, every file is fsynced, a ``COMPLETE`` marker holding every file's SHA-256
is written last, and the folder is renamed into place. `resume` restores the newest checkpoint
that passes every check and names each skipped one with its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from pav.core.checkpoint import flatten_optimizer, unflatten_optimizer, write_dir_atomically
from pav.core.io import write_json
from pav.verifier.data import ExampleSampler
from pav.verifier.model import WEIGHTS_FILE, ValueVerifier

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
CHECKPOINTS = "checkpoints"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be resumed, or they belong to another run."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(root: Path, step: int, verifier: ValueVerifier, opt: torch.optim.Optimizer,
                    sampler: ExampleSampler, fingerprint: dict[str, str], keep: int) -> Path:
    """Write ``root/step-XXXXXXXX`` atomically with its marker last; keep the newest ``keep``."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        verifier.save(tmp)
        tensors, scalars = flatten_optimizer(opt.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "optimizer.json", scalars)
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        write_json(tmp / "trainer.json", {"step": step, "sampler": sampler.state_dict(), "fingerprint": fingerprint})
        files = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        write_json(tmp / MARKER, {"step": step, "files": files})

    path = root / f"step-{step:08d}"
    write_dir_atomically(path, fill)
    for old in _checkpoint_dirs(root)[keep:]:
        if (old / MARKER).is_file():
            shutil.rmtree(old)
    return path


def _checkpoint_dirs(root: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    return sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: p.name, reverse=True)


class _Unusable(Exception):
    """Why one checkpoint cannot be restored."""


def resume(root: Path, verifier: ValueVerifier, opt: torch.optim.Optimizer, sampler: ExampleSampler,
           fingerprint: dict[str, str], restart: bool) -> int:
    """Restore the newest usable checkpoint under ``root``; the step to continue from (0 if none)."""
    for stale in root.glob(".tmp-*"):
        log.info("removing %s, a checkpoint write cut short", stale)
        shutil.rmtree(stale, ignore_errors=True)
    candidates = _checkpoint_dirs(root)
    for path in candidates:
        try:
            state = read_checkpoint(path, verifier, opt)
        except _Unusable as why:
            log.warning("skipping checkpoint %s: %s", path, why)
            continue
        if state["trainer"]["fingerprint"] != fingerprint and not restart:
            raise CheckpointError(f"{path} was written with another training config or data "
                                  f"({state['trainer']['fingerprint']} vs {fingerprint}); use another output "
                                  "folder, or restart=True to train from scratch")
        if state["trainer"]["fingerprint"] != fingerprint:
            break
        _apply(state, verifier, opt, sampler)
        log.info("resuming verifier training from %s (step %d)", path, state["trainer"]["step"])
        return state["trainer"]["step"]
    if candidates and not restart:
        raise CheckpointError(f"{len(candidates)} checkpoint(s) in {root} and none can be resumed (see the "
                              "warnings); fix or remove them, or pass restart=True to train from step 0")
    if candidates:
        log.warning("restart: ignoring the checkpoints in %s and training from step 0", root)
        shutil.rmtree(root)
    return 0


def read_checkpoint(path: Path, verifier: ValueVerifier, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load and check a checkpoint without touching the model; raises _Unusable naming why."""
    from safetensors.torch import load_file

    marker = path / MARKER
    if not marker.is_file():
        raise _Unusable(f"missing {MARKER} marker (an incomplete write)")
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _Unusable(f"unreadable {MARKER} marker: {exc}") from None
    for name, digest in files.items():
        if not (path / name).is_file():
            raise _Unusable(f"missing file {name}")
        if _sha256(path / name) != digest:
            raise _Unusable(f"checksum mismatch in {name} (corrupt file)")
    loaded: dict[str, Any] = {}
    for key, name in (("model", WEIGHTS_FILE), ("opt_tensors", "optimizer.safetensors"), ("rng", "rng.safetensors")):
        try:
            loaded[key] = load_file(str(path / name))
        except Exception as exc:  # safetensors raises its own error types
            raise _Unusable(f"unreadable file {name}: {exc}") from None
    for key, name in (("opt_scalars", "optimizer.json"), ("trainer", "trainer.json")):
        try:
            loaded[key] = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _Unusable(f"unreadable file {name}: {exc}") from None
    _check_model_shapes(verifier, loaded["model"])
    loaded["optimizer"] = unflatten_optimizer(loaded.pop("opt_tensors"), loaded.pop("opt_scalars"))
    _check_optimizer_shapes(opt, loaded["optimizer"])
    return loaded


def _check_model_shapes(verifier: ValueVerifier, state: dict[str, torch.Tensor]) -> None:
    own = verifier.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise _Unusable(f"shape mismatch: unexpected tensors {unknown[:3]}")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise _Unusable(f"shape mismatch: {name} is {tuple(tensor.shape)}, the model has {tuple(own[name].shape)}")
    stored = {own[name].data_ptr() for name in state}
    missing = [n for n in own if n not in state and own[n].data_ptr() not in stored]  # not a tied alias
    if missing:
        raise _Unusable(f"shape mismatch: missing tensors {missing[:3]}")


def _check_optimizer_shapes(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    params = [p for group in opt.param_groups for p in group["params"]]
    sizes = [len(g["params"]) for g in state["param_groups"]]
    if sizes != [len(g["params"]) for g in opt.param_groups]:
        raise _Unusable(f"shape mismatch: optimizer groups hold {sizes} parameters")
    for pid, entry in state["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            if pid >= len(params) or (key in entry and entry[key].shape != params[pid].shape):
                raise _Unusable(f"shape mismatch: optimizer state {pid}.{key}")


def _apply(state: dict[str, Any], verifier: ValueVerifier, opt: torch.optim.Optimizer,
           sampler: ExampleSampler) -> None:
    verifier.load_state_dict(state["model"], strict=False)  # tied aliases were checked above
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch_cpu"])
    sampler.load_state_dict(state["trainer"]["sampler"])
