"""Progress rewards as a service and as reward functions for other RL frameworks.

`reduce` turns per-step rewards into one scalar per solution (for trainers that take one);
`batcher` merges concurrent requests into verifier batches; `app` is the HTTP service (`pav serve`:
/score, an OpenRLHF-compatible /openrlhf, /health, /metrics) with its limits; `adapters` are reward
functions for TRL's GRPO/RLOO trainers and verl's token-level reward tensors; `stage` wires
`pav serve`. FastAPI and uvicorn are imported only by `app` and `stage`.
"""
