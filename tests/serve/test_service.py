"""`pav serve`: the routes answer what the scorer computes, limits and auth hold, errors never echo
input, concurrent requests share verifier batches, overload is refused at once, and a real
`pav serve` process answers an OpenRLHF-style client."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from fastapi.testclient import TestClient

from pav.serve.app import build_app
from pav.serve.limits import ServeLimits
from pav.serve.reduce import reduce_steps

PROMPT = "0 to 8 mod 10 ops +3 *2 max 5\n"
ITEMS = [{"prompt": PROMPT, "steps": ["0+3=3", "3*2=6"]}, {"prompt": PROMPT, "steps": ["0*2=0"]}]


def client(scorer, **kw):
    return TestClient(build_app(scorer, alpha=0.5, k=4, delimiter="\n", **kw))


def test_score_returns_the_scorers_numbers(scorer):
    with client(scorer) as c:
        res = c.post("/score", json={"items": ITEMS, "alpha": 0.25})
    assert res.status_code == 200
    body = res.json()
    direct = scorer.score([i["prompt"] for i in ITEMS], [i["steps"] for i in ITEMS])
    assert body["alpha"] == 0.25 and body["k"] == 4
    for got, want in zip(body["results"], direct):
        for key in ("q_base", "q_prover", "adv_prover"):
            assert np.allclose(got[key], getattr(want, key), atol=1e-6)
        assert np.allclose(got["effective_reward"], want.effective_reward(0.25), atol=1e-6)
        assert got["outcome"] == pytest.approx(want.outcome)


def test_openrlhf_gives_one_reduced_reward_per_text(scorer):
    queries = [PROMPT + "0+3=3\n3*2=6\n", PROMPT + "0*2=0\n"]
    with client(scorer, reduction="min") as c:
        res = c.post("/openrlhf", json={"query": queries, "prompts": [PROMPT, PROMPT]})
        unlabelled = c.post("/openrlhf", json={"query": queries, "prompts": [PROMPT, PROMPT], "labels": [None, ""]})
    assert res.status_code == 200 and unlabelled.json() == res.json()
    direct = scorer.score([PROMPT, PROMPT], [["0+3=3", "3*2=6"], ["0*2=0"]])
    want = [reduce_steps(d.effective_reward(0.5), d.outcome, "min") for d in direct]
    body = res.json()
    assert body["rewards"] == pytest.approx(want) and body["scores"] == body["rewards"]
    logs = body["extra_logs"]  # one number per query under every key, as OpenRLHF stacks them
    assert logs["pav/steps"] == [2.0, 1.0] and logs["pav/graded"] == [0.0, 0.0]
    assert logs["pav/step_min"] == pytest.approx(want)
    assert logs["pav/step_last"][0] == pytest.approx(direct[0].effective_reward(0.5)[-1])


SHORT = "2 to 4 mod 10 ops +3 *2 max 1\n"  # short enough for the tiny verifier's 64-character window


def test_a_label_puts_the_checked_outcome_on_the_final_step(scorer):
    """The final step's Q^pi is the outcome and its A^mu = outcome - Q^mu(prefix before it), as pav rl's graded_final."""
    steps = [["2*2=4", "ans 4"], ["2+3=5", "ans 5"]]  # right, wrong
    with client(scorer, reduction="last") as c:
        res = c.post("/openrlhf", json={"query": [SHORT + "\n".join(s) for s in steps], "prompts": [SHORT] * 2,
                                        "labels": ["4", "4"]})
    assert res.status_code == 200, res.text
    body = res.json()
    for got, d, outcome in zip(body["rewards"], scorer.score([SHORT] * 2, steps), (1.0, 0.0)):
        before = d.q_prover[-1] - d.adv_prover[-1]
        assert got == pytest.approx(outcome + 0.5 * (outcome - before))
    assert body["extra_logs"]["pav/outcome"] == [1.0, 0.0] and body["extra_logs"]["pav/graded"] == [1.0, 1.0]


def test_bad_openrlhf_requests_get_a_4xx_that_says_why(scorer):
    q, ok = PROMPT + "0+3=3\n", {"query": [PROMPT + "0+3=3\n"], "prompts": [PROMPT], "labels": ["8"]}
    cases = {
        "missing query": ({"prompts": [PROMPT]}, 422, "query"),
        "prompts/query lengths": ({"query": [q, q], "prompts": [PROMPT]}, 422, "same length"),
        "labels length": ({**ok, "labels": ["8", "8"]}, 422, "labels"),
        "non-string query": ({**ok, "query": [7]}, 422, "query.0"),
        "non-string label": ({**ok, "labels": [["8"]]}, 422, "labels.0"),
        "integer label": ({**ok, "labels": [8]}, 200, "rewards"),
        "no steps": ({**ok, "query": [PROMPT + "\n \n"]}, 422, "no steps"),
        "only an eos": ({**ok, "query": [PROMPT + "<eos>"]}, 422, "no steps"),
        "steps then an eos": ({**ok, "query": [PROMPT + "0+3=3<eos><pad>"]}, 200, "rewards"),
        "query without its prompt": ({**ok, "query": ["0+3=3\n"]}, 422, "prompt"),
        "label not the problem's answer": ({**ok, "labels": ["7"]}, 422, "label"),
        "oversized body": ({**ok, "query": [PROMPT + "0+3=3\n" * 200_000]}, 413, "bytes"),
    }
    with client(scorer) as c:
        assert c.post("/openrlhf", json=ok).status_code == 200
        for name, (body, status, reason) in cases.items():
            res = c.post("/openrlhf", json=body)
            assert (res.status_code, reason in res.text) == (status, True), (name, res.text)
        assert c.post("/openrlhf", content=b'{"query": [', headers={"content-type": "application/json"}).status_code == 422


def test_limits_answer_with_their_status(scorer):
    limits = ServeLimits(max_body_bytes=2000, max_items=2, max_steps=3, max_step_chars=10)
    with client(scorer, limits=limits) as c:
        assert c.post("/score", json={"items": ITEMS * 2}).status_code == 422  # 4 items
        assert c.post("/score", json={"items": [{"prompt": "p", "steps": ["x"] * 4}]}).status_code == 422
        assert c.post("/score", json={"items": [{"prompt": "p", "steps": ["x" * 11]}]}).status_code == 422
        assert c.post("/score", json={"items": [{"prompt": "p" * 3000, "steps": ["x"]}]}).status_code == 413
        assert c.post("/score", json={"items": []}).status_code == 422
        assert c.post("/score", json={"items": ITEMS, "alpha": "NaN"}).status_code == 422
        assert c.post("/score", json={"items": [{"prompt": "\n", "steps": []}], "alpha": -1.0}).status_code == 422
        assert c.post("/score", json={"items": ITEMS}).status_code == 200


def test_errors_never_echo_the_input(scorer):
    secret = "SECRET-7f3a"
    with client(scorer) as c:
        for payload in ({"items": [{"prompt": 12, "steps": [secret]}], secret: 1},
                        {"items": [{"prompt": secret, "steps": secret}]}, {"items": secret}):
            res = c.post("/score", json=payload)
            assert res.status_code == 422 and secret not in res.text
        res = c.post("/score", content=b"{" + secret.encode(), headers={"content-type": "application/json"})
        assert res.status_code == 422 and secret not in res.text


def test_a_token_guards_every_route(scorer):
    with client(scorer, token="t0ken") as c:
        for method, path in (("get", "/health"), ("get", "/metrics"), ("post", "/score")):
            assert getattr(c, method)(path, **({"json": {"items": ITEMS}} if method == "post" else {})).status_code == 401
        assert c.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/score", json={"items": ITEMS}, headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200
        metrics = c.get("/metrics", headers={"Authorization": "Bearer t0ken"}).text
        assert 'pav_requests_total{route="/score",status="200"} 1' in metrics
        assert 'route="/score",status="401"' in metrics


class SlowScorer:
    """The real scorer behind a gate, to hold requests in flight."""

    def __init__(self, scorer):
        self.scorer, self.gate, self.calls = scorer, threading.Event(), []

    def score(self, prompts, steps):
        self.gate.wait(10)
        self.calls.append(len(prompts))
        return self.scorer.score(prompts, steps)


async def _burst(app, n, payload):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            tasks = [asyncio.create_task(c.post("/score", json=payload)) for _ in range(n)]
            await asyncio.sleep(1.0)
            statuses_early = [t.result().status_code for t in tasks if t.done()]
            app.state.release()
            return statuses_early, [(await t).status_code for t in tasks]


def _gated_app(scorer, **limits):
    slow = SlowScorer(scorer)
    app = build_app(slow, alpha=0.5, k=4, delimiter="\n", limits=ServeLimits(max_batch=64, max_wait_ms=50, **limits))
    app.state.release = slow.gate.set
    return app, slow


def test_a_full_queue_is_refused_at_once_and_waiting_requests_share_batches(scorer):
    app, slow = _gated_app(scorer, max_concurrent=64, max_queue=8)
    early, final = asyncio.run(_burst(app, 10, {"items": ITEMS}))
    # the queue holds 8 solutions (4 requests of 2), plus the first batch once the worker took it
    assert final.count(200) in (4, 5) and final.count(429) == 10 - final.count(200)
    assert sorted(early) == [429] * final.count(429)  # answered before the verifier was released
    assert sum(slow.calls) == 2 * final.count(200) and len(slow.calls) <= 2  # requests shared batches


def test_too_many_requests_in_flight_are_refused_at_once(scorer):
    app, slow = _gated_app(scorer, max_concurrent=2, max_queue=1000)
    early, final = asyncio.run(_burst(app, 10, {"items": ITEMS}))
    assert sorted(early) == [503] * 8 and final.count(200) == 2 and final.count(503) == 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pav_serve_answers_an_openrlhf_client_and_refuses_an_open_bind(verifier_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAV_SERVE_TOKEN": ""}
    refused = subprocess.run([sys.executable, "-m", "pav.cli", "serve", "--set", f"verifier={verifier_dir}",
                              "--set", "host=0.0.0.0"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "token" in refused.stderr
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pav.cli", "serve", "--set", f"verifier={verifier_dir}",
                             "--set", f"port={port}", "--set", "reduction=last"], env={**env, "PAV_SERVE_TOKEN": "s3"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer s3"}
        for _ in range(300):
            try:
                if httpx.get(url + "/health", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        # what OpenRLHF's remote_rm_fn sends: the full texts, their prompts and labels, as JSON
        queries = [PROMPT + "0+3=3\n3*2=6\n", PROMPT + "0*2=0\n"]
        res = httpx.post(url + "/openrlhf", json={"query": queries, "prompts": [PROMPT, PROMPT], "labels": [None, None]},
                         headers=headers, timeout=30)
        assert res.status_code == 200, res.text
        rewards = res.json()["rewards"]
        assert len(rewards) == 2 and all(0 <= r <= 1 for r in rewards)  # "last": the PQV's value of the solution
        assert httpx.post(url + "/openrlhf", json={"query": queries, "prompts": [PROMPT, PROMPT]},
                          timeout=30).status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


TEXT = st.text(alphabet=st.characters(max_codepoint=0x2FFFF), max_size=30)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4), max_leaves=10)
BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries({"items": st.lists(st.fixed_dictionaries(
        {"prompt": st.one_of(TEXT, TEXT.map(lambda t: t + "\n")), "steps": st.lists(TEXT, max_size=5)}), max_size=3)},
        optional={"alpha": st.floats(allow_nan=False, min_value=-5, max_value=5)}),
    st.fixed_dictionaries({"query": st.lists(TEXT, max_size=3), "prompts": st.lists(TEXT.map(lambda t: t + "\n"),
                                                                                      max_size=3)},
                          optional={"labels": st.lists(st.none() | TEXT | st.integers() | JSON, max_size=3)}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, route=st.sampled_from(["/score", "/openrlhf"]))
def test_fuzzed_bodies_never_get_a_5xx(scorer, body, route):
    with TestClient(build_app(scorer, alpha=0.5, k=4, delimiter="\n"), raise_server_exceptions=False) as c:
        res = c.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert res.status_code < 500, (body, res.text)


@settings(max_examples=300, deadline=None)
@given(queries=st.lists(TEXT | JSON, max_size=3), prompts=st.lists(TEXT | JSON, max_size=3),
       labels=st.none() | st.lists(st.none() | TEXT | st.integers() | JSON, max_size=3),
       tail=st.sampled_from(["", "<eos>", "<eos><pad>", " <eos>\n"]))
def test_the_openrlhf_parser_accepts_or_says_why(queries, prompts, labels, tail):
    """Any JSON the route can be sent is parsed into non-blank steps or refused with a BadRequest, nothing else."""
    from pav.serve.openrlhf import BadRequest, parse

    queries = [q + tail if isinstance(q, str) else q for q in queries]
    try:
        parsed = parse(queries, prompts, labels, "\n", ["<eos>", "<pad>"])
    except BadRequest as exc:
        assert str(exc)
        return
    assert len(parsed.steps) == len(queries) == len(parsed.golds)
    assert all(st and all(s.strip() and "\n" not in s and not s.endswith("<eos>") for s in st) for st in parsed.steps)


class Picky:
    """A scorer that fails on one prompt, to show a bad request fails alone."""

    def __init__(self, scorer):
        self.scorer, self.calls = scorer, 0

    def score(self, prompts, steps):
        self.calls += 1
        if any("BOOM" in p for p in prompts):
            raise RuntimeError("cannot score")
        return self.scorer.score(prompts, steps)


def test_a_request_the_verifier_fails_on_fails_alone(scorer):
    picky = Picky(scorer)
    app = build_app(picky, alpha=0.5, k=4, delimiter="\n", limits=ServeLimits(max_wait_ms=200))

    async def both():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await asyncio.gather(c.post("/score", json={"items": ITEMS}),
                                            c.post("/score", json={"items": [{"prompt": "BOOM\n", "steps": ["x"]}]}))

    good, bad = asyncio.run(both())
    assert good.status_code == 200 and bad.status_code == 500 and "BOOM" not in bad.text
    assert picky.calls == 3  # the shared batch, then each request alone
