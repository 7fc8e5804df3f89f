"""Import rules of STYLE.md: cheap `import pav`, imports pointing downward."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "pav"
# rank of each layer: a module may import only from layers of lower rank (so tasks and policies
# never import each other, nor sft and didactic)
RANK = {"core": 0, "tasks": 1, "policies": 1, "rollouts": 2, "verifier": 3, "sft": 3, "didactic": 3, "search": 4, "rl": 4, "eval": 5,
        "demo": 5, "serve": 5, "api": 9, "cli": 9}


def test_import_pav_core_and_estimates_import_no_torch():
    code = ("import sys, pav, pav.core, pav.rollouts.estimates, pav.didactic.task, pav.didactic.prover, "
            "pav.tasks.modreach, pav.policies; "
            "bad = [m for m in ('torch', 'transformers', 'ray', 'matplotlib', 'pyarrow') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pav" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def test_imports_point_downward():
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own not in RANK:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                target = _layer(name)
                if target and target != own and RANK[target] >= RANK[own]:
                    violations.append(f"{rel} imports {name}")
    assert not violations, violations


# a stage module wires config -> library calls -> run directory; only these may import one
STAGE_IMPORTERS = ("pav.cli", "pav.api", "pav.demo", "pav.serve")
# `pav rl-compare` runs the rl stage once per arm and seed, as the demo runs every stage
ORCHESTRATORS = {"pav.rl.compare": ("pav.rl.stage",)}


def _is_stage(module: str) -> bool:
    return module.endswith(".stage") or module == "pav.demo" or module.startswith("pav.demo.")


def test_no_module_imports_another_stage():
    violations = []
    for path in SRC.rglob("*.py"):
        module = ".".join(("pav", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        if module.startswith(STAGE_IMPORTERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)]  # `from pav.x import stage`
                if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if _is_stage(name) and name != module and name not in ORCHESTRATORS.get(module, ()):
                    violations.append(f"{module} imports {name}")
    assert not violations, violations
