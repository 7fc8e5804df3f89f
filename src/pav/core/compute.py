"""Compute accounting shared by every stage that samples or scores: what was spent, in tokens.

``generated``: tokens the policy sampled (the x-axis of pav's compute comparisons, the paper, §4.1 and App. C:
beam search pays for all C candidates of every beam element, best-of-N for all N solutions);
``encoded``: context tokens the policy encoded (each distinct context once per sampler call);
``scored``: tokens a verifier read (every model's forward pass counts). ``samples``: sequences
sampled (solutions for best-of-N, candidate steps for beam search).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Compute:
    generated: int = 0
    encoded: int = 0
    scored: int = 0
    samples: int = 0

    def add(self, *, generated: int = 0, encoded: int = 0, scored: int = 0, samples: int = 0) -> None:
        self.generated += generated
        self.encoded += encoded
        self.scored += scored
        self.samples += samples

    def __add__(self, other: Compute) -> Compute:
        return Compute(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
