"""`pav serve`: load a verifier and answer step-reward requests over HTTP (`pav.serve.app`).

Secure by default: binds to 127.0.0.1. A bearer token is read from the environment variable named
by ``token_env`` (never from the command line, where other users could read it in the process
list); binding to any other address without a token is refused. Every limit of `pav.serve.limits.ServeLimits` is
a setting here (``--set limits.max_items=128``).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

from pav.core.config import knob
from pav.policies.options import LoadOptions
from pav.serve.limits import ServeLimits
from pav.tasks.build import TASK_HELP, TaskConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    verifier: str = knob("", "the PQV: a `pav train-verifier` run or its verifier/ directory")
    k: int = knob(4, "prover μ = Best-of-K(π) of A^μ (0: use `prover`)")
    prover: str = knob("", "a verifier trained on the prover's own labels (when k = 0)")
    orm: str = knob("", "optional ORM for `outcome` (default: the PQV's value of the whole solution)")
    task: TaskConfig = knob(TaskConfig(), "the verifier's task: grades /openrlhf labels as gold answers (" + TASK_HELP + ")")
    alpha: float = knob(0.5, "default α of the effective reward Q^π + α·A^μ (a /score request may give its own)")
    reduction: Literal["min", "last", "mean", "sum", "outcome"] = knob(
        "min", "one reward per text for /openrlhf from the step rewards (pav.serve.reduce)")
    delimiter: str = knob("", "step delimiter that splits /openrlhf completions; empty: the verifier's own")
    host: str = knob("127.0.0.1", "address to bind; anything but loopback needs a token")
    port: int = knob(8000, "port to bind")
    token_env: str = knob("PAV_SERVE_TOKEN", "environment variable holding the bearer token (empty variable: none)")
    limits: ServeLimits = knob(ServeLimits(), "caps on requests, concurrency and the verifier queue")
    load: LoadOptions = knob(LoadOptions(), "how verifiers are loaded: device and dtype")
    threads: int = knob(1, "torch threads")

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_service(cfg: ServeConfig, token: str = ""):
    """The FastAPI app of ``cfg`` with its verifier loaded."""
    import torch

    from pav.serve.app import build_app
    from pav.verifier.load import load_scorer

    if not cfg.verifier:
        raise ValueError("serve needs --set verifier=PQV_RUN")
    cfg.load.check_trainable("serve")
    torch.set_num_threads(cfg.threads)
    scorer = load_scorer(cfg.verifier, k=cfg.k, prover=cfg.prover, orm=cfg.orm, load=cfg.load,
                         batch_size=cfg.limits.max_batch)
    return build_app(scorer, alpha=cfg.alpha, k=cfg.k or None, delimiter=cfg.delimiter or scorer.pqv.delimiter,
                     reduction=cfg.reduction, token=token, limits=cfg.limits, verifier_id=cfg.verifier, task=cfg.task)


def run_serve(cfg: ServeConfig) -> dict[str, Any]:
    """Serve until interrupted."""
    import uvicorn

    token = os.environ.get(cfg.token_env, "") if cfg.token_env else ""
    if not is_loopback(cfg.host) and not token:
        raise ValueError(f"binding to {cfg.host} exposes the service: set a bearer token in ${cfg.token_env or 'PAV_SERVE_TOKEN'} "
                         "(and --set token_env=... if you use another variable), or bind to 127.0.0.1")
    app = build_service(cfg, token)
    log.info("serve: %s on http://%s:%d (token %s; α %g, Bo%s prover, /openrlhf reduction %s)", cfg.verifier, cfg.host,
             cfg.port, "required" if token else "off", cfg.alpha, cfg.k or "-", cfg.reduction)
    # The imports and the model leave millions of long-lived objects: a full garbage collection over
    # them stalled the event loop for ~200 ms under load (refusals included). Frozen, they are skipped.
    gc.collect()
    gc.freeze()
    # uvicorn's own cap counts connections: kept far above ours (a last shield against connection floods),
    # so that under a burst the app keeps serving its max_concurrent requests and refuses the rest itself
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="error", limit_concurrency=cfg.limits.max_concurrent * 16,
                timeout_keep_alive=5)
    return {"host": cfg.host, "port": cfg.port}
