"""Policies: samplers over text behind one `Policy` protocol.

`base` holds the protocol, the result records and the shared stop rule; `tokenizer` the built-in
character tokenizer; `hf` the transformers backend (`HFPolicy`, `load_causal_lm`, `save_policy`,
`tiny_gpt2`); `vllm_backend` the vLLM backend (`VLLMPolicy`, optional extra); `options` the
``load`` section of every LM stage. Import `pav.policies.hf` explicitly: it imports torch and
transformers, this package does not.
"""

from pav.policies.base import Generation, Policy, PolicyLoadError, SampleBatch, scan_steps
from pav.policies.tokenizer import BUILTIN_ALPHABET, build_char_tokenizer

__all__ = [
    "BUILTIN_ALPHABET",
    "Generation",
    "Policy",
    "PolicyLoadError",
    "SampleBatch",
    "build_char_tokenizer",
    "scan_steps",
]
