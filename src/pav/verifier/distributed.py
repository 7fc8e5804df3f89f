"""Data-parallel verifier training across processes, through Hugging Face `accelerate`.

Launched as ``accelerate launch --multi_gpu --num_processes N -m pav.cli train-verifier ...``
(or torchrun), every process runs the same loop; ``--set load.device=cpu`` (the default) makes
the processes CPU ranks that talk over gloo, ``load.device=cuda`` one GPU each. What each does differently, and why:

- every step all ranks draw the same global batch of ``train.batch_size`` solutions from one
  sampler (same seed, same state) and each takes the slice ``rank::world``, so the sampler state
  in a checkpoint is every rank's and a resumed run continues each rank's stream exactly;
- the loss of a rank is ``world · Σ_rank w·BCE / Σ_all w``; DDP averages gradients, so the update
  is the single-process update of the global batch (to float summation order; tested on 2 CPU
  processes with gloo);
- only rank 0 writes: run directory files, metrics, held-out evaluation, checkpoints, the final
  verifier. Every rank reads the same checkpoint when resuming.

Single-process runs never import accelerate or torch.distributed.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def world_size() -> int:
    """Processes of this run, as set by the launcher (1 when not launched distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Ranks:
    """This process's place in the run: rank, world size, and the few collective operations the loop uses."""

    def __init__(self, cpu: bool = True) -> None:
        """``cpu``: ranks run on the CPU with gloo (else on the launcher's accelerators, e.g. NCCL)."""
        self.accelerator = None
        if world_size() > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=cpu)

    @property
    def rank(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.process_index

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device the launcher gave this rank (None when not distributed)."""
        return None if self.accelerator is None else self.accelerator.device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` for the forward pass: DDP over it when distributed (parameters are shared)."""
        return model if self.accelerator is None else self.accelerator.prepare_model(model)

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a scalar tensor over ranks."""
        if self.accelerator is None:
            return value
        return self.accelerator.reduce(value.detach().clone(), reduction="sum")

    def share(self, rows: list[Any]) -> list[Any]:
        """This rank's slice of a global batch."""
        return rows[self.rank::self.world]

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
