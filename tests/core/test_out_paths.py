"""`--out` is the user's own choice: the CLI writes wherever it points, outside the current folder too."""

import os
import subprocess
import sys


def test_the_cli_writes_wherever_out_points(tmp_path):
    """The runs-root fence belongs to code that takes paths from others; `--out` is the user's own choice."""
    cwd, outside = tmp_path / "cwd", tmp_path / "elsewhere" / "run"
    cwd.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tiny = ["--set", "steps=2", "--set", "eval_problems=1", "--set", "eval_samples=1"]  # where it writes, not what
    res = subprocess.run([sys.executable, "-m", "pav.cli", "sft", "--quick", "--quiet", *tiny, "--out", str(outside)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (outside / "COMPLETE").is_file() and list(cwd.iterdir()) == []
