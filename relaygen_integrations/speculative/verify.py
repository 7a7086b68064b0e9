"""Verification of drafted tokens: sample-and-match.

At each drafted position the target's sampler draws a token from the target distribution (the
logits the target computed for that position in the verification batch). If it equals the drafted
token, the next position is checked; otherwise the drawn token is kept and the rest of the draft
is dropped. If every drafted token matches, the last row gives one more token for free.

Why this is exact: every emitted token is a draw from the target's distribution given exactly the
tokens emitted before it; the draft only decides how many of those distributions were computed in
one batch. For a deterministic (greedy) drafter this is the same as the rejection rule of Leviathan
et al. (2023) — accept x with probability min(1, p(x)/q(x)) = p(x), else draw from p without x —
and it consumes the sampler's random numbers exactly as decoding one token at a time does, so a
seeded run gives the same tokens with or without speculation (given the same logits).
llama-cpp-python's own ``Llama.generate`` verifies the same way.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def verify_draft(sample: Callable[[np.ndarray], int], rows: np.ndarray, draft: Sequence[int]) -> list[int]:
    """``rows[i]``: target logits predicting the token after ``draft[:i]`` (``len(draft) + 1`` rows).
    Returns the accepted tokens: the matching draft prefix plus one token drawn by the target."""
    out: list[int] = []
    for i, proposed in enumerate(draft):
        token = sample(rows[i])
        out.append(token)
        if token != proposed:
            return out
    out.append(sample(rows[len(draft)]))
    return out
