"""The caps of `pav serve` (the ``limits`` section of its settings); no web stack at import."""

from __future__ import annotations

from dataclasses import dataclass, fields

from pav.core.config import knob


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = knob(1 << 20, "largest request body (413 above; a POST without Content-Length: 411)")
    max_items: int = knob(64, "solutions per request (422 above)")
    max_steps: int = knob(64, "steps per solution (422 above)")
    max_prompt_chars: int = knob(8000, "characters per prompt (422 above)")
    max_step_chars: int = knob(2000, "characters per step (422 above)")
    max_concurrent: int = knob(64, "requests in flight (503 at once above)")
    max_queue: int = knob(1024, "solutions waiting for the verifier (429 at once above)")
    max_batch: int = knob(64, "solutions per verifier batch (requests arriving together share batches)")
    max_wait_ms: float = knob(5.0, "how long a batch waits for more requests once it has one")

    def __post_init__(self) -> None:
        if min(getattr(self, f.name) for f in fields(self) if f.name != "max_wait_ms") < 1 or self.max_wait_ms < 0:
            raise ValueError("every serve limit must be >= 1 (max_wait_ms >= 0)")
