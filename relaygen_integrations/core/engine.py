"""The relay engine: the runtime state machine of method.md over two backends.

States: the large model reasons; when its fresh text completes a switch cue (and it has written at
least ``min_large_tokens`` since it took control) the small model continues until the first sentence
end, then the large model resumes. The reasoning-end marker starts the answer stage, written by the
small model by default. ``max_tokens`` counts every generated token of both models.

Each backend keeps its own KV cache. A participant's context is its prompt plus the output tokens
it has caught up on; before a model writes, it evaluates only what the other model wrote since it
last ran. When both vocabularies are identical (checked by fingerprint), tokens are handed over by
id; otherwise the other model's new text is re-tokenised by the receiving model.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterator, Sequence

from ..errors import ConfigError, ContextWindowError
from .check import CheckPolicy
from .config import RelayConfig
from .events import RelayEvent, RelayResult
from .profile import CueProfile, load_profile
from .run import _Run
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backend import Backend

# What both chat templates must render alike for one model to continue the other's text. No system
# message: some templates refuse one (and a pair is about continuing the assistant turn anyway).
_PROBE = [{"role": "user", "content": "U"}]


class RelayEngine:
    """Runs RelayGen over a large and a small backend: many requests, one at a time (a second request
    while a stream is still open is refused, never interleaved: both would share the KV caches)."""

    def __init__(self, large: "Backend", small: "Backend", profile: "CueProfile | str | list | None" = None,
                 config: RelayConfig | None = None):
        self.large, self.small = large, small
        self.profile = load_profile(profile)
        self.matcher = self.profile.matcher()
        self.config = (config or RelayConfig()).validated()
        self._by_ids = self._check_pair()
        self.check_policy = self._check_policy()
        self._running = threading.Lock()  # held by the one request whose events are being read

    def _check_pair(self) -> bool:
        if self.large is self.small:
            raise ConfigError("large and small must be two backend instances (each keeps its own KV cache)")
        a, b = (_render_probe(m, role) for m, role in ((self.large, "large"), (self.small, "small")))
        if a != b:
            raise ConfigError("the two models use different chat formats, so one cannot continue the "
                              f"other's text (large renders {a!r}, small renders {b!r})")
        same_vocab = self.large.vocab_fingerprint() == self.small.vocab_fingerprint()
        if self.config.handoff == "ids" and not same_vocab:
            raise ConfigError("handoff='ids' needs identical vocabularies, and these differ: use 'text'")
        return same_vocab if self.config.handoff == "auto" else self.config.handoff == "ids"

    def _check_policy(self) -> CheckPolicy:
        """The checked relay's policy (off outside relay mode), once the large model can give its rows."""
        from .backend import RowBackend

        auto = self.config.check == "auto"
        policy = CheckPolicy.parse(self.profile.check_default if auto else self.config.check)
        if not policy.active or self.config.mode != "relay":
            return CheckPolicy()
        if auto and not (isinstance(self.large, RowBackend) and self._by_ids):
            return CheckPolicy()  # the profile's default where the pair can check; an explicit policy fails below
        if not isinstance(self.large, RowBackend):
            what = getattr(self.large, "name", type(self.large).__name__)
            raise ConfigError(
                f"check={policy} needs the large model's probability of every small-model token, which the {what} "
                "backend cannot give: a server's OpenAI API returns no per-position probabilities for text it did "
                "not write (vLLM's prompt logprobs bypass its prefix cache), and speculative decoding is not "
                "combined with checking yet; use the llamacpp or hf backend without speculation")
        if not self._by_ids:
            raise ConfigError(f"check={policy} needs the two models to share a vocabulary (hand-off by token id)")
        return policy

    # --- public API --------------------------------------------------------------------------
    def generate(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *,
                 chat: bool = True) -> RelayResult:
        """Run to completion and return the text, its per-model segments and the stats."""
        for event in self.stream(prompt, params, chat=chat):
            if event.kind == "done":
                return event.result
        raise RuntimeError("relay stream ended without a result")  # pragma: no cover

    def stream(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *,
               chat: bool = True) -> Iterator[RelayEvent]:
        """Yield text deltas tagged with the model that wrote them, switches, and a final result.

        ``chat=False`` sends a string prompt as raw text, without the chat template. A bad request fails
        here; the engine is taken when the first event is read and free again once the stream is read to
        its end or closed. A request that starts meanwhile raises ConfigError instead of sharing the caches.
        """
        params = (params or SamplingParams()).validated()
        prompt_text = self._render(prompt, chat)
        return _Run(self, prompt_text, params).events()

    def check(self, prompt: "str | list[dict]", params: SamplingParams | None = None, *, chat: bool = True) -> None:
        """Raise now what ``stream`` would reject (bad parameters, an empty or over-long prompt), without
        touching a KV cache, so a caller that must wait for the engine can fail a bad request at once."""
        (params or SamplingParams()).validated()
        self._prompt_ids(self._render(prompt, chat))

    def _prompt_ids(self, prompt_text: str) -> dict[str, list[int]]:
        """The prompt in each participating model's tokens; an error if it leaves no room to write."""
        out = {}
        for role, backend in (("large", self.large), ("small", self.small)):
            if role == "small" and self.config.mode == "large" or role == "large" and self.config.mode == "small":
                continue
            ids = backend.prompt_tokens(prompt_text)
            if len(ids) + 1 > backend.n_ctx:
                raise ContextWindowError(f"the prompt is {len(ids)} tokens, longer than the {role} model's "
                                         f"context window of {backend.n_ctx} tokens")
            out[role] = ids
        return out

    def _render(self, prompt: "str | list[dict]", chat: bool) -> str:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ConfigError("the prompt is empty")
            return self.large.chat_prompt([{"role": "user", "content": prompt}]) if chat else prompt
        if not isinstance(prompt, Sequence) or not prompt:
            raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        for m in prompt:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                raise ConfigError(f"each message needs a 'role' and a string 'content'; got {m!r}")
        if not any(m["content"].strip() for m in prompt):
            raise ConfigError("the prompt is empty")
        return self.large.chat_prompt(list(prompt))


def _render_probe(backend: "Backend", role: str) -> str:
    try:
        return backend.chat_prompt(_PROBE)
    except ConfigError:
        raise
    except Exception as e:  # a Jinja template that raises, or cannot render a plain user turn
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"the {role} model's chat template cannot render a user message ({first[:200]}); "
                          "pass chat_format='raw' (or another template) for that model") from None
