"""What a relay run produces: streamed events, and the final result with attribution and stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .backend import Step

Role = Literal["large", "small", "forced"]  # "forced": text the engine inserted (reasoning-end marker)
Stage = Literal["reasoning", "answer"]


@dataclass
class Segment:
    """A contiguous span of output written by one model in one stage."""

    model: Role
    stage: Stage
    text: str = ""
    tokens: int = 0


@dataclass
class ModelStats:
    generated_tokens: int = 0  # tokens this model wrote into the output
    prompt_tokens: int = 0  # prompt length in this model's tokens
    cached_prompt_tokens: int = 0  # prompt tokens reused from the previous request's KV cache
    evaluated_tokens: int = 0  # tokens this model's backend evaluated (prompt + catch-up + own)
    handoff_tokens: int = 0  # tokens written by the other model that this one had to catch up on
    eval_calls: int = 0
    seconds: float = 0.0  # time inside this model's backend (evaluation + sampling)
    drafted_tokens: int = 0  # speculative decoding: draft tokens proposed for this model to verify
    accepted_draft_tokens: int = 0  # draft tokens it confirmed (the rest were rejected and rolled back)
    # evaluation calls by size {tokens: calls}; row_calls: those that kept every position's logits
    calls: dict[int, int] = field(default_factory=dict)
    row_calls: dict[int, int] = field(default_factory=dict)
    first_call: int = 0  # size of the request's first call (its prompt, less what the cache held)
    server_requests: int = 0  # server backends: completion streams opened

    @property
    def rejected_draft_tokens(self) -> int:
        return self.drafted_tokens - self.accepted_draft_tokens

    def add_calls(self, sizes: "tuple[int, ...]", row_sizes: "tuple[int, ...]" = ()) -> None:
        for n in sizes:
            if not self.eval_calls:
                self.first_call = n
            self.calls[n] = self.calls.get(n, 0) + 1
            self.evaluated_tokens += n
            self.eval_calls += 1
        for n in row_sizes:
            self.row_calls[n] = self.row_calls.get(n, 0) + 1

    def add(self, step: "Step") -> None:
        """What one ``next_token`` cost: the engine adds up returned steps, never backend counters."""
        self.add_calls(step.calls, step.row_calls)
        self.drafted_tokens += step.drafted
        self.accepted_draft_tokens += step.accepted
        self.server_requests += step.requests


@dataclass
class RelayStats:
    large: ModelStats = field(default_factory=ModelStats)
    small: ModelStats = field(default_factory=ModelStats)
    draft: ModelStats = field(default_factory=ModelStats)  # the draft model's calls (speculative decoding)
    switches: int = 0  # hand-offs large -> small on a cue
    forced_tokens: int = 0  # marker tokens appended by the engine when the budget ran out
    boundary_tokens_discarded: int = 0  # look-ahead tokens sampled to confirm a sentence end, not kept
    check: str = "off"  # the checked relay's policy this request ran (RelayConfig.check, "auto" resolved)
    sentences_checked: int = 0  # checked relay: small-model sentences the large model vetted ...
    sentences_cut: int = 0  # ... those it cut at a token it rejected ...
    small_tokens_discarded: int = 0  # ... the small-model tokens thrown away at those cuts ...
    cut_tokens: int = 0  # ... and the tokens the large model wrote in their place
    resumes: int = 0  # resume=N: the small model took a cut sentence back after the large model's token ...
    resumed_tokens: int = 0  # ... and wrote these tokens that stand (cut ones not counted)
    finish_reason: str = ""  # stop (end of generation), length (budget), stop_string, context
    wall_seconds: float = 0.0
    handoff: str = ""  # "ids" (shared vocabulary) or "text"
    cues_fired: dict[str, int] = field(default_factory=dict)
    cues_cut: dict[str, int] = field(default_factory=dict)  # checked relay: sentences after each cue that were cut

    @property
    def generated_tokens(self) -> int:
        return self.large.generated_tokens + self.small.generated_tokens

    def summary(self) -> dict:
        """The run in one flat record: what every reporter derives its own from (the CLI's ``--json``,
        lm-eval's request file, LiteLLM's ``usage.relay``, the bench's records keep these names, or
        documented aliases of them)."""
        return {
            "prompt_tokens": self.large.prompt_tokens or self.small.prompt_tokens,
            "generated_tokens": self.generated_tokens, "large_tokens": self.large.generated_tokens,
            "small_tokens": self.small.generated_tokens, "large_share": round(self.large_share, 4),
            "switches": self.switches, "check": self.check, "sentences_checked": self.sentences_checked,
            "sentences_cut": self.sentences_cut, "small_tokens_discarded": self.small_tokens_discarded,
            "cut_tokens": self.cut_tokens, "resumes": self.resumes, "resumed_tokens": self.resumed_tokens,
            "finish_reason": self.finish_reason, "seconds": round(self.wall_seconds, 4),
            "cues_fired": dict(self.cues_fired), "cues_cut": dict(self.cues_cut),
        }

    @property
    def large_share(self) -> float:
        total = self.generated_tokens
        return self.large.generated_tokens / total if total else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(generated_tokens=self.generated_tokens, large_share=self.large_share,
                 tokens_per_second=self.tokens_per_second)
        for role in ("large", "small", "draft"):
            d[role]["rejected_draft_tokens"] = getattr(self, role).rejected_draft_tokens
        return d


@dataclass
class RelayResult:
    text: str
    segments: list[Segment]
    stats: RelayStats
    reasoning: str = ""  # text before the answer stage (equal to text when there is no answer stage)
    answer: str = ""  # text of the answer stage, after the reasoning-end marker
    seed: int | None = None

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "reasoning": self.reasoning,
            "answer": self.answer,
            "segments": [asdict(s) for s in self.segments],
            "stats": self.stats.to_dict(),
            "summary": self.stats.summary(),
            "seed": self.seed,
        }


@dataclass
class RelayEvent:
    """One streamed event: a text delta (``kind="text"``), a hand-off (``"switch"``), or the end."""

    kind: Literal["text", "switch", "done"]
    model: Role | None = None
    stage: Stage = "reasoning"
    text: str = ""
    cue: str | None = None  # for a switch on a cue
    result: RelayResult | None = None  # for "done"
