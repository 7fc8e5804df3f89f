"""`pav sft`, `pav train-verifier` and `pav rl` killed with SIGKILL mid-run and rerun with the same
command end with the parameters an uninterrupted run ends with (CPU, same seed).

A kill lands at a random point: the test waits until the run's newest checkpoint holds at least a
randomly drawn number of steps (iterations), then waits a random few milliseconds more, so it can
fall inside a step, inside a checkpoint write or inside the final evaluation. The fast cases kill
once, on tiny budgets, and run the uninterrupted reference in this process (a fresh interpreter
spends most of such a run importing torch); the slow ones kill five times in a row before the run is
let finish. Run the slow ones with ``-s`` to see where each kill landed.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _pav(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)


def _whole_here(args: list[str], out: Path) -> None:
    """The uninterrupted run of ``pav <args> --out <out>``, in this process."""
    from typer.testing import CliRunner

    from pav.cli import app

    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, (res.output[-3000:], res.exception)


def _done(checkpoints: Path) -> int:
    """Steps (iterations) the newest finished checkpoint holds; 0 before the first."""
    found = sorted(p for p in checkpoints.glob("*-*") if not p.name.startswith("."))
    return int(found[-1].name.split("-")[1]) if found else 0


def _kill_at(args: list[str], cwd: Path, checkpoints: Path, target: int, rng: random.Random) -> int:
    """Start the command, SIGKILL it a random 0-50 ms after its checkpoints reach ``target``;
    the steps checkpointed at the kill (None: the run finished first)."""
    proc = subprocess.Popen([sys.executable, "-m", "pav.cli", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while proc.poll() is None and _done(checkpoints) < target and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    return _done(checkpoints)


def _params(run: Path, model: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / model / "model.safetensors"))


def _assert_same_params(a: Path, b: Path, model: str = "policy") -> float:
    """Max |difference| of the parameters the two runs saved in ``model/`` (0.0: equal bit for bit)."""
    import torch

    pa, pb = _params(a, model), _params(b, model)
    assert pa.keys() == pb.keys()
    diff = max(float((pa[k].double() - pb[k].double()).abs().max()) for k in pa)
    assert all(torch.equal(pa[k], pb[k]) for k in pa), f"max |difference| {diff}"
    return diff


def _kill_and_resume(args: list[str], cwd: Path, name: str, ckpt: str, targets: list[int], seed: int,
                     resumed: str = "resumed from") -> list[int]:
    """Kill ``pav <args> --out <name>`` at each target in turn, then let it finish; where each kill landed."""
    rng = random.Random(seed)
    out = ["--out", name]
    landed = [_kill_at([*args, *out], cwd, cwd / name / ckpt, t, rng) for t in targets]
    assert not (cwd / name / "COMPLETE").exists()
    res = _pav([*args, *out], cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert resumed in res.stderr  # continued from the newest checkpoint, not from step 0
    assert (cwd / name / "COMPLETE").is_file()
    assert not [p for p in (cwd / name / ckpt).iterdir() if p.name.startswith(".")], "a stale temp checkpoint"
    return landed


SFT = ["sft", "--quiet", "--set", "eval_problems=2", "--set", "eval_samples=2"]


def test_sft_killed_once_resumes_to_the_uninterrupted_parameters(tmp_path):
    args = [*SFT, "--set", "steps=12", "--set", "batch_size=4", "--set", "checkpoint_every=2"]
    _whole_here(args, tmp_path / "whole")  # checkpoints do not change what is trained
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", [random.Random(1).randrange(2, 10, 2)], seed=1)
    assert 2 <= landed[0] <= 12
    _assert_same_params(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
def test_sft_killed_five_times_resumes_to_the_uninterrupted_parameters(tmp_path):
    args = [*SFT, "--set", "steps=300", "--set", "checkpoint_every=10"]
    res = _pav([*args, "--out", "whole"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    targets = sorted(random.Random(5).sample(range(10, 290, 10), 5))
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", targets, seed=5)
    diff = _assert_same_params(tmp_path / "whole", tmp_path / "killed")
    print(f"\nsft: 300 steps, checkpoint every 10; killed after checkpoints {landed} (targets {targets}); "
          f"max |parameter difference| {diff}")


@pytest.fixture(scope="module")
def labels(label_quick) -> Path:
    """`pav label --quick` on the shared `pav sft --quick` policy (conftest): what the verifier cases train on."""
    return label_quick[0]


def _verifier_args(sft: Path, labels: Path, steps: int, every: int) -> list[str]:
    return ["train-verifier", "--quiet", "--set", f"labels={labels}", "--set", f"backbone={sft}", "--set",
            "train.batch_size=4", "--set", f"train.steps={steps}", "--set", f"train.checkpoint_every={every}",
            "--set", f"train.eval_every={steps}"]


VERIFIER_RESUMED = "resuming verifier training from"


def test_train_verifier_killed_once_resumes_to_the_uninterrupted_parameters(sft_quick, labels, tmp_path):
    args = _verifier_args(sft_quick[0], labels, 40, 4)
    _whole_here(args, tmp_path / "whole")
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", [random.Random(3).randrange(4, 24, 4)], seed=3,
                              resumed=VERIFIER_RESUMED)
    assert 4 <= landed[0] <= 40
    _assert_same_params(tmp_path / "whole", tmp_path / "killed", "verifier")


@pytest.mark.slow
def test_train_verifier_killed_five_times_resumes_to_the_uninterrupted_parameters(sft_quick, labels, tmp_path):
    args = _verifier_args(sft_quick[0], labels, 300, 10)
    res = _pav([*args, "--out", "whole"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    targets = sorted(random.Random(7).sample(range(10, 250, 10), 5))
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", targets, seed=7, resumed=VERIFIER_RESUMED)
    diff = _assert_same_params(tmp_path / "whole", tmp_path / "killed", "verifier")
    print(f"\ntrain-verifier: 300 steps, checkpoint every 10; killed after checkpoints {landed} (targets {targets}); "
          f"max |parameter difference| {diff}")


def _rl_args(run: Path, iterations: int) -> list[str]:
    return ["rl", "--quick", "--quiet", "--set", f"policy={run}", "--set", "reward=orm", "--set",
            f"iterations={iterations}", "--set", "checkpoint_every=1"]


def test_rl_killed_once_resumes_to_the_uninterrupted_parameters(sft_quick, tmp_path):
    run, _ = sft_quick
    args = _rl_args(run, 4)
    _whole_here(args, tmp_path / "whole")
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", [random.Random(2).randrange(1, 3)], seed=2)
    assert 1 <= landed[0] <= 4
    _assert_same_params(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
def test_rl_killed_five_times_resumes_to_the_uninterrupted_parameters(sft_quick, tmp_path):
    run, _ = sft_quick
    args = _rl_args(run, 16)
    res = _pav([*args, "--out", "whole"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    targets = sorted(random.Random(6).sample(range(1, 15), 5))
    landed = _kill_and_resume(args, tmp_path, "killed", "checkpoints", targets, seed=6)
    diff = _assert_same_params(tmp_path / "whole", tmp_path / "killed")
    print(f"\nrl: 16 iterations, checkpoint every iteration; killed after checkpoints {landed} (targets {targets}); "
          f"max |parameter difference| {diff}")
