"""One model in a run: its backend, the token context it has seen, and how far it has caught up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import ModelStats, Role

if TYPE_CHECKING:
    from .backend import Backend
    from .transcript import Piece


class Participant:
    """A participant's context is its prompt plus the output tokens it has caught up on; before a model
    writes, it evaluates only what the other model wrote since it last ran."""

    def __init__(self, role: Role, backend: "Backend", prompt_ids: list[int], stats: ModelStats):
        self.role, self.backend, self.stats = role, backend, stats
        self.context = list(prompt_ids)
        self.synced = 0  # number of output pieces already in self.context
        self.first_step = True

    def catch_up(self, pieces: "list[Piece]", by_ids: bool) -> None:
        """Add what the other model wrote since: its token ids, or its text re-tokenised by this model."""
        new = pieces[self.synced:]
        self.synced = len(pieces)
        if by_ids:
            for p in new:
                self.context.append(p.token)
                self.stats.handoff_tokens += p.role != self.role
            return
        foreign = b""
        for p in new + [None]:
            if p is not None and p.role != self.role:
                foreign += p.data
                continue
            if foreign:
                ids = self.backend.tokenize(foreign)
                self.context += ids
                self.stats.handoff_tokens += len(ids)
                foreign = b""
            if p is not None:
                self.context.append(p.token)

    def wrote(self, token: int, pieces: int) -> None:
        """This model's own token, now the transcript's last of ``pieces``."""
        self.context.append(token)
        self.synced = pieces

    def rollback(self, keep: int) -> None:
        """Back to the transcript's first ``keep`` pieces."""
        if self.synced > keep:
            del self.context[len(self.context) - (self.synced - keep):]
            self.synced = keep
