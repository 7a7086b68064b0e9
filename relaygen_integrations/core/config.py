"""The relay's per-engine settings (per-request ones live in ``SamplingParams``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

Mode = Literal["relay", "large", "small"]


@dataclass(frozen=True)
class RelayConfig:
    """Per-engine settings (per-request ones live in SamplingParams)."""

    mode: Mode = "relay"  # "large" / "small": one model alone, for baselines
    min_large_tokens: int = 5  # the large model writes at least this many tokens before a cue fires
    answer_model: Literal["small", "large"] = "small"  # who writes the answer stage (paper: small)
    reasoning_end: str | None = None  # e.g. "</think>"; None: the whole output is reasoning
    answer_reserve_tokens: int = 0  # budget kept for the answer stage when reasoning runs long
    handoff: Literal["auto", "ids", "text"] = "auto"
    # Reusing the previous request's KV cache for a shared prompt prefix saves prompt evaluation, but
    # evaluating a prompt in different batches rounds logits differently, so greedy output could
    # then depend on the previous request. Off by default: the same request gives the same text.
    reuse_prompt_cache: bool = False
    # Checked relay (core/check.py): "off", "exact", or "tau=P" (a probability threshold); relay mode only.
    # "auto": the cue profile's default policy (its check.default; off when it names none), where the pair can
    # check (large model in process, shared vocabulary, no speculation), otherwise off.
    check: str = "auto"
    # After a cut the large model writes its token, then the small model finishes the sentence (checked in turn):
    # at most this many times per sentence. 0: the large model finishes it (the checked relay before resuming).
    resume: int = 0

    def validated(self) -> "RelayConfig":
        if self.mode not in ("relay", "large", "small"):
            raise ConfigError(f"mode must be relay, large or small, not {self.mode!r}")
        if self.answer_model not in ("small", "large"):
            raise ConfigError(f"answer_model must be 'small' or 'large', not {self.answer_model!r}")
        if not isinstance(self.min_large_tokens, int) or self.min_large_tokens < 0:
            raise ConfigError("min_large_tokens must be a non-negative integer")
        if self.answer_reserve_tokens < 0:
            raise ConfigError("answer_reserve_tokens must be >= 0")
        if self.reasoning_end is not None and not self.reasoning_end:
            raise ConfigError("reasoning_end must be a non-empty string or None")
        if self.handoff not in ("auto", "ids", "text"):
            raise ConfigError(f"handoff must be auto, ids or text, not {self.handoff!r}")
        if isinstance(self.resume, bool) or not isinstance(self.resume, int) or not 0 <= self.resume <= 1000:
            raise ConfigError(f"resume must be an integer in 0..1000 (resumptions per sentence after a cut), "
                              f"got {self.resume!r}")
        from .check import CheckPolicy

        if self.check != "auto":
            policy = CheckPolicy.parse(self.check)
            if self.resume and not policy.active:
                raise ConfigError(f"resume={self.resume} resumes the small model after the check cuts its sentence, "
                                  "and check is off: give a check (tau=P, exact or auto)")
        return self
