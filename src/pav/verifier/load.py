"""Loading saved verifiers: a `pav train-verifier` run or its ``verifier/`` folder, and scorers built of them."""

from __future__ import annotations

from pathlib import Path

from pav.core.rundir import readable_run
from pav.policies.options import LoadOptions


def verifier_dir(path: str) -> Path:
    """A `pav train-verifier` run directory stands for its ``verifier/`` folder."""
    p = readable_run(path, "verifier")
    return p / "verifier" if (p / "verifier").is_dir() else p


def load_verifier(path: str, load: LoadOptions = LoadOptions()):
    """A saved `ValueVerifier` on ``load.device`` in ``load.dtype``."""
    from pav.verifier.model import ValueVerifier

    kwargs = load.load_kwargs()
    return ValueVerifier.load(verifier_dir(path), kwargs["device"], kwargs["dtype"])


def load_scorer(pqv: str, *, k: int = 4, prover: str = "", orm: str = "", load: LoadOptions = LoadOptions(),
                batch_size: int = 32):
    """A `VerifierScorer` from saved verifiers: the PQV, a Best-of-K prover (k > 0) or a prover
    verifier (k = 0), and an optional ORM."""
    from pav.verifier.scorer import VerifierScorer

    return VerifierScorer(load_verifier(pqv, load), k=k or None, prover=load_verifier(prover, load) if not k else None,
                          orm=load_verifier(orm, load) if orm else None, batch_size=batch_size)
