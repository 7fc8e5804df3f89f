"""Optional LoRA for verifier training (peft): low-rank adapters on the backbone's linear layers.

With ``train.lora.r > 0`` the backbone's weights are frozen and peft adds rank-r adapters to its
linear layers; the value head and the log-prob feature head stay fully trained, and the frozen
reference gets no adapters. Checkpoints hold the adapters, so a killed run resumes as usual. When
training ends the adapters are merged into the backbone, so a saved verifier is an ordinary one:
`ValueVerifier.load` needs no peft and scoring costs what it costs without LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pav.core.config import knob


@dataclass(frozen=True)
class LoraOptions:
    r: int = knob(0, "LoRA rank of the backbone's adapters; 0: train the whole backbone")
    alpha: float = knob(16.0, "LoRA scaling numerator (the update is scaled by alpha / r)")
    dropout: float = knob(0.0, "dropout on the adapters' input")
    target_modules: str = knob("all-linear", "layers that get adapters: all-linear, or comma-separated module names")

    def __post_init__(self) -> None:
        if self.r < 0 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules.strip():
            raise ValueError("lora.r must be >= 0, lora.alpha > 0, 0 <= lora.dropout < 1, and target_modules set")


def add_lora(verifier: Any, opts: LoraOptions) -> None:
    """Wrap ``verifier.backbone`` with LoRA adapters in place (a no-op when ``opts.r`` is 0)."""
    if opts.r == 0:
        return
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise RuntimeError("LoRA needs peft: pip install 'pav[lora]'") from e
    targets = opts.target_modules if opts.target_modules == "all-linear" else \
        [m.strip() for m in opts.target_modules.split(",") if m.strip()]
    from transformers.pytorch_utils import Conv1D

    conv1d = any(isinstance(m, Conv1D) for m in verifier.backbone.modules())  # GPT-2 stores weights transposed
    config = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout, target_modules=targets,
                        bias="none", fan_in_fan_out=conv1d)
    verifier.backbone = get_peft_model(verifier.backbone, config)


def has_lora(verifier: Any) -> bool:
    return hasattr(verifier.backbone, "merge_and_unload")


def merge_lora(verifier: Any) -> None:
    """Fold the adapters into the backbone's weights (a no-op without LoRA)."""
    if has_lora(verifier):
        verifier.backbone = verifier.backbone.merge_and_unload()
        verifier.backbone.requires_grad_(True)
