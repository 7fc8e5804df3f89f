"""Loading a policy by name: a `pav sft` (or `pav rl`) run directory, a model directory or a hub name.

The one place that turns a user's ``policy=...`` string into a model, so every stage and bench
script resolves run directories, ids and backends alike.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from pav.core.rundir import RUN_TAG, readable_run, run_tag
from pav.policies.base import PolicyLoadError
from pav.policies.gguf import is_gguf, local_model_dir
from pav.policies.options import LoadOptions


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # 'gpt2', 'org/name'


def resolve_model_dir(name: str) -> str:
    """A `pav sft`/`pav rl` run directory stands for its `policy/` folder, a ``.gguf`` file for its
    converted folder; anything else is passed through.

    A name that looks like a local path but does not exist, and a pav run that holds no policy (a
    label run, a verifier run), are a `PolicyLoadError` at once: they are never sent to the hub.
    """
    if is_gguf(name):
        return local_model_dir(name)  # converted once into a Hugging Face folder (pav.policies.gguf)
    path = Path(name).expanduser()
    if (path / "policy").is_dir():
        return str(readable_run(path, "policy") / "policy")
    if (path / RUN_TAG).is_file() and not (path / "config.json").is_file():
        stage = run_tag(path)[0] or "pav"
        raise PolicyLoadError(f"{name} is a {stage} run, which holds no policy: pass a `pav sft` or `pav rl` "
                              "run, a model directory or a hub name")
    if not path.exists() and not HUB_NAME.fullmatch(name):
        raise PolicyLoadError(f"no such model directory or file: {name} (a hub name looks like 'org/name')")
    return name


def policy_id(name: str) -> str:
    """A stable id: the folder name and a hash of its weights, or the hub name."""
    path = Path(resolve_model_dir(name))
    weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not weights:
        return name
    h = hashlib.sha256()
    for w in weights:
        h.update(w.read_bytes())
    label = path.parent.name if path.name == "policy" else path.name
    return f"{label}@{h.hexdigest()[:12]}"


def weights_stamp(name: str) -> tuple:
    """(file, size, mtime) of a local model's weights; () for a hub name or an empty name.
    Cheap to compute: a cache keyed by it reloads a policy retrained in place."""
    path = Path(resolve_model_dir(name)) if name else None
    if path is None or not path.is_dir():
        return ()
    return tuple((w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in sorted(path.glob("*.safetensors")))


def load_model(name: str, load: LoadOptions = LoadOptions()) -> tuple[Any, Any]:
    """(transformers model, tokenizer) of ``name`` on ``load.device``, for training or wrapping."""
    from pav.policies.hf import load_causal_lm

    return load_causal_lm(resolve_model_dir(name), **load.load_kwargs())


_ENGINES: dict[tuple, Any] = {}  # per process: one vLLM engine per model and settings (a start takes minutes)


def load_policy(name: str, batch_size: int, delimiter: str = "\n", load: LoadOptions = LoadOptions()):
    """A sampler of ``name``: an `HFPolicy` on ``load.device``, or with ``load.backend=vllm`` a `VLLMPolicy`
    (started once per process for a given model and settings: every search job of a run reuses it)."""
    if load.backend == "vllm":
        from pav.policies.vllm_backend import VLLMPolicy

        key = (resolve_model_dir(name), weights_stamp(name), delimiter, load.dtype, load.trust_remote_code,
               load.max_model_len)
        if key not in _ENGINES:
            _ENGINES[key] = VLLMPolicy(key[0], policy_id(name), delimiter=delimiter, dtype=load.dtype,
                                       trust_remote_code=load.trust_remote_code,
                                       max_model_len=load.max_model_len or None)
        return _ENGINES[key]
    from pav.policies.hf import HFPolicy

    model, tokenizer = load_model(name, load)
    return HFPolicy(model, tokenizer, policy_id=policy_id(name), device=load.resolved_device(),
                    batch_size=batch_size, delimiter=delimiter)
