"""Process verifiers: an LM backbone with a scalar value head, its data and its training.

- ``pav.verifier.model``: `ValueVerifier` (every prefix value of a solution from one forward pass).
- ``pav.verifier.data``: step-label run directories -> training examples, held-out split, sampler.
- ``pav.verifier.train``: soft-label BCE training with atomic, resumable checkpoints.

Submodules import torch; this package itself imports nothing heavy.
"""
