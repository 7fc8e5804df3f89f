"""Where a command may write: `--out` inside the runs root, never through '..' (`checked_out_path`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pav.core.rundir import UnsafePathError, checked_out_path, runs_root


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("PAV_RUNS_ROOT", str(root))
    return root


@pytest.mark.parametrize("out", ["run", "runs/label-1", "./run", "a/./b", "."])
def test_relative_paths_inside_the_root_are_kept(root, out):
    assert checked_out_path(out) == Path(out)


def test_absolute_paths_inside_the_root_are_kept(root):
    assert checked_out_path(root / "runs" / "x") == root / "runs" / "x"
    assert checked_out_path(None) is None


@pytest.mark.parametrize("out", ["..", "../x", "runs/../../x", "runs/..", "a/../b"])
def test_any_dotdot_part_is_refused(root, out):
    with pytest.raises(UnsafePathError, match=r"'\.\.'"):
        checked_out_path(out)


def test_absolute_paths_outside_the_root_are_refused_with_the_fix(root, tmp_path):
    with pytest.raises(UnsafePathError, match="outside it.*PAV_RUNS_ROOT") as err:
        checked_out_path(tmp_path / "elsewhere")
    assert str(root) in str(err.value)
    with pytest.raises(UnsafePathError):
        checked_out_path("/etc/pav")
    with pytest.raises(UnsafePathError, match="empty"):
        checked_out_path(" ")


def test_a_relative_path_from_a_folder_outside_the_root_is_refused(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafePathError, match="resolves outside"):
        checked_out_path("run")


def test_the_root_defaults_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PAV_RUNS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runs_root() == Path(os.path.abspath(tmp_path))
    assert checked_out_path(tmp_path / "run") == tmp_path / "run"
    with pytest.raises(UnsafePathError):
        checked_out_path(tmp_path.parent / "run")


PARTS = st.lists(st.sampled_from(["a", "b", ".", "..", "runs", "x.y"]), min_size=1, max_size=6)


@given(parts=PARTS, absolute=st.booleans())
def test_accepted_paths_never_leave_the_root(parts, absolute):
    root = Path("/srv/pav-root") if absolute else Path(os.path.abspath(os.curdir))  # relative: from cwd
    out = Path(root, *parts) if absolute else Path(*parts)
    try:
        kept = checked_out_path(out, root=root)
    except UnsafePathError:
        kept = None
    # accepted exactly when no part is '..' (then it lies under the root by construction)
    assert (kept is not None) == (".." not in parts)
    if kept is not None:
        full = Path(os.path.normpath(os.path.abspath(kept)))
        assert full == root or root in full.parents


def test_the_cli_writes_wherever_out_points(tmp_path):
    """The runs-root fence belongs to code that takes paths from others; `--out` is the user's own choice."""
    cwd, outside = tmp_path / "cwd", tmp_path / "elsewhere" / "run"
    cwd.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PAV_RUNS_ROOT": str(cwd)}
    res = subprocess.run([sys.executable, "-m", "pav.cli", "sft", "--quick", "--quiet", "--out", str(outside)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (outside / "COMPLETE").is_file() and list(cwd.iterdir()) == []
