"""Speculative decoding of any in-process backend: draft tokens cheaply, verify them in one batch.

``SpeculativeBackend(target, drafter)`` wraps a backend (``decoder.py``). ``DraftModel`` proposes tokens
with a second, smaller model in its own context; ``prompt_lookup`` copies them from earlier text
(llama-cpp-python's prompt-lookup drafter). Both follow llama-cpp-python's ``LlamaDraftModel`` protocol
(``__call__(input_ids) -> draft ids``). Verification is in ``verify.py``.
"""

from .decoder import SpeculativeBackend
from .draft import DraftModel, prompt_lookup
from .verify import verify_draft

__all__ = ["DraftModel", "SpeculativeBackend", "prompt_lookup", "verify_draft"]
