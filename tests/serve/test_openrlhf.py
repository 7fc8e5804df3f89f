"""OpenRLHF's own reward client against pav: its `SingleTurnAgentExecutor` (the code that runs inside
OpenRLHF's rollout workers) POSTs to a running `pav serve`, and loads examples/openrlhf_reward_func.py
on its local path; the rewards it keeps equal pav's /score numbers (needs `pip install -e ".[openrlhf]"`)."""

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

agent = pytest.importorskip("openrlhf.utils.agent", reason="OpenRLHF is not installed (pip install -e '.[openrlhf]')")

from pav.policies.tokenizer import build_char_tokenizer  # noqa: E402
from pav.serve.reduce import reduce_steps  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openrlhf_reward_func.py"
PROMPT = "2 to 4 mod 10 ops +3 *2 max 1\n"
RESPONSES = {"right": "2*2=4\nans 4\n", "wrong": "2+3=5\nans 5\n", "unfinished": "2*2=4\n"}


class Engine:
    """Stands in for OpenRLHF's vLLM engine: 'generates' a fixed response, ending with the EOS."""

    def __init__(self, tokenizer, response):
        self.ids = tokenizer(response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(self.ids), finish_reason="stop", logprobs=None)])


def execute(executor, response, label):
    tok = build_char_tokenizer()
    params = SimpleNamespace(max_tokens=32, logprobs=None)
    return asyncio.run(executor.execute(PROMPT, label, params, 128, tok, Engine(tok, response)))


@pytest.fixture(scope="module")
def served(scorer):
    """pav serve's app on a real port (uvicorn in a thread: the CLI process is tested in test_service.py)."""
    import uvicorn

    from pav.serve.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(scorer, alpha=0.5, k=4, delimiter="\n", reduction="min")  # OpenRLHF's client sends no token
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(30)


def expected(url, response, outcome):
    """min over steps of /score's effective rewards, the final step's Q^pi and A^mu from the outcome if graded."""
    steps = [s for s in response.split("\n") if s]
    got = httpx.post(url + "/score", json={"items": [{"prompt": PROMPT, "steps": steps}], "alpha": 0.5}, timeout=30)
    r = got.json()["results"][0]
    rewards = list(r["effective_reward"])
    if outcome is not None:
        before = r["q_prover"][-1] - r["adv_prover"][-1]
        rewards[-1] = outcome + 0.5 * (outcome - before)
    return reduce_steps(np.array(rewards), r["outcome"], "min")


def test_openrlhfs_executor_gets_pavs_rewards_over_http(served):
    executor = agent.SingleTurnAgentExecutor(served + "/openrlhf")
    for name, label, outcome in (("right", "4", 1.0), ("wrong", "4", 0.0), ("unfinished", "", None)):
        out = execute(executor, RESPONSES[name], label)
        assert out["reward"] is not None, name  # OpenRLHF turns an error reply into None, silently
        assert out["reward"] == pytest.approx([expected(served, RESPONSES[name], outcome)]), name
        assert out["scores"] == out["reward"]
        logs = out["extra_logs"]
        assert logs["pav/steps"] == [len(RESPONSES[name].splitlines())] and logs["pav/graded"] == [float(outcome is not None)]
        if outcome is not None:
            assert logs["pav/outcome"] == [outcome]


def test_openrlhfs_local_reward_func_path_matches_the_server(served, verifier_dir, monkeypatch):
    """The same verifier, loaded from its files by the reward_func file, answers as the server does."""
    monkeypatch.setenv("PAV_VERIFIER", str(verifier_dir))
    monkeypatch.setenv("PAV_REDUCTION", "min")
    local = agent.SingleTurnAgentExecutor(str(EXAMPLE))
    remote = agent.SingleTurnAgentExecutor(served + "/openrlhf")
    for name, label in (("right", "4"), ("wrong", "4"), ("unfinished", None)):
        a, b = execute(local, RESPONSES[name], label), execute(remote, RESPONSES[name], label)
        assert a["reward"] == pytest.approx(b["reward"]) and a["extra_logs"].keys() == b["extra_logs"].keys(), name
        assert all(a["extra_logs"][k] == pytest.approx(b["extra_logs"][k]) for k in a["extra_logs"]), name
