"""Every command block of the README and of the docs' tutorials runs (on quick settings), so a
documented command that fails or hangs fails CI.

Blocks run in reading order, the README's in one scratch folder and the tutorials' in another, so
a tutorial may use the runs an earlier one made, as a reader would. A `pav` command that trains or labels gets
`--quick` unless it names its own settings; the set-up block of the README is what CI itself runs,
and `docs/tutorials/real-model.md` needs a downloaded model and problem set, so they are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/tutorials/builtin-lab.md", "docs/tutorials/search.md", "docs/tutorials/rl.md",
         "docs/tutorials/serving.md", "docs/tutorials/didactic.md", "docs/api.md"]
QUICK = {"demo", "didactic", "sft", "label", "train-verifier", "search", "rl", "rl-compare"}
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def blocks(page: str) -> list[tuple[str, str]]:
    text = (ROOT / page).read_text()
    if page == "README.md":  # the set-up commands: CI runs the second, and the first is `pav demo` at full size
        text = text.split("## A 5-minute tour", 1)[1]
    return [(lang, code) for lang, code in FENCE.findall(text) if "--8<--" not in code]


def quick(line: str) -> str:
    """`pav STAGE ...` on quick settings: --quick added unless it has it, a preset or --show-config."""
    m = re.match(r"(\s*pav (\S+))(.*)$", line)
    if not m or m.group(2) not in QUICK or re.search(r"--quick|--preset|-p |--show-config", line):
        return line
    return f"{m.group(1)} --quick{m.group(3)}"


def test_every_page_has_blocks_and_the_transform_is_right():
    assert all(blocks(p) for p in PAGES)
    assert quick("pav demo --out runs/demo   # note") == "pav demo --quick --out runs/demo   # note"
    assert quick("pav label --show-config | head -5") == "pav label --show-config | head -5"
    assert quick("pav serve --set verifier=runs/pqv &") == "pav serve --set verifier=runs/pqv &"


@pytest.mark.slow
def test_documented_commands_run(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    for page in PAGES:
        cwd = tmp_path / ("readme" if page == "README.md" else "docs")  # the tutorials build on each other
        cwd.mkdir(exist_ok=True)
        for lang, code in blocks(page):
            if lang == "bash":
                script = "\n".join(quick(line) for line in code.splitlines())
                cmd = ["bash", "-euo", "pipefail", "-c", script]
            else:
                script, cmd = code, [sys.executable, "-c", code]
            res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"{page}:\n{script}\n--- stderr:\n{res.stderr[-3000:]}"
