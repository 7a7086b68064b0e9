"""Speculative decoding for the llama.cpp backend: draft tokens cheaply, verify them in one batch.

``DraftModel`` proposes tokens with a second, smaller GGUF model in its own llama.cpp context;
``prompt_lookup`` copies them from earlier text (llama-cpp-python's prompt-lookup drafter). Both
follow llama-cpp-python's ``LlamaDraftModel`` protocol (``__call__(input_ids) -> draft ids``), so they
also plug into ``llama_cpp.Llama(draft_model=...)``. Verification is in ``verify.py``.
"""

from .draft import DraftModel, prompt_lookup
from .verify import verify_draft

__all__ = ["DraftModel", "prompt_lookup", "verify_draft"]
