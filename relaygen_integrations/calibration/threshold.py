"""A label-free default for the checked relay's threshold tau, from the large model's own calibration traces.

Rule: tau is a low quantile (default 1%) of the probability the large model gives, teacher-forced, to the
tokens it sampled itself in its traces. A small-model token less likely than all but that fraction of what
the large model writes on its own gets cut. No answer labels are used: only the traces the cue calibration
already has (``relaygen calibrate``), on the problems it already used.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..backends.scoring import Scoring
from ..errors import ConfigError

DEFAULT_QUANTILE = 0.01


def self_probabilities(large: Scoring, prompt_text: str, trace: str) -> np.ndarray:
    """The large model's probability of each token of its own ``trace`` after the chat-templated prompt
    (the trace cut to the context window)."""
    prompt_ids = large.prompt_tokens(prompt_text)
    trace_ids = large.tokenize(trace.encode("utf-8"))[: max(0, large.n_ctx - len(prompt_ids))]
    if not trace_ids:
        return np.zeros(0)
    logprobs, _ = large.token_logprobs(prompt_ids + trace_ids, len(prompt_ids))
    return np.exp(logprobs)


def check_quantile_of(quantile: object) -> float:
    """The rule's quantile, validated (before any model work)."""
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 0.5:
        raise ConfigError(f"the check threshold's quantile must be in (0, 0.5), got {quantile!r}")
    return float(quantile)


def threshold_from(probabilities: Iterable[np.ndarray], quantile: float = DEFAULT_QUANTILE) -> float:
    """The ``quantile`` of all the traces' self-probabilities, pooled token by token."""
    check_quantile_of(quantile)
    pooled = np.concatenate([np.asarray(p, dtype=np.float64) for p in probabilities] or [np.zeros(0)])
    if pooled.size < 1 / quantile:
        raise ConfigError(f"{pooled.size} trace tokens are too few for a {quantile:.1%} quantile")
    return float(np.quantile(pooled, quantile))
