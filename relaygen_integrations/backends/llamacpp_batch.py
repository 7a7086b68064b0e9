"""Several requests in one llama.cpp context per model: what the batched engine evaluates with.

``SharedContext`` is a second context over a loaded ``LlamaCppBackend``'s weights holding ``n_seq``
sequences, each with a KV stream of its own (llama.cpp's non-unified cache), and evaluates many
sequences' jobs in one ``llama_decode``. ``SequenceBackend`` is one of those sequences seen as an
ordinary ``LocalBackend``: the relay run, the check and the hand-off drive it unchanged, and each of its
evaluations waits for the scheduler's next round (``core/scheduler.py``). Only llama.cpp's public C API
(``llama_cpp.llama_cpp``) is used here.
"""

from __future__ import annotations

from typing import Sequence

import llama_cpp
import numpy as np

from ..core.scheduler import Job, Scheduler
from ..errors import ConfigError
from .llamacpp import LlamaCppBackend
from .local import LocalBackend


class SharedContext:
    """One model's context for ``n_seq`` sequences of ``n_ctx`` tokens each. Only the scheduler's thread
    evaluates in it (``run``), so it needs no lock of its own."""

    def __init__(self, base: LlamaCppBackend, n_seq: int, n_ctx: int, n_batch: int = 512,
                 n_threads: int | None = None, flash_attn: bool = False, kv_unified: bool = False):
        if n_seq > llama_cpp.llama_max_parallel_sequences():
            raise ConfigError(f"max_batch={n_seq} is more than this llama.cpp build's "
                              f"{llama_cpp.llama_max_parallel_sequences()} parallel sequences")
        self.base, self.n_seq, self.n_vocab = base, n_seq, base.n_vocab
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_seq_max, p.kv_unified = n_ctx * n_seq, n_seq, kv_unified
        p.n_batch, p.n_ubatch = n_batch, min(512, n_batch)
        threads = n_threads or base.llm.n_threads
        p.n_threads = p.n_threads_batch = threads
        p.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                             else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self.ctx = llama_cpp.llama_init_from_model(base.llm.model, p)
        if not self.ctx:
            raise ConfigError(f"llama.cpp could not make a context of {n_seq} x {n_ctx} tokens for "
                              f"{base.path.name} (out of memory?): lower max_batch or n_ctx")
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(self.ctx)
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._memory = llama_cpp.llama_get_memory(self.ctx)

    def run(self, jobs: Sequence[Job]) -> int:
        """Pack jobs into one ``llama_decode`` of at most ``n_batch`` tokens; a job that does not fit
        whole leaves its rest for the next call. Each job first drops what its sequence held past its start."""
        b, n, taken = self.batch, 0, []
        for job in jobs:
            take = min(len(job.tokens), self.n_batch - n)
            if take == 0:
                break
            last = take == len(job.tokens)
            llama_cpp.llama_memory_seq_rm(self._memory, job.seq, job.start, -1)
            for i in range(take):
                b.token[n], b.pos[n], b.n_seq_id[n] = job.tokens[i], job.start + i, 1
                b.seq_id[n][0] = job.seq
                b.logits[n] = job.rows or (last and i == take - 1)
                n += 1
            taken.append((job, take, last))
        b.n_tokens = n
        status = llama_cpp.llama_decode(self.ctx, b)
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status}) on a batch of {n} tokens for {len(taken)} sequences")
        out = sum(take if job.rows else int(last) for job, take, last in taken)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx), shape=(out, self.n_vocab))
        row = 0
        for job, take, last in taken:
            if job.rows:
                job.parts.append(logits[row: row + take].copy())
                row += take
            elif last:
                job.parts.append(logits[row: row + 1].copy())
                row += 1
            if last:
                job.result = np.vstack(job.parts) if job.rows else job.parts[0][0]
            else:
                job.tokens, job.start = job.tokens[take:], job.start + take
        return n

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None


class SequenceBackend(LocalBackend):
    """Sequence ``seq`` of a ``SharedContext``: tokenizer and template from the loaded model, evaluations
    through the scheduler. It scores, and runs on a GPU or not, as its loaded model does."""

    name = "llamacpp"
    concurrency = "batched"
    default_max_batch = 4

    def __init__(self, shared: SharedContext, seq: int, scheduler: Scheduler):
        super().__init__()
        self.shared, self.seq, self.scheduler = shared, seq, scheduler
        self.base = shared.base
        self._last: np.ndarray | None = None

    def on_gpu(self) -> bool:
        return self.base.on_gpu()

    def scorer(self):
        return self.base.scorer()

    @property
    def n_ctx(self) -> int:
        return self.shared.n_ctx_seq

    @property
    def n_vocab(self) -> int:
        return self.shared.n_vocab

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.base.tokenize(text, special=special, add_bos=add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.base.token_bytes(token)

    def token_text(self, token: int) -> bytes:
        return self.base.token_text(token)

    def is_end_of_generation(self, token: int) -> bool:
        return self.base.is_end_of_generation(token)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.base.chat_prompt(messages)

    def vocab_fingerprint(self) -> str:
        return self.base.vocab_fingerprint()

    def _truncate(self, n: int) -> None:
        """Nothing to do now: every evaluation drops what the sequence holds past its start."""

    def _evaluate(self, tokens: Sequence[int]) -> None:
        self._last = self.scheduler.submit(Job(self.shared, self.seq, len(self.tokens), list(tokens)))

    def _evaluate_rows(self, tokens: Sequence[int]) -> np.ndarray:
        rows = self.scheduler.submit(Job(self.shared, self.seq, len(self.tokens), list(tokens), rows=True))
        self._last = rows[-1]
        return rows

    def logits(self) -> np.ndarray:
        return self._last

    def close(self) -> None:
        """The engine closes the shared context and the model."""
