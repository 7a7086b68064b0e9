"""One request, prepared once: what the engine runs, whichever slot or thread runs it.

``RelayEngine.prepare`` renders the prompt, validates the sampling settings (fixing the seed) and tokenises
the prompt once for each model that takes part, on the caller's thread; the run, the concurrent engine's
worker and every entry point then pass the ``Request`` along instead of preparing it again. A request
also carries its cancellation: whoever holds it (a client that went away) cancels it, and the run stops
at its next model step, whatever the backend.

Chat messages are rendered by the large model's template, then tokenised in pieces: the template's own
text with its control tokens parsed, each message's content as plain text. A user who writes
``<|im_end|>`` in a message gets those characters, never the control token (no turns of other roles).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from ..errors import Cancelled, ConfigError, ContextWindowError
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backend import Backend


@dataclass(frozen=True)
class PromptText:
    """A rendered prompt: its text, and the spans of it that are user content (plain text, never markup)."""

    text: str
    content_spans: tuple[tuple[int, int], ...] = ()

    def pieces(self) -> list[tuple[str, bool]]:
        """The text in order as ``(piece, is_markup)``: markup has its control tokens parsed, content not."""
        out, at = [], 0
        for start, end in self.content_spans:
            if start > at:
                out.append((self.text[at:start], True))
            out.append((self.text[start:end], False))
            at = end
        if at < len(self.text) or not out:
            out.append((self.text[at:], True))
        return out


@dataclass(eq=False)
class Request:
    """Everything that belongs to one request and not to an engine: made by ``RelayEngine.prepare``."""

    prompt: PromptText
    params: SamplingParams  # validated; the seed is fixed (drawn when the caller gave none)
    prompt_ids: dict[str, "list[int] | None"]  # per taking-part model; None: tokenised where it runs (local ids)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def prompt_text(self) -> str:
        return self.prompt.text

    def cancel(self) -> None:
        """Stop the request at its next model step (a stream being read then ends)."""
        self.cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the request was cancelled")


def render(large: "Backend", prompt: "str | Sequence[dict]", chat: bool) -> PromptText:
    """The prompt as the large model's template renders it (``chat=False``: a string as it is, raw text)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigError("the prompt is empty")
        if not chat:
            return PromptText(prompt)
        prompt = [{"role": "user", "content": prompt}]
    elif not isinstance(prompt, Sequence) or not prompt:
        raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for m in prompt:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ConfigError(f"each message needs a 'role' and a string 'content'; got {m!r}")
    if not any(m["content"].strip() for m in prompt):
        raise ConfigError("the prompt is empty")
    text = large.chat_prompt(list(prompt))
    return PromptText(text, content_spans(text, [m["content"] for m in prompt]))


def content_spans(text: str, contents: list[str]) -> tuple[tuple[int, int], ...]:
    """Where each message's content lies in the rendered text, in order. A template that changes a
    content (trims it, say) still writes the changed text whole: its stripped form is looked for next."""
    spans, at = [], 0
    for content in contents:
        for probe in (content, content.strip()):
            i = text.find(probe, at) if probe else -1
            if i >= 0:
                spans.append((i, i + len(probe)))
                at = i + len(probe)
                break
    return tuple(spans)


def tokenize_prompt(backend: "Backend", prompt: PromptText) -> list[int]:
    """The prompt in ``backend``'s tokens: markup with control tokens parsed, content as plain text (a
    server backend gets the text whole: its server tokenises it)."""
    pieces = prompt.pieces()
    if backend.local_ids or len(pieces) == 1 and pieces[0][1]:
        return backend.prompt_tokens(prompt.text)  # raw text, or a template with no content in it
    ids: list[int] = []
    for piece, markup in pieces:
        ids += backend.tokenize(piece.encode("utf-8"), special=markup, add_bos=not ids)
    return ids


def check_fits(ids: list[int], backend: "Backend", role: str) -> None:
    if len(ids) + 1 > backend.n_ctx:
        raise ContextWindowError(f"the prompt is {len(ids)} tokens, longer than the {role} model's "
                                 f"context window of {backend.n_ctx} tokens")
