"""A deterministic scripted *model* for testing the relay state machine (not a stand-in for the engine).

It behaves like a real backend (tokenizer, KV context, logits) but "knows" one target text, cut into
pieces: whatever the output so far, it emits the piece of the script that starts where the output
ends. Two scripted models with one script let a test assert exactly which model wrote which piece.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from relaygen_integrations.backends.local import LocalBackend

SEP = b"\x01>>"  # ends every prompt; output starts after it


class ScriptedBackend(LocalBackend):
    name = "scripted"

    def __init__(self, pieces: Sequence[str | bytes], eos_at: Sequence[int] = (), extra_vocab: Sequence[bytes] = (),
                 n_ctx: int = 4096, template: str = "chatml"):
        super().__init__()
        self.pieces = [p.encode() if isinstance(p, str) else p for p in pieces]
        self.script = b"".join(self.pieces)
        self.offsets, at = {}, 0
        for piece in self.pieces:
            self.offsets.setdefault(at, piece)
            at += len(piece)
        self.eos_at = set(eos_at)  # output byte offsets where this model ends generation instead
        vocab = [bytes([b]) for b in range(256)] + [SEP] + list(dict.fromkeys(self.pieces)) + list(extra_vocab)
        self.vocab = list(dict.fromkeys(vocab)) + [b"<eos>"]
        self.ids = {v: i for i, v in enumerate(self.vocab)}
        self.eos = len(self.vocab) - 1
        self._n_ctx, self.template = n_ctx, template
        self.longest = max(len(v) for v in self.vocab[:-1])
        self.evaluated_positions: list[int] = []  # every KV position ever evaluated (tests: none twice)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_vocab(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        out, i = [], 0
        while i < len(text):  # greedy longest match
            for n in range(min(self.longest, len(text) - i), 0, -1):
                if text[i:i + n] in self.ids and self.ids[text[i:i + n]] != self.eos:
                    out.append(self.ids[text[i:i + n]])
                    i += n
                    break
        return out

    def token_bytes(self, token: int) -> bytes:
        return self.vocab[token]

    def token_text(self, token: int) -> bytes:
        return self.vocab[token]

    def is_end_of_generation(self, token: int) -> bool:
        return token == self.eos

    def chat_prompt(self, messages: list[dict]) -> str:
        body = "".join(f"[{m['role']}]{m['content']}" for m in messages)
        return f"{self.template}:{body}" + SEP.decode()

    def _truncate(self, n: int) -> None:
        pass

    def _evaluate(self, tokens: Sequence[int]) -> None:
        self.evaluated_positions.extend(range(len(self.tokens), len(self.tokens) + len(tokens)))

    def output_bytes(self) -> bytes:
        sep = self.ids[SEP]
        start = len(self.tokens) - self.tokens[::-1].index(sep)
        return b"".join(self.vocab[t] for t in self.tokens[start:])

    def logits(self) -> np.ndarray:
        done = self.output_bytes()
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        if len(done) in self.eos_at or len(done) >= len(self.script):
            logits[self.eos] = 10.0
        elif len(done) in self.offsets:
            logits[self.ids[self.offsets[len(done)]]] = 10.0
        else:  # output ends inside a piece: finish it byte by byte
            logits[self.ids[self.script[len(done):len(done) + 1]]] = 10.0
        return logits
