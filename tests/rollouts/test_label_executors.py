"""`pav label` on worker processes and on Ray: the same shards, byte for byte, as in this process,
each committed once, and a worker killed with SIGKILL costs only the shard it was labelling."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # the test cluster's shared secret
ARGS = ["--set", "problems=24", "--set", "shard_size=3", "--set", "n_cov=2", "--set", "n_mc=4"]


def pav(*args, cwd):
    res = subprocess.run([sys.executable, "-m", "pav.cli", *args, "--quiet"], cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def shard_bytes(run: Path) -> dict[str, bytes]:
    files = sorted([*(run / "labels").iterdir(), *(run / "solutions").iterdir()])
    assert not [f for f in files if f.name.startswith(".")], "no temp file may be left behind"
    return {f"{f.parent.name}/{f.name}": f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sft_quick):
    """A tiny policy and its in-process label run."""
    root = tmp_path_factory.mktemp("executors")
    (root / "sft").symlink_to(sft_quick[0])
    pav("label", "--set", "policy=sft", *ARGS, "--out", "inproc", cwd=root)
    return root, shard_bytes(root / "inproc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-CPU Ray cluster on loopback, started once for this module's tests and stopped after them
    (its temp folder is short: Ray's socket paths must fit in 107 characters)."""
    pytest.importorskip("ray")
    ray_cli = str(Path(sys.executable).parent / "ray")
    port, temp = _free_port(), tempfile.mkdtemp(prefix="pav-ray-", dir="/tmp")
    res = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                          "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], env=ENV, capture_output=True, timeout=120)
    shutil.rmtree(temp, ignore_errors=True)


def test_worker_processes_and_a_ray_cluster_write_the_in_process_bytes(reference, ray_cluster):
    root, expected = reference
    assert len(expected) == 16  # 8 shards: labels and solutions
    pav("label", "--set", "policy=sft", *ARGS, "--set", "workers=2", "--out", "pool", cwd=root)
    res = pav("label", "--set", "policy=sft", *ARGS, "--executor", "ray", "--ray-address", ray_cluster, "--out", "ray",
              cwd=root)  # a Ray that pav starts itself: tests/test_cli_lm.py (search) and tests/core/test_jobs.py
    for run in ("pool", "ray"):
        assert shard_bytes(root / run) == expected, run
        assert sorted(p.name for p in (root / run / "jobs").iterdir()) == [f"shard-{i:05d}.json" for i in range(8)]
        summary = json.loads((root / run / "summary.json").read_text())
        assert summary["shards_written"] == 8 and summary["records"] > 0
    assert "label:" in res.stderr


def _shard_worker_pids() -> list[int]:
    """Ray worker processes running a job right now (Ray titles them after the function)."""
    out = subprocess.run(["pgrep", "-f", "ray::_call_ray"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_a_killed_ray_worker_costs_only_its_shard(reference, ray_cluster):
    root, expected = reference
    proc = subprocess.Popen([sys.executable, "-m", "pav.cli", "label", "--quiet", "--set", "policy=sft", *ARGS,
                             "--executor", "ray", "--ray-address", ray_cluster, "--out", "killed"],
                            cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        pids = _shard_worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    done_at_kill = len(list((root / "killed" / "labels").glob("shard-*.parquet"))) if killed else None
    _, err = proc.communicate(timeout=600)
    assert killed is not None and done_at_kill < 8, "the kill must land while shards are being labelled"
    assert proc.returncode == 0, err[-3000:]
    assert shard_bytes(root / "killed") == expected  # every shard exactly once, as in this process
    summary = json.loads((root / "killed" / "summary.json").read_text())
    assert summary["shards_written"] == 8


def test_a_policy_retrained_in_place_is_loaded_again(tmp_path):
    from pav.policies.hf import save_policy, tiny_gpt2
    from pav.policies.tokenizer import build_char_tokenizer
    from pav.rollouts.stage import LabelConfig, labelling_components

    tok = build_char_tokenizer()
    save_policy(tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=0), tok, tmp_path / "p")
    cfg = LabelConfig(policy=str(tmp_path / "p"))
    first = labelling_components(cfg)[0]
    assert labelling_components(cfg)[0] is first  # loaded once per process
    time.sleep(0.01)
    save_policy(tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=32, seed=1), tok, tmp_path / "p")
    again = labelling_components(cfg)[0]
    assert again is not first and again.policy_id != first.policy_id
