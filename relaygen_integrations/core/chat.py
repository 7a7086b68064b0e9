"""A prompt rendered by the large model's chat template, with the places of the messages' contents in it.

A message's content is text, never markup: a user who writes ``<|im_end|>`` gets those characters, not
the control token (no turns written for other roles). So the rendered prompt is tokenised in pieces:
the template's own text with control tokens parsed, each content as plain text. To know where the
contents lie, the template is also rendered with a placeholder for each content (once per shape of
conversation: its roles): the text between placeholders is the template's own. A content found
anywhere else (a copy of the template's own text inside it) is never taken for markup.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..errors import ConfigError

if TYPE_CHECKING:
    from .backend import Backend

_PLACEHOLDER = "\ue000relaygen-content-{}\ue001"  # private-use characters: no template writes them


@dataclass(frozen=True)
class PromptText:
    """A rendered prompt. ``content_spans``: where the contents lie (plain text); None where the template
    changes contents in a way that cannot be located (see ``tokenize_prompt``); ``contents``: the messages'."""

    text: str
    content_spans: "tuple[tuple[int, int], ...] | None" = ()
    contents: tuple[str, ...] = ()

    def pieces(self) -> list[tuple[str, bool]]:
        """The text in order as ``(piece, is_markup)``: markup has its control tokens parsed, content not."""
        out, at = [], 0
        for start, end in self.content_spans or ():
            if start > at:
                out.append((self.text[at:start], True))
            out.append((self.text[start:end], False))
            at = end
        if at < len(self.text) or not out:
            out.append((self.text[at:], True))
        return out


class ChatRenderer:
    """The large model's template over checked messages, and where their contents lie in its output."""

    def __init__(self, backend: "Backend"):
        self.backend = backend
        self._markup: dict[tuple, list[str] | None] = {}  # conversation shape -> the template's own pieces
        self._lock = threading.Lock()

    def __call__(self, prompt: "str | Sequence[dict]", chat: bool = True) -> PromptText:
        """``chat=False``: a string prompt as it is (raw text: the caller's own rendering, markup and all)."""
        messages = _checked(prompt, chat)
        if messages is None:
            return PromptText(prompt)
        text = self.backend.chat_prompt(messages)
        contents = tuple(m["content"] for m in messages)
        markup = self._markup_of(messages)
        return PromptText(text, _spans(text, markup, contents) if markup is not None else None, contents)

    def _markup_of(self, messages: list[dict]) -> list[str] | None:
        """The template's own text around the contents: pieces before, between and after them."""
        shape = tuple(tuple(sorted((k, repr(v)) for k, v in m.items() if k != "content")) for m in messages)
        with self._lock:
            if shape in self._markup:
                return self._markup[shape]
        marked = [{**m, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)]
        text = self.backend.chat_prompt(marked)
        pieces, at = [], 0
        for i in range(len(messages)):
            j = text.find(_PLACEHOLDER.format(i), at)
            if j < 0:  # the template leaves this message out (or changes it): it cannot be located
                pieces = None
                break
            pieces.append(text[at:j])
            at = j + len(_PLACEHOLDER.format(i))
        if pieces is not None:
            pieces.append(text[at:])
        with self._lock:
            if len(self._markup) >= 64:
                self._markup.clear()
            self._markup[shape] = pieces
        return pieces


def _spans(text: str, markup: list[str], contents: tuple[str, ...]) -> "tuple[tuple[int, int], ...] | None":
    """Walk the rendered text: template piece, content, template piece, ...; a template may trim a content.
    None where the text is not that (the template changes contents otherwise)."""
    if not text.startswith(markup[0]):
        return None
    spans, at = [], len(markup[0])
    for content, after in zip(contents, markup[1:]):
        for written in dict.fromkeys((content, content.strip())):
            end = at + len(written)
            if text.startswith(written, at) and text.startswith(after, end):
                spans.append((at, end))
                at = end + len(after)
                break
        else:
            return None
    return tuple(spans) if at == len(text) else None


def _checked(prompt: "str | Sequence[dict]", chat: bool) -> list[dict] | None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigError("the prompt is empty")
        if not chat:
            return None
        return [{"role": "user", "content": prompt}]
    messages = text_messages(prompt)
    if not any(m["content"].strip() for m in messages):
        raise ConfigError("the prompt is empty")
    return messages


def text_messages(messages: "Sequence[dict]") -> list[dict]:
    """Checked messages, each content a string: a list of parts (``[{"type": "text", "text": ...}]``, what
    newer OpenAI SDK code and agent frameworks send) becomes its texts joined by newlines, as vLLM's
    chat_utils does; a part that is not text is refused by name (these are text-only models)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), (str, list)):
            raise ConfigError(f"each message needs a 'role' and a 'content' (a string or a list of text parts); "
                              f"got {m!r}")
        out.append(m if isinstance(m["content"], str) else {**m, "content": _joined_text(m["content"], i)})
    return out


def _joined_text(parts: list, message: int) -> str:
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            what = f"a part of type {kind!r}" if kind not in (None, "text") else f"a malformed part {part!r}"
            raise ConfigError(f"message {message}, content part {j}: {what}; only text parts "
                              f"({{'type': 'text', 'text': ...}}) are accepted: the models read text only")
        texts.append(part["text"])
    return "\n".join(texts)


def tokenize_prompt(backend: "Backend", prompt: PromptText) -> list[int]:
    """The prompt in ``backend``'s tokens: markup with control tokens parsed, content as plain text (a
    server backend gets the text whole: its server tokenises it). Where the template changes contents
    beyond locating, the prompt is tokenised whole if no content holds control-token text, else refused."""
    if backend.local_ids or not prompt.contents:
        return backend.prompt_tokens(prompt.text)  # raw text: the caller's own rendering
    if prompt.content_spans is None:
        for content in prompt.contents:
            data = content.encode("utf-8")
            if backend.tokenize(data, special=True) != backend.tokenize(data, special=False):
                raise ConfigError("a message holds control-token text (like <|im_end|>), and this chat template "
                                  "changes message contents in a way that cannot be located, so that text cannot "
                                  "be kept plain: remove it from the message")
        return backend.prompt_tokens(prompt.text)
    ids: list[int] = []
    for piece, markup in prompt.pieces():
        ids += backend.tokenize(piece.encode("utf-8"), special=markup, add_bos=not ids)
    return ids
