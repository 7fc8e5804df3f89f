"""pav: process advantage verifiers (Setlur et al., "Rewarding Progress", arXiv 2410.08146).

The Python API lives in `pav.api`; its names are also ``pav.<name>``, imported on first use, so
``import pav`` stays fast and never imports torch.
"""

__version__ = "0.1.0"

_API = ("advantages_from_prefix_values", "beam_search", "best_of_k", "best_of_n", "effective_reward", "label",
        "load_policy", "load_scorer", "load_task", "pass_at_n", "q_hat", "score_steps", "wilson_interval")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        from pav import api

        return getattr(api, name)
    raise AttributeError(f"module 'pav' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
