"""Hugging Face transformers (torch): a model directory, or a GGUF file through transformers' GGUF
loading (dequantised to the chosen dtype), on CPU, CUDA or Apple MPS."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, ModelNotFoundError
from .hf_vocab import HFVocab
from .local import LocalBackend, check_gguf_header, check_local_options, unloadable_gguf
from .scoring import Scoring

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the transformers backend needs torch and transformers: pip install 'relaygen-integrations[hf]'"
    ) from exc

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class TransformersBackend(HFVocab, Scoring, LocalBackend):
    """One transformers causal LM with its own ``DynamicCache``, cropped on rollback.

    ``model_path``: a model directory, or a ``.gguf`` file (transformers dequantises it, so the
    numbers differ slightly from llama.cpp's quantised kernels). ``dtype``: float32 (default on CPU),
    bfloat16 or float16. ``n_ctx`` caps the context like llama.cpp's (default 4096, at most the
    model's own limit).
    """

    name = "hf"  # concurrency "single": one request at a time (a second needs a second KV cache)

    def __init__(self, model_path: str | Path, n_ctx: int = 4096, device: str = "auto",
                 dtype: str = "float32", n_threads: int | None = None, chat_format: str | None = None,
                 progress: bool = False):
        super().__init__()
        path = Path(model_path).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"model not found: {path}")
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if chat_format not in (None, "raw"):
            raise ConfigError(f"chat_format must be None (the model's template) or 'raw', not {chat_format!r}")
        check_local_options(n_ctx, n_threads)
        if path.is_file():
            check_gguf_header(path)
        if n_threads:
            torch.set_num_threads(n_threads)
        self.device = pick_device(device)
        self.path = path
        where = {"gguf_file": path.name} if path.is_file() else {}
        root = str(path.parent if path.is_file() else path)
        transformers.logging.set_verbosity_error()  # deprecation notes meant for library authors
        if not progress:
            transformers.logging.disable_progress_bar()  # GGUF conversion bars
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(root, **where)
            self.model = AutoModelForCausalLM.from_pretrained(root, dtype=DTYPES[dtype], **where).to(self.device)
        except (ValueError, OSError, EOFError, IndexError, KeyError) as exc:
            if not where:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise unloadable_gguf(path, f"transformers could not read it: {first[:200]}") from exc
        self.model.eval()
        self.chat_format = chat_format
        if chat_format is None and not self.tokenizer.chat_template:
            raise ConfigError(f"{path.name} has no chat template: pass chat_format='raw'")
        limit = getattr(self.model.config, "max_position_embeddings", None) or n_ctx
        self._n_ctx = min(n_ctx, limit)
        self._init_vocab(self.tokenizer, self.model.get_output_embeddings().weight.shape[0],
                         (self.model.generation_config, self.model.config))
        # transformers 5.x renamed the forward argument past_key_values to cache
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self._cache = DynamicCache(config=self.model.config)
        self._logits: np.ndarray | None = None

    @classmethod
    def sharing_weights(cls, other: "TransformersBackend") -> "TransformersBackend":
        """A second backend over the same loaded model and tokenizer, with its own KV cache (for a
        model relaying with itself, or two requests at once) at no extra memory for weights."""
        twin = cls.__new__(cls)
        twin.__dict__.update(other.__dict__)
        LocalBackend.__init__(twin)
        twin._cache = DynamicCache(config=other.model.config)
        twin._logits = None
        return twin

    # --- the protocol ------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def chat_prompt(self, messages: list[dict]) -> str:
        if self.chat_format == "raw":
            return "\n\n".join(m["content"] for m in messages)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _truncate(self, n: int) -> None:
        if n == 0:
            self._cache = DynamicCache(config=self.model.config)
        elif self._cache.get_seq_length() > n:
            self._cache.crop(n - self._cache.get_seq_length())  # negative: tokens to drop (all 4.x/5.x)
        self._logits = None

    @torch.inference_mode()
    def _forward(self, tokens: Sequence[int], keep: int) -> "torch.Tensor":
        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=keep, **{self._cache_kw: self._cache})
        return out.logits[0].float()

    def _evaluate(self, tokens: Sequence[int]) -> None:
        self._logits = self._forward(tokens, keep=1)[-1].cpu().numpy()

    def logits(self) -> np.ndarray:
        if self._logits is None:
            raise RuntimeError("no logits: evaluate a context first")
        return self._logits

    def _evaluate_rows(self, tokens: Sequence[int]) -> np.ndarray:
        """One forward pass that keeps every position's logits."""
        rows = self._forward(tokens, keep=0).cpu().numpy()
        self._logits = rows[-1]
        return rows

    def on_gpu(self) -> bool:
        return self.device != "cpu"

    def close(self) -> None:
        self._cache = None
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()

