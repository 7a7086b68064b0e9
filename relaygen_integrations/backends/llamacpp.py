"""llama.cpp through llama-cpp-python: GGUF models on CPU, Metal or CUDA."""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelNotFoundError
from .llamacpp_vocab import LlamaVocab
from .local import LocalBackend, check_gguf_header, check_local_options, unloadable_gguf
from .scoring import Scoring

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the llama.cpp backend needs llama-cpp-python: pip install 'relaygen-integrations[llamacpp]'"
    ) from exc
from . import llamacpp_private as private

private.check()


@functools.cache
def amx_build() -> bool:
    """Whether this llama.cpp build runs matrix products on AMX, whose kernels segfault in batched
    evaluation on some AMX CPUs (llama.cpp#20824; seen here with a native build on a Sapphire Rapids VM)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


class LlamaCppBackend(LlamaVocab, Scoring, LocalBackend):
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
    concurrency = "batched"  # sequences of one shared context, evaluated together (serving/llamacpp.py)
    default_max_batch = 4

    def __init__(self, model_path: str | Path, n_ctx: int = 4096, n_threads: int | None = None,
                 n_gpu_layers: int = 0, n_batch: int = 512, chat_format: str | None = None,
                 seed: int = 0, verbose: bool = False, flash_attn: bool = False):
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
            with private.weights_outside_extra_buffers() if safe else nullcontext():
                self.llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers, n_batch=n_batch, logits_all=False, seed=seed, verbose=verbose,
                    flash_attn=flash_attn,
                )
        except ValueError as exc:  # llama-cpp-python: "Failed to load model from file"
            raise unloadable_gguf(path, "truncated or corrupt: llama.cpp could not read it") from exc
        self._init_vocab()
        self.chat_format = chat_format
        self._template = None
        if chat_format is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigError(f"{path.name} has no chat template: pass chat_format='raw'")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._template = Jinja2ChatFormatter(
                template, eos_token=private.token_piece(self.llm, self.llm.token_eos()),
                bos_token=private.token_piece(self.llm, self.llm.token_bos()), add_generation_prompt=True)
        elif chat_format != "raw":
            raise ConfigError(f"chat_format must be None (the model's template) or 'raw', not {chat_format!r}")
        self.n_gpu_layers = n_gpu_layers

    @property
    def n_ctx(self) -> int:
        return private.context_size(self.llm)

    def chat_prompt(self, messages: list[dict]) -> str:
        if self._template is None:
            return "\n\n".join(m["content"] for m in messages)
        return self._template(messages=messages).prompt

    def _truncate(self, n: int) -> None:
        private.truncate(self.llm, n)

    def _evaluate(self, tokens: Sequence[int]) -> None:
        self.llm.eval(tokens)

    def logits(self) -> np.ndarray:
        return private.last_logits(self.llm, self._n_vocab)

    def _evaluate_rows(self, tokens: Sequence[int]) -> np.ndarray:
        """Every position's logits, in batches of n_batch (``Llama.eval`` keeps only the last position's)."""
        step = self.llm.n_batch
        return np.vstack([private.decode_all_rows(self.llm, tokens[i: i + step], self._n_vocab)
                          for i in range(0, len(tokens), step)])

    @property
    def batch_limit(self) -> int:
        return self.llm.n_batch

    def on_gpu(self) -> bool:
        return self.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()

    def reset(self) -> None:
        super().reset()
        self.llm.reset()

    def close(self) -> None:
        self.llm.close()
