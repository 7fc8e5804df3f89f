"""The HTTP service of `pav serve` (FastAPI): step rewards from a fixed verifier.

Routes:
- ``POST /score``: ``{"items": [{"prompt": str, "steps": [str, ...]}, ...], "alpha": float >= 0?}`` →
  per item ``q_base``, ``q_prover``, ``adv_prover``, ``effective_reward`` (one number per step;
  ``null`` for a step past the verifier's window) and ``outcome``;
- ``POST /openrlhf``: OpenRLHF's remote reward-model contract (`pav.serve.openrlhf`): ``{"query":
  [full text, ...], "prompts": [prompt, ...], "labels": [gold answer or null, ...]?}`` →
  ``{"rewards", "scores", "extra_logs"}``, one reward per text: the configured reduction of its step
  rewards, with the checked outcome on the final step when its label is a gold answer
  (`pav.serve.graded`); a query without its prompt, a response with no steps or a label the task
  cannot grade is a 422 that says so;
- ``GET /health``, ``GET /metrics`` (Prometheus text).

Limits (`pav.serve.limits.ServeLimits`, all configurable): request body size (413), items per request, steps per
item and characters per prompt and per step (422), requests in flight (503 at once when full) and
solutions queued for the verifier (429 at once when full). With a token set, every route requires
``Authorization: Bearer <token>`` (401 otherwise). Error bodies name the field and the rule,
never the submitted values.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

from pav.serve.batcher import Batcher, Overloaded, ScoringFailed
from pav.serve import openrlhf as openrlhf_contract
from pav.serve.graded import GoldAnswerError, load_task
from pav.serve.limits import ServeLimits
from pav.serve.reduce import REDUCTIONS


log = logging.getLogger(__name__)
ROUTES = ("/score", "/openrlhf", "/health", "/metrics")


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    steps: list[str]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]
    alpha: float | None = None


class OpenRLHFRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenRLHF may send more fields in later versions
    query: list[str]
    prompts: list[str]
    labels: list[StrictStr | StrictInt | None] | None = None  # an integer gold answer (a JSON dataset's 42) reads as "42"


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def build_app(scorer: Any, *, alpha: float, k: int | None, delimiter: str, reduction: str = "min",
              token: str = "", limits: ServeLimits = ServeLimits(), verifier_id: str = "", task: Any = None) -> FastAPI:
    """The service over ``scorer`` (a `pav.verifier.scorer.Scorer`); ``task`` grades /openrlhf labels
    (`pav.serve.graded.load_task`: a Task, a TaskConfig, or None for the built-in task)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    tokenizer = getattr(getattr(scorer, "pqv", None), "tokenizer", None)  # to refuse text it cannot encode
    special = openrlhf_contract.special_tokens_of(scorer)
    task = load_task(task, tokenizer)
    batcher = Batcher(scorer.score, max_batch=limits.max_batch, max_wait_s=limits.max_wait_ms / 1000,
                      max_queue=limits.max_queue)
    counts: Counter[tuple[str, int]] = Counter()
    timing = {"seconds": 0.0, "requests": 0}
    state = {"in_flight": 0, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="pav serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    app.add_middleware(_Guard, token=token, limits=limits, state=state, counts=counts, timing=timing)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        fields = [{"field": _location(e.get("loc", ())), "problem": e.get("type", "invalid")} for e in exc.errors()[:10]]
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused):
        return _error(exc.status, exc.message)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "verifier": verifier_id, "alpha": alpha, "k": k, "reduction": reduction,
                "queued": batcher.queued, "uptime_s": round(time.time() - state["started"], 1)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        s = batcher.stats
        lines = [f'pav_requests_total{{route="{route}",status="{status}"}} {n}' for (route, status), n in
                 sorted(counts.items())]
        lines += [f'pav_request_seconds_max{{status="{code}"}} {v:.6f}'
                  for code, v in sorted(timing.get("max_by_status", {}).items())]
        lines += [f"pav_request_seconds_sum {timing['seconds']:.6f}", f"pav_request_seconds_count {timing['requests']}",
                  f"pav_requests_in_flight {state['in_flight']}", f"pav_solutions_queued {batcher.queued}",
                  f"pav_batches_total {s.batches}", f"pav_solutions_scored_total {s.solutions}",
                  f"pav_batch_seconds_sum {s.seconds:.6f}", f"pav_batch_largest {s.largest}"]
        return "\n".join(lines) + "\n"

    @app.post("/score")
    async def score(req: ScoreRequest) -> dict[str, Any]:
        a = alpha if req.alpha is None else req.alpha
        if not math.isfinite(a) or a < 0:  # the effective reward's α weighs progress; it is never negative
            raise _Refused(422, "alpha must be a finite number >= 0")
        _check_items([i.prompt for i in req.items], [i.steps for i in req.items], limits, delimiter, tokenizer)
        results = await _score(batcher, [i.prompt for i in req.items], [i.steps for i in req.items])
        return {"alpha": a, "k": k, "results": [_scores_json(r, a) for r in results]}

    @app.post("/openrlhf")
    async def openrlhf(req: OpenRLHFRequest) -> dict[str, Any]:
        try:
            parsed = openrlhf_contract.parse(req.query, req.prompts, req.labels, delimiter, special)
        except openrlhf_contract.BadRequest as exc:
            raise _Refused(422, str(exc)) from None
        _check_items(parsed.prompts, parsed.steps, limits, delimiter, tokenizer)
        outcomes = await _outcomes(task, parsed)
        results = await _score(batcher, parsed.prompts, parsed.steps)
        return {**openrlhf_contract.reply(results, outcomes, alpha, reduction), "reduction": reduction}

    return app


class _Guard:
    """Plain ASGI middleware (cheap, so refusals stay fast under load): token, body size and
    requests in flight are checked before the app runs; every answer is counted by route and status."""

    def __init__(self, app: Any, *, token: str, limits: ServeLimits, state: dict, counts: Counter,
                 timing: dict) -> None:
        self.app, self.token, self.limits, self.state, self.counts, self.timing = app, token, limits, state, counts, timing

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                return await refusal(scope, receive, counted_send)
            self.state["in_flight"] += 1
            try:
                await self.app(scope, receive, counted_send)
            finally:
                self.state["in_flight"] -= 1
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded metric labels
            self.counts[(route, status[0])] += 1
            took = time.perf_counter() - start
            self.timing["seconds"] += took
            self.timing["requests"] += 1
            slowest = self.timing.setdefault("max_by_status", {})
            slowest[status[0]] = max(slowest.get(status[0], 0.0), took)

    def _refusal(self, scope: dict) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token:
            given = headers.get("authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.token.encode())):
                return _error(401, "missing or wrong bearer token")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limits.max_body_bytes):
            return _error(413, f"request body over {self.limits.max_body_bytes} bytes")
        if scope["method"] == "POST" and length is None:
            return _error(411, "a Content-Length header is required")
        if self.state["in_flight"] >= self.limits.max_concurrent:
            return _error(503, "too many requests in flight; retry later", {"Retry-After": "1"})
        return None


async def _outcomes(task: Any, parsed: Any) -> list[float | None]:
    """Checked outcomes of the labelled responses, graded off the event loop (a grader may take seconds)."""
    if all(g is None or not g.strip() for g in parsed.golds):
        return [None] * len(parsed.golds)
    try:
        return await asyncio.to_thread(openrlhf_contract.outcomes_of, task, parsed)
    except GoldAnswerError as exc:
        raise _Refused(422, f"labels: {exc}") from None


async def _score(batcher: Batcher, prompts: list[str], steps: list[list[str]]) -> list[Any]:
    try:
        return await batcher.score(prompts, steps)
    except Overloaded:
        raise _Refused(429, "the verifier queue is full; retry later") from None
    except ScoringFailed:
        log.exception("scoring failed")
        raise _Refused(500, "the verifier failed on this batch; see the server log") from None


def _check_items(prompts: list[str], steps: list[list[str]], limits: ServeLimits, delimiter: str,
                 tokenizer: Any = None) -> None:
    if not prompts:
        raise _Refused(422, "no items")
    if len(prompts) > limits.max_items:
        raise _Refused(422, f"more than {limits.max_items} items")
    for i, (p, st) in enumerate(zip(prompts, steps)):
        if len(p) > limits.max_prompt_chars:
            raise _Refused(422, f"item {i}: prompt over {limits.max_prompt_chars} characters")
        if len(st) > limits.max_steps:
            raise _Refused(422, f"item {i}: more than {limits.max_steps} steps")
        if any(len(s) > limits.max_step_chars for s in st):
            raise _Refused(422, f"item {i}: a step over {limits.max_step_chars} characters")
        if not p.endswith(delimiter):
            raise _Refused(422, f"item {i}: the prompt must end with the step delimiter {delimiter!r}")
        if any(delimiter in s or not s.strip() for s in st):
            raise _Refused(422, f"item {i}: a step is empty or contains the step delimiter {delimiter!r}")
        if tokenizer is not None:
            try:
                tokenizer(p + delimiter.join(st), add_special_tokens=False)
            except BaseException:  # noqa: BLE001 - a tokenizer's Rust panic is a BaseException
                raise _Refused(422, f"item {i}: the verifier's tokenizer cannot encode this text") from None


FIELD_NAMES = {"body", "items", "prompt", "steps", "alpha", "query", "prompts", "labels"}


def _location(loc: tuple) -> str:
    """A validation error's place, naming only our own fields and indices (a key the client made
    up is not repeated back)."""
    return ".".join(str(x) if isinstance(x, int) or x in FIELD_NAMES else "<unknown field>" for x in loc)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _numbers(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def _scores_json(r: Any, alpha: float) -> dict[str, Any]:
    return {"q_base": _numbers(r.q_base), "q_prover": _numbers(r.q_prover), "adv_prover": _numbers(r.adv_prover),
            "effective_reward": _numbers(r.effective_reward(alpha)),
            "outcome": float(r.outcome) if np.isfinite(r.outcome) else None}
