"""Teacher-forced scoring: every position's distribution over a given text. A capability of in-process
backends (llama.cpp, transformers) that calibration and lm-eval's loglikelihood need; a server backend
does not have it, and ``require_scoring`` says so once, before any work, instead of failing mid-run.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..core.sampling import probability_margins, target_logprobs
from ..errors import ConfigError


class Scoring:
    """Mixed into a ``backends.local.LocalBackend`` (it uses ``sync``, ``logits`` and ``evaluate_rows``)."""

    def document_start_token(self) -> int:
        """The token that precedes a text with no context: BOS, or EOS for models without one
        (as lm-evaluation-harness does), so the first token of a text can be scored too."""
        raise ConfigError(f"the {self.name} backend cannot score text (no document-start token)")

    def logit_rows(self, context: Sequence[int], first: int, chunk: int = 256) -> Iterator[np.ndarray]:
        """Teacher forcing: blocks of next-token logits, in order, for the positions that predict
        ``context[first:]`` (one row per token). The KV cache keeps what it shares with ``context``,
        so several continuations of one context evaluate the context once."""
        if not 0 < first < len(context) <= self.n_ctx:
            raise ValueError(f"need 0 < first < len(context) <= n_ctx, got first={first}, len={len(context)}")
        self.sync(context[:first])
        yield self.logits()[None, :]
        for pos in range(first, len(context) - 1, chunk):
            yield self.evaluate_rows(context[pos: min(len(context) - 1, pos + chunk)])

    def position_margins(self, context: Sequence[int], first: int, chunk: int = 256) -> np.ndarray:
        """Teacher forcing from an empty cache: the margin of the distribution that predicts each of
        ``context[first:]`` (calibration)."""
        if not 0 < first <= len(context):
            raise ValueError("first must be in 1..len(context)")
        if first == len(context):
            return np.zeros(0)
        self.reset()
        return np.concatenate([probability_margins(rows) for rows in self.logit_rows(context, first, chunk)])

    def token_logprobs(self, context: Sequence[int], first: int) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``context[first:]``: its log-probability given what precedes it, and whether it
        was the most likely token (lm-evaluation-harness's loglikelihood contract)."""
        targets = np.asarray(context[first:])
        logprobs, greedy, done = [], [], 0
        for rows in self.logit_rows(context, first):
            lp, top = target_logprobs(rows, targets[done: done + len(rows)])
            logprobs.append(lp)
            greedy.append(top)
            done += len(rows)
        return np.concatenate(logprobs), np.concatenate(greedy)


def require_scoring(backend, what: str) -> Scoring:
    """What scores text for ``backend`` (a wrapper answers for what it wraps); otherwise one clear error."""
    scorer = backend.scorer()
    explain = getattr(backend, "why_no_scoring", None)  # a server backend says which server, and why
    if not isinstance(scorer, Scoring) and explain is not None:
        raise ConfigError(explain(what))
    if not isinstance(scorer, Scoring):
        raise ConfigError(f"{what} needs every position's distribution, which the {backend.name} backend does not "
                          "give (servers sample on their side): use the llamacpp or hf backend on the same weights")
    return scorer
