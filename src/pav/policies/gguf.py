"""GGUF checkpoints (llama.cpp's format) wherever pav takes a model path.

A path ending in ``.gguf`` is read once with transformers' GGUF loader (``gguf_file=``, which
dequantizes every tensor to float32) and written as a plain Hugging Face folder (safetensors,
config, tokenizer with its chat template) under ``$PAV_CACHE/gguf/<sha256[:16]>``
(``PAV_CACHE`` defaults to ``~/.cache/pav``). The folder is keyed on the file's content, so a
re-downloaded or renamed copy of the same weights reuses it, and a changed file is converted
again. From then on every stage (policy, prover, verifier backbone, SFT init, RL start) loads
that folder like any other; nothing is sent to the Hugging Face hub. The conversion is written
to a temporary folder and renamed into place, so concurrent workers never see half a folder.

Quantized weights are not kept quantized: a Q4_1 file becomes a float32 model (the quality lost
to quantization stays lost; the memory saving does not survive).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pav.policies.base import PolicyLoadError

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
MAGIC = b"GGUF"  # the first four bytes of every GGUF file
DONE = ".pav-converted"  # written last into a finished folder


def is_gguf(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a GGUF file (by its suffix; the file need not exist)."""
    return str(name).lower().endswith(SUFFIX)


def cache_root() -> Path:
    """Where converted GGUF models live: ``$PAV_CACHE/gguf`` (default ``~/.cache/pav/gguf``)."""
    return Path(os.environ.get("PAV_CACHE") or Path.home() / ".cache" / "pav").expanduser() / "gguf"


def local_model_dir(name: str | os.PathLike) -> str:
    """``name`` itself, or for a ``.gguf`` path its converted Hugging Face folder (see the module
    docstring). Raises `PolicyLoadError` for a missing or unreadable GGUF file."""
    return str(converted_dir(name)) if is_gguf(name) else str(name)


def converted_dir(path: str | os.PathLike, cache: Path | None = None) -> Path:
    """The Hugging Face folder of the GGUF file ``path``, converted on first use."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PolicyLoadError(f"no such GGUF file: {path}")
    _check_readable(path)
    out = (cache or cache_root()) / _sha256(path)[:16]
    if (out / DONE).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a Hugging Face folder in %s (once)", path, out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # renamed to `out` when complete
    try:
        _convert(path, tmp)
        (tmp / DONE).write_text(str(path) + "\n")
        try:
            tmp.rename(out)
        except OSError:  # another process finished first, or a stale unfinished folder is in the way
            if not (out / DONE).is_file():
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_readable(path: Path) -> None:
    """Refuse a file that is not GGUF, or whose header and tensor table cannot be read (cut short, corrupt)."""
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise PolicyLoadError(f"{path} is not a GGUF file (it does not start with {MAGIC.decode()!r})")
    from gguf import GGUFReader

    try:
        GGUFReader(path)  # memory-mapped: reads the header and tensor table, not the weights
    except Exception as err:  # noqa: BLE001 - a user's file: the reader raises anything on bad bytes
        raise PolicyLoadError(f"could not read GGUF file {path} (cut short or corrupt): {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _convert(path: Path, out: Path) -> None:
    """REAL_MODEL recipe: load through ``gguf_file``, then re-save without the GGUF quantization
    config (``save_pretrained`` refuses a GGUF-loaded model, and the config would claim gguf)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **kwargs)
    except Exception as err:  # noqa: BLE001 - a user's file: the reader raises anything on bad bytes
        raise PolicyLoadError(f"could not read GGUF file {path}: {_first_line(err)}") from err
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """Content hash, read once per process while the file's size and mtime stay the same."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
