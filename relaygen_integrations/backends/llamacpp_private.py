"""Every use of llama-cpp-python's private API, in one place (tested with 0.3.36; pyproject pins <0.4).

``Llama`` has no public way to evaluate a batch keeping every position's logits (``eval`` keeps only the
last with ``logits_all`` off), to read a token's vocabulary text, or to load weights outside llama.cpp's
extra buffer types. What is used: ``Llama._model`` (vocab, token_get_text, add_bos_token), ``Llama._ctx``
(ctx, kv_cache_seq_rm, decode), ``Llama._batch.set_batch``, the ``input_ids``/``n_tokens`` token buffer,
``llama_cpp.llama_cpp.llama_model_default_params`` and ``llama_cpp._utils.suppress_stdout_stderr``. ``check()``
runs at import, so a release that renames any of them fails with one clear line instead of an AttributeError
in the middle of a request.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Sequence

import llama_cpp
import numpy as np

TESTED = "0.3.36"
_PARAMS_LOCK = threading.Lock()


def check() -> None:
    """Fail at import if this llama-cpp-python lacks what the backend uses."""
    missing = [f"{owner.__name__}.{name}" for owner, name in (
        (llama_cpp.Llama, "eval"), (llama_cpp._internals.LlamaModel, "token_get_text"),
        (llama_cpp._internals.LlamaModel, "add_bos_token"), (llama_cpp._internals.LlamaContext, "kv_cache_seq_rm"),
        (llama_cpp._internals.LlamaContext, "decode"), (llama_cpp._internals.LlamaBatch, "set_batch"),
        (llama_cpp.llama_cpp, "llama_model_default_params"), (llama_cpp._utils, "suppress_stdout_stderr"),
    ) if not hasattr(owner, name)]
    if missing:
        raise ImportError(f"llama-cpp-python {llama_cpp.__version__} lacks {', '.join(missing)}, which the llamacpp "
                          f"backend uses (tested with {TESTED}): pip install 'llama-cpp-python=={TESTED}'")


def vocab_only(path: str) -> llama_cpp.Llama:
    """Only a GGUF file's vocabulary. llama.cpp warns on stderr that a context longer than the (absent)
    training context may overflow, whatever ``verbose`` says: a tokenizer has no context to overflow."""
    from llama_cpp._utils import suppress_stdout_stderr

    with suppress_stdout_stderr(disable=False):
        return llama_cpp.Llama(model_path=path, vocab_only=True, n_ctx=8, verbose=False)


def vocab(llm: llama_cpp.Llama):
    """The model's ``llama_vocab`` pointer, for the public C functions that take one."""
    return llm._model.vocab


def token_piece(llm: llama_cpp.Llama, token: int) -> str:
    """A token's vocabulary text (for chat templates' BOS/EOS strings); "" for no token."""
    return llm._model.token_get_text(token) if token >= 0 else ""


def adds_bos(llm: llama_cpp.Llama) -> bool:
    return bool(llm._model.add_bos_token())


def context_size(llm: llama_cpp.Llama) -> int:
    """llama.cpp may round its context up; ``Llama``'s token buffer keeps the requested size."""
    return min(llm.n_ctx(), len(llm.input_ids))


def last_logits(llm: llama_cpp.Llama, n_vocab: int) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()


def truncate(llm: llama_cpp.Llama, n: int) -> None:
    llm.n_tokens = n  # Llama.eval removes cache cells past n_tokens before it decodes


def decode_all_rows(llm: llama_cpp.Llama, tokens: Sequence[int], n_vocab: int) -> np.ndarray:
    """Append at most ``n_batch`` tokens to the context in one ``llama_decode`` keeping every row's logits,
    and keep ``Llama``'s own token buffer in step (as ``Llama.eval`` would)."""
    n_past, ctx = llm.n_tokens, llm._ctx
    ctx.kv_cache_seq_rm(-1, n_past, -1)  # drop stale cells past the live context
    llm._batch.set_batch(batch=list(tokens), n_past=n_past, logits_all=True)
    ctx.decode(llm._batch)
    rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(len(tokens), n_vocab)).copy()
    llm.input_ids[n_past: n_past + len(tokens)] = tokens
    llm.n_tokens = n_past + len(tokens)
    return rows


@contextmanager
def weights_outside_extra_buffers():
    """Load with llama.cpp's ``use_extra_bufts`` off (weights stay in plain CPU buffers, never AMX's).
    ``Llama`` has no option for it, so the default parameters its constructor starts from are changed
    for this one construction (under a lock: two threads loading at once must not see each other's)."""
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    with _PARAMS_LOCK:
        module.llama_model_default_params = params
        try:
            yield
        finally:
            module.llama_model_default_params = original
