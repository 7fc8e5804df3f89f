"""Progress rewards as a service and as reward functions for other RL frameworks.

`reduce` turns per-step rewards into one scalar per solution (for trainers that take one);
`graded` puts a gold answer's checked outcome on a finished response's final step; `openrlhf` is
OpenRLHF's remote reward-model contract; `batcher` merges concurrent requests into verifier batches;
`app` is the HTTP service (`pav serve`: /score, /openrlhf, /health, /metrics) with its limits;
`adapters` are reward functions for TRL's GRPO/RLOO trainers and verl's token-level reward tensors;
`verl_manager` is verl's reward manager ``pav`` (imports verl); `stage` wires `pav serve`. FastAPI
and uvicorn are imported only by `app` and `stage`. See docs/integrations.md.
"""
