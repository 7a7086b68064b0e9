"""A GGUF model's vocabulary through llama-cpp-python: tokenising, token bytes, the end-of-generation test.

Shared by the in-process llama.cpp backend and the server backend, which loads only the vocabulary
(``GGUFVocab``: no weights, half a second) so that its token ids are the server's own and hand-offs to a
server go by id. Both fingerprint the vocabulary the same way (``local.fingerprint``), so a pair of one server
and one in-process model over the same GGUF hands off by id too.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp

from . import llamacpp_private as private
from .local import fingerprint


class LlamaVocab:
    """Mixed into whatever holds a ``llama_cpp.Llama`` as ``self.llm`` (``_init_vocab`` after loading it)."""

    llm: llama_cpp.Llama

    def _init_vocab(self) -> None:
        self._vocab = private.vocab(self.llm)
        self._n_vocab = self.llm.n_vocab()
        self._bos_piece = private.token_piece(self.llm, self.llm.token_bos())

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        if add_bos and self._bos_piece and text.startswith(self._bos_piece.encode()):
            add_bos = False  # the template already wrote it
        return self.llm.tokenize(text, add_bos=add_bos, special=special)

    def token_bytes(self, token: int) -> bytes:
        # Not Llama.detokenize: its fixed 32-byte buffer silently returns b"" for longer pieces
        # (runs of spaces in code), which would drop text from the output.
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, True)
        return buf.raw[:n]

    def token_text(self, token: int) -> bytes:
        return llama_cpp.llama_vocab_get_text(self._vocab, token) or b""

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def is_control(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_control(self._vocab, token))

    def adds_bos(self) -> bool:
        return self.llm.token_bos() >= 0 and private.adds_bos(self.llm)

    def document_start_token(self) -> int:
        """The token that precedes a text with no context: BOS, or EOS for models without one."""
        return self.llm.token_bos() if self.adds_bos() else self.llm.token_eos()

    def end_token(self) -> int:
        return self.llm.token_eos()


class GGUFVocab(LlamaVocab):
    """Only the vocabulary of a GGUF file (the server backend's tokenizer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.llm = private.vocab_only(str(self.path))
        self._init_vocab()
        self._fingerprint: str | None = None

    def vocab_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.n_vocab, self.token_text)
        return self._fingerprint

    def close(self) -> None:
        self.llm.close()
