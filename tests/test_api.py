"""The public Python API (`pav.api`, also `pav.<name>`): cheap to import, and the docs' examples run."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs" / "examples"


def test_import_pav_is_torch_free_and_lazy():
    code = "import sys, pav; assert 'torch' not in sys.modules and 'pav.api' not in sys.modules; pav.q_hat; " \
           "assert 'pav.api' in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_papers_quantities_from_counts():
    import pav

    q = pav.q_hat([0, 2, 4], [4, 4, 4])  # Q̂ of the question and after each of two steps
    assert q.tolist() == [0.0, 0.5, 1.0]
    assert pav.advantages_from_prefix_values(q).tolist() == [0.5, 0.5]
    assert pav.best_of_k(0.5, 4) == pytest.approx(1 - 0.5**4)
    assert pav.effective_reward([0.5], [0.25], alpha=2.0).tolist() == [1.0]
    assert pav.pass_at_n(4, 1, 2) == pytest.approx(0.5)
    with pytest.raises(AttributeError):
        pav.no_such_name  # noqa: B018


@pytest.fixture(scope="module")
def demo_like(sft_quick, tmp_path_factory):
    """A folder laid out like `pav demo`'s (sft/, pqv/) from quick runs."""
    root = tmp_path_factory.mktemp("demo-like")
    (root / "sft").symlink_to(sft_quick[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args in (["label", "--quick", "--set", f"policy={root / 'sft'}", "--out", "labels"],
                 ["train-verifier", "--quick", "--set", "labels=labels", "--set", f"backbone={root / 'sft'}",
                  "--out", "pqv"]):
        res = subprocess.run([sys.executable, "-m", "pav.cli", *args, "--quiet"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    return root


def run_example(name: str, *argv: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(DOCS / name), run_name="__main__")


@pytest.mark.slow
def test_docs_example_scores_a_solution_step_by_step(demo_like, monkeypatch, capsys):
    run_example("score_a_solution.py", str(demo_like), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines()[3:] if line and not line.startswith("V^pi")]
    assert out.count("Q^pi") == 1 and rows and "outcome:" in out
    values = [float(r.split()[-3]) for r in rows if "nan" not in r]
    assert values and all(0.0 <= v <= 1.0 for v in values)  # Q^π is a probability


@pytest.mark.slow
def test_docs_example_labels_ten_problems(demo_like, monkeypatch, capsys):
    run_example("label_ten_problems.py", str(demo_like / "sft"), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "solutions to 10 problems" in out


@pytest.mark.slow
def test_label_returns_the_records_pav_label_writes(demo_like, tmp_path):
    import pav
    from pav.rollouts.views import read_labels

    quick_task = {"options": {"d_min": 1, "d_max": 1, "n_ops": 2}}  # label_quick's easy built-in task
    records = pav.label(demo_like / "sft", problems=6, n_cov=2, n_mc=4, shard_size=3, task=quick_task,
                        out=tmp_path / "api")
    assert records == read_labels(demo_like / "labels")  # the same job as `pav label --quick`
    assert records and all(0 <= r.n_correct <= r.n_rollouts for r in records)
