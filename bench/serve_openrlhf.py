"""`pav serve` under OpenRLHF's request pattern: one sample per request, many rollout workers at once.

OpenRLHF 0.11's ``SingleTurnAgentExecutor`` POSTs ``{"query": [prompt + response], "prompts":
[prompt], "labels": [label]}`` for every sample as soon as it is generated. This bench starts
`pav serve` (the built-in task's verifier at the demo size, untrained head: scoring costs the same
as a trained one) and sends ``--requests`` such requests from ``--clients`` concurrent clients,
each a built-in-task problem, an expert solution and its gold answer (after timing the verifier
alone per batch size), twice: with the service's
batching across concurrent requests (the default limits) and without it (``max_batch=1``). The
client is OpenRLHF's own (its executor's ``_fetch_rewards_via_http``, a new aiohttp session per
request, retrying errors) when OpenRLHF is installed, else the same request with httpx. Failures
are requests without a reward plus every non-200 answer the server counted (/metrics), so a retried
refusal still counts.

    .venv/bin/python bench/serve_openrlhf.py [--clients 64] [--requests 1000] [--verifier runs/pqv]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from reliability import tiny_verifier  # the demo-size verifier with an untrained head (bench/ is on sys.path)

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PAV_SERVE_TOKEN": ""}


def samples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(query, prompt, label) of ``n`` built-in-task problems with one expert solution each."""
    from pav.tasks.modreach import ModReach

    task, rng = ModReach(), random.Random(seed)
    out = []
    for p in task.problems(n, seed):
        prompt = task.prompt(p)
        out.append((prompt + "".join(s + "\n" for s in task.demonstrate(p, rng)), prompt, p.answer))
    return out


def client():
    """OpenRLHF's own HTTP client call when installed: (name, async fn(url, query, prompt, label) -> rewards)."""
    try:
        from openrlhf.utils.agent import SingleTurnAgentExecutor
    except ImportError:
        import httpx

        async def post(url, query, prompt, label):
            async with httpx.AsyncClient(timeout=180) as c:
                res = await c.post(url, json={"query": [query], "prompts": [prompt], "labels": [label]})
                res.raise_for_status()
                return res.json()

        return "httpx (OpenRLHF not installed)", post

    from importlib.metadata import version

    async def fetch(url, query, prompt, label):
        return (await SingleTurnAgentExecutor(url)._fetch_rewards_via_http([query], [prompt], [label]))[0]

    return f"OpenRLHF {version('openrlhf')} SingleTurnAgentExecutor._fetch_rewards_via_http", fetch


async def drive(url: str, work: list, clients: int, post) -> tuple[list[float], int, float]:
    """``clients`` workers share ``work``: (latencies in s, requests without a reward, wall seconds)."""
    queue: asyncio.Queue = asyncio.Queue()
    for w in work:
        queue.put_nowait(w)
    latencies, failed = [], 0

    async def worker():
        nonlocal failed
        while not queue.empty():
            query, prompt, label = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                reply = await post(url, query, prompt, label)
                ok = reply and isinstance(reply.get("rewards"), list) and len(reply["rewards"]) == 1
            except Exception:  # noqa: BLE001 - a failed request is counted, not raised
                ok = False
            latencies.append(time.perf_counter() - t0)
            failed += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, failed, time.perf_counter() - t0


def scoring_alone(verifier: str, work: list, sizes=(1, 4, 16, 64)) -> dict[int, float]:
    """ms per solution of the verifier itself (in this process, one torch thread, as `pav serve` runs it)."""
    import torch

    from pav.verifier.load import load_scorer

    torch.set_num_threads(1)
    scorer = load_scorer(verifier, k=4, batch_size=64)
    prompts = [p for _, p, _ in work[:64]]
    steps = [[s for s in q[len(p):].split("\n") if s] for q, p, _ in work[:64]]
    scorer.score(prompts[:4], steps[:4])  # warm-up
    out = {}
    for n in sizes:
        reps = max(1, 64 // n)
        t0 = time.perf_counter()
        for _ in range(reps):
            scorer.score(prompts[:n], steps[:n])
        out[n] = 1000 * (time.perf_counter() - t0) / reps / n
    return out


def metrics(base: str) -> dict[str, float]:
    import httpx

    text = httpx.get(base + "/metrics", timeout=10).text
    out = {"non200": sum(float(v) for s, v in re.findall(r'route="/openrlhf",status="(\d+)"\} (\S+)', text) if s != "200")}
    for key in ("pav_batches_total", "pav_solutions_scored_total", "pav_batch_largest"):
        m = re.search(rf"^{key} (\S+)$", text, re.M)
        out[key] = float(m.group(1)) if m else 0.0
    return out


def run(verifier: str, batching: bool, work: list, warm: list, clients: int, post) -> dict:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limits = [] if batching else ["--set", "limits.max_batch=1", "--set", "limits.max_wait_ms=0"]
    proc = subprocess.Popen([sys.executable, "-m", "pav.cli", "serve", "--set", f"verifier={verifier}", "--set",
                             f"port={port}", *limits], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        asyncio.run(drive(base + "/openrlhf", warm, 8, post))  # warm-up, not counted
        before = metrics(base)
        latencies, failed, wall = asyncio.run(drive(base + "/openrlhf", work, clients, post))
        after = metrics(base)
    finally:
        proc.terminate()
        proc.wait(30)
    batches = after["pav_batches_total"] - before["pav_batches_total"]
    scored = after["pav_solutions_scored_total"] - before["pav_solutions_scored_total"]
    return {"batching": "on (max_batch 64, max_wait 5 ms)" if batching else "off (max_batch 1)",
            "req_s": len(work) / wall, "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p99_ms": 1000 * float(np.percentile(latencies, 99)), "failed": failed + int(after["non200"] - before["non200"]),
            "mean_batch": scored / batches if batches else 0.0, "largest": int(after["pav_batch_largest"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (OpenRLHF rollout workers)")
    parser.add_argument("--requests", type=int, default=1000, help="one-sample requests per setting")
    parser.add_argument("--verifier", default="", help="a verifier to serve (default: the demo size, untrained head)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    verifier = args.verifier or tiny_verifier(Path(tempfile.mkdtemp(prefix="pav-serve-bench-")))
    work = samples(args.requests, args.seed)
    warm = samples(32, args.seed + 1)
    name, post = client()
    print(f"client: {name}; {args.clients} clients, {args.requests} one-sample requests with labels, cpus {os.cpu_count()}")
    alone = scoring_alone(verifier, work)
    print("verifier alone, ms per solution by batch size: " + ", ".join(f"{n}: {ms:.2f}" for n, ms in alone.items()))
    rows = [run(verifier, b, work, warm, args.clients, post) for b in (True, False)]
    print(f"{'batching':<34} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'mean batch':>11} {'largest':>8}")
    for r in rows:
        print(f"{r['batching']:<34} {r['req_s']:>7.1f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} {r['failed']:>7d} "
              f"{r['mean_batch']:>11.1f} {r['largest']:>8d}")
    print(f"batching across requests: {rows[0]['req_s'] / rows[1]['req_s']:.2f}x the throughput")


if __name__ == "__main__":
    main()
