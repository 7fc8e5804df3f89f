"""Labelling on each executor: this process, N local worker processes, and N Ray workers.

Runs the same `pav label` three ways (same policy, problems and seeds), checks that every shard is
byte-identical across them, and reports wall time and the overhead of Ray against local worker
processes with the same number of workers (cluster start-up included and separately excluded).

    .venv/bin/python bench/label_executors.py --policy runs/sft [--problems 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def label(out: Path, policy: str, problems: int, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pav.cli", "label", "--quiet", "--set", f"policy={policy}", "--set",
                    f"problems={problems}", "--set", "shard_size=10", "--out", str(out), *extra],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - start


def shards(run: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted([*(run / "labels").iterdir(),
                                                                           *(run / "solutions").iterdir()])}


def ray_startup_seconds() -> float:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.get(ray.remote(lambda: 1).remote())
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a `pav sft` run directory or a model directory")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pav-exec-"))
    try:
        runs = {"in-process": [], f"local, {args.workers} processes": ["--set", f"workers={args.workers}"],
                f"ray, {args.workers} workers": ["--executor", "ray", "--set", f"workers={args.workers}"]}
        times, outputs = {}, {}
        for i, (name, extra) in enumerate(runs.items()):
            times[name] = label(root / str(i), args.policy, args.problems, extra)
            outputs[name] = shards(root / str(i))
        startup = ray_startup_seconds()
        same = all(o == outputs["in-process"] for o in outputs.values())
        print(f"{args.problems} problems, {len(outputs['in-process']) // 2} shards; identical shards: {same}")
        for name, s in times.items():
            print(f"{name:<24} {s:7.1f} s")
        local, ray_s = times[f"local, {args.workers} processes"], times[f"ray, {args.workers} workers"]
        print(f"ray start-up (init + first task): {startup:.1f} s")
        print(f"ray / local processes: {ray_s / local:.2f}x; without start-up: {(ray_s - startup) / local:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
