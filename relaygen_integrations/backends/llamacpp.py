"""llama.cpp through llama-cpp-python: GGUF models on CPU, Metal or CUDA."""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.sampling import Sampler
from ..speculative.draft import AdaptiveDrafter
from ..speculative.verify import verify_draft
from ..errors import ConfigError, ModelNotFoundError
from .base import Backend, check_gguf_header, check_local_options, unloadable_gguf
from .scoring import Scoring

try:
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaDraftModel
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the llama.cpp backend needs llama-cpp-python: pip install 'relaygen-integrations[llamacpp]'"
    ) from exc


_PARAMS_LOCK = threading.Lock()


@functools.cache
def amx_build() -> bool:
    """Whether this llama.cpp build runs matrix products on AMX, whose kernels segfault in batched
    evaluation on some AMX CPUs (llama.cpp#20824; seen here with a native build on a Sapphire Rapids VM)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextmanager
def _weights_outside_extra_buffers():
    """Load with llama.cpp's ``use_extra_bufts`` off (weights stay in plain CPU buffers, never AMX's).
    llama-cpp-python has no option for it, so the default parameters its constructor starts from are
    changed for this one construction."""
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


class LlamaCppBackend(Scoring, Backend):
    """One GGUF model with its own llama.cpp context (and so its own KV cache).

    ``flash_attn``: llama.cpp's flash attention. llama.cpp's batched kernels round differently from
    single-token decoding, so anything evaluated in a batch (prompts, catch-up after a hand-off,
    speculative verification) can flip a greedy near-tie. ``evals/batch_numerics.py`` measures it:
    SmolLM2 Q4_1 differs by 0.91 logits without flash attention and 0.0 with it; Qwen2.5-1.5B Q4_K_M
    by 0.55 without and 0.65 with. Off by default, as in llama.cpp.

    ``chat_format``: ``None`` uses the chat template stored in the GGUF file; ``"raw"`` joins the
    message contents with no template (for base models and tiny test models).
    """

    name = "llamacpp"

    def __init__(self, model_path: str | Path, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, chat_format: str | None = None,
                 seed: int = 0, verbose: bool = False, drafter: "LlamaDraftModel | None" = None,
                 flash_attn: bool = False):
        super().__init__()
        path = Path(model_path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        check_local_options(n_ctx, n_threads)
        check_gguf_header(path)
        threads = n_threads or min(8, os.cpu_count() or 1)
        self.path = path
        safe = amx_build() and os.environ.get("RELAYGEN_LLAMA_AMX") != "1"
        try:
            with _weights_outside_extra_buffers() if safe else nullcontext():
                self.llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers, n_batch=n_batch, logits_all=False, seed=seed, verbose=verbose,
                    flash_attn=flash_attn,
                )
        except ValueError as exc:  # llama-cpp-python: "Failed to load model from file"
            raise unloadable_gguf(path, "truncated or corrupt: llama.cpp could not read it") from exc
        self._vocab = self.llm._model.vocab
        self._n_vocab = self.llm.n_vocab()
        self.chat_format = chat_format
        self._template = None
        if chat_format is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigError(f"{path.name} has no chat template: pass chat_format='raw'")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def piece(token_id: int) -> str:
                return self.llm._model.token_get_text(token_id) if token_id >= 0 else ""

            self._template = Jinja2ChatFormatter(
                template, eos_token=piece(self.llm.token_eos()), bos_token=piece(self.llm.token_bos()),
                add_generation_prompt=True)
        elif chat_format != "raw":
            raise ConfigError(f"chat_format must be None (the model's template) or 'raw', not {chat_format!r}")
        self._bos_piece = self.llm._model.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
        self.n_gpu_layers = n_gpu_layers
        self.drafter = None
        self._plan: list[int] = []  # context + tokens already verified by speculation, not yet handed out
        if drafter is not None:
            self.set_drafter(drafter)

    def set_drafter(self, drafter: "LlamaDraftModel | None") -> None:
        """Decode speculatively with ``drafter`` (a ``speculative.DraftModel`` or prompt lookup), or not (None).
        A draft model must share this model's vocabulary: its token ids are verified as ours."""
        target = getattr(drafter, "backend", None)
        if target is self:
            raise ConfigError("a draft model needs its own backend (its own KV cache), not the target's")
        if target is not None and target.vocab_fingerprint() != self.vocab_fingerprint():
            raise ConfigError("the draft model's vocabulary differs from the target's: its tokens cannot be verified")
        self.drafter, self._plan = drafter, []

    @property
    def n_ctx(self) -> int:
        # llama.cpp may round its context up; the Python token buffer keeps the requested size
        return min(self.llm.n_ctx(), len(self.llm.input_ids))

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        if add_bos and self._bos_piece and text.startswith(self._bos_piece.encode()):
            add_bos = False  # the template already wrote it
        return self.llm.tokenize(text, add_bos=add_bos, special=special)

    def token_bytes(self, token: int) -> bytes:
        # Not Llama.detokenize: its fixed 32-byte buffer silently returns b"" for longer pieces
        # (runs of spaces in code), which would drop text from the output.
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
        return buf.raw[:n]

    def token_text(self, token: int) -> bytes:
        return llama_cpp.llama_vocab_get_text(self._vocab, token) or b""

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def chat_prompt(self, messages: list[dict]) -> str:
        if self._template is None:
            return "\n\n".join(m["content"] for m in messages)
        return self._template(messages=messages).prompt

    def _truncate(self, n: int) -> None:
        self.llm.n_tokens = n  # llama.eval removes cache cells past n_tokens before decoding

    def _evaluate(self, tokens: Sequence[int]) -> None:
        self.llm.eval(tokens)

    def logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _decode_rows(self, tokens: Sequence[int]) -> np.ndarray:
        """Append ``tokens`` to the KV cache in batches of n_batch; return every position's logits.
        Llama.eval keeps only the last position's logits when logits_all is off, so decode directly."""
        if len(tokens) > self.llm.n_batch:
            step = self.llm.n_batch
            return np.vstack([self._decode_rows(tokens[i: i + step]) for i in range(0, len(tokens), step)])
        n_past, ctx = self.llm.n_tokens, self.llm._ctx
        ctx.kv_cache_seq_rm(-1, n_past, -1)  # drop stale cells past the live context
        self.llm._batch.set_batch(batch=list(tokens), n_past=n_past, logits_all=True)
        ctx.decode(self.llm._batch)
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(len(tokens), self._n_vocab)).copy()
        self.llm.input_ids[n_past: n_past + len(tokens)] = tokens
        self.llm.n_tokens = n_past + len(tokens)
        self._record(list(tokens), all_rows=True)
        return rows

    def document_start_token(self) -> int:
        bos = self.llm.token_bos()
        return bos if bos >= 0 and self.llm._model.add_bos_token() else self.llm.token_eos()

    # --- speculative decoding ----------------------------------------------------------------
    def next_token(self, context: Sequence[int], sampler: Sampler) -> int:
        """Without a drafter: one token. With one: draft, verify the draft in one batch, hand the
        accepted tokens out one per call while the engine keeps extending the same context."""
        if self.drafter is None:
            return super().next_token(context, sampler)
        n = len(context)
        if n < len(self._plan) and self._plan[:n] == context:  # the engine's context is a list: no copy
            return self._plan[n]
        self.sync(context)
        room = min(self.n_ctx - n - 1, self.llm.n_batch - 1)  # verification is one batch
        draft = [int(t) for t in self.drafter(np.asarray(context, dtype=np.intc))][: max(0, room)]
        if not draft:
            self._plan = []
            return sampler(self.logits())
        rows = np.vstack([self.logits()[None, :], self._decode_rows(draft)])
        accepted = verify_draft(sampler, rows, draft)
        self.drafted_tokens += len(draft)
        self.accepted_draft_tokens += len(accepted) - 1
        if isinstance(self.drafter, AdaptiveDrafter):
            self.drafter.feedback(len(draft), len(accepted) - 1)
        self._plan = list(context) + accepted
        return accepted[0]

    def reset(self) -> None:
        super().reset()
        self.llm.reset()
        self._plan = []
        if isinstance(self.drafter, AdaptiveDrafter):
            self.drafter.reset()  # a fresh draft context per request: same request, same drafts

    def close(self) -> None:
        """Free the model, and a draft model's too (the drafter's backend exists only to draft for this one)."""
        drafter_backend = getattr(self.drafter, "backend", None)
        if drafter_backend is not None:
            drafter_backend.close()
        self.llm.close()
