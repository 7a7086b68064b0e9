"""One request, prepared once: what the engine runs, whichever slot or thread runs it.

``RelayEngine.prepare`` renders the prompt, validates the sampling settings (fixing the seed) and tokenises
the prompt once for each model that takes part, on the caller's thread; the run, the concurrent engine's
worker and every entry point then pass the ``Request`` along instead of preparing it again. A request
also carries its cancellation: whoever holds it (a client that went away) cancels it, and the run stops
at its next model step, whatever the backend.

Chat messages are rendered by the large model's template and tokenised with each message's content as
plain text (``chat.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import Cancelled, ContextWindowError
from .chat import PromptText
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .backend import Backend


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


def check_fits(ids: list[int], backend: "Backend", role: str) -> None:
    if len(ids) + 1 > backend.n_ctx:
        raise ContextWindowError(f"the prompt is {len(ids)} tokens, longer than the {role} model's "
                                 f"context window of {backend.n_ctx} tokens")
