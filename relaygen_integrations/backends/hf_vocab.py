"""A Hugging Face tokenizer as the engine reads it: tokenising, token bytes, the end-of-generation test.

Shared by the transformers backend and the server backend, which loads only the tokenizer files of the
model a vLLM or SGLang server runs (``HFTokenizer``: no weights) so that its token ids are the server's own.
Both fingerprint the vocabulary the same way (``local.fingerprint``) as in-process backends do.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import ConfigError, ModelNotFoundError
from .local import fingerprint

# Tokens that end an assistant turn in common chat formats, treated as end of generation when the
# vocabulary has them (llama.cpp does the same from GGUF metadata and token names).
END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|end|>", "</s>")


def byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode map, which byte-level BPE vocabularies are written in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


class HFVocab:
    """Mixed into whatever holds a transformers tokenizer (``_init_vocab`` once it is loaded)."""

    path: Path

    def _init_vocab(self, tokenizer, n_vocab: int, eos_sources: tuple) -> None:
        """``eos_sources``: objects whose ``eos_token_id`` ends generation (generation config, model config)."""
        self.tokenizer, self._n_vocab = tokenizer, n_vocab
        self._pieces = tokenizer.convert_ids_to_tokens(list(range(n_vocab)))
        self._bytes = self._token_bytes_table()
        self._eog = self._end_of_generation_ids(eos_sources)
        self._bos = tokenizer.bos_token_id if self._adds_bos() else None
        self._bos_text = tokenizer.bos_token or ""
        # A fast tokenizer used by two threads at once raises "Already borrowed": a request is prepared on its
        # caller's thread while another runs. One lock per tokenizer (twins from sharing_weights share it).
        self._tokenizing = threading.Lock()

    def _token_bytes_table(self) -> list[bytes]:
        """Raw bytes per token id: byte-level BPE pieces map through GPT-2's table, SentencePiece
        pieces use '▁' for spaces and <0xNN> for bytes; special tokens are their text."""
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        decoder = self.tokenizer.backend_tokenizer.decoder if self.tokenizer.is_fast else None
        byte_level = decoder is not None and "ByteLevel" in type(decoder).__name__
        table, bd = [], byte_decoder()
        for i, piece in enumerate(self._pieces):
            piece = piece or ""
            if i in special:
                table.append(piece.encode())
            elif byte_level:
                table.append(bytes(bd[c] for c in piece) if all(c in bd for c in piece) else piece.encode())
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                table.append(bytes([int(piece[3:5], 16)]))
            else:
                table.append(piece.replace("▁", " ").encode())
        return table

    def _end_of_generation_ids(self, sources: tuple) -> set[int]:
        ids: set[int] = set()
        for source in (*sources, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            ids.update(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
        return {i for i in ids if 0 <= i < self._n_vocab}

    def _adds_bos(self) -> bool:
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return self.tokenizer.bos_token_id is not None and probe[:1] == [self.tokenizer.bos_token_id]

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        s = text.decode("utf-8", errors="replace")
        with self._tokenizing:
            ids = self.tokenizer(s, add_special_tokens=False, split_special_tokens=not special)["input_ids"]
        if add_bos and self._bos is not None and not (self._bos_text and s.startswith(self._bos_text)):
            ids = [self._bos] + ids
        return ids

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def token_text(self, token: int) -> bytes:
        return (self._pieces[token] or "").encode()

    def is_end_of_generation(self, token: int) -> bool:
        return token in self._eog

    def is_control(self, token: int) -> bool:
        return token in self.tokenizer.all_special_ids

    def document_start_token(self) -> int:
        if self._bos is not None:
            return self._bos
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ConfigError(f"{self.path.name} has neither a BOS nor an EOS token to start a scored text")
        return eos


class HFTokenizer(HFVocab):
    """Only the tokenizer of a Hugging Face model directory (the server backend's, for vLLM and SGLang):
    ``tokenizer.json`` and friends, and ``config.json`` for the vocabulary size the model's output has."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        root = self.path.parent if self.path.is_file() else self.path
        if not root.is_dir():
            raise ModelNotFoundError(f"tokenizer directory not found: {root}")
        try:
            from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        except ImportError:
            raise ConfigError("a Hugging Face tokenizer needs transformers: pip install transformers") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(root))
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"no Hugging Face tokenizer in {root}: {first[:200]}") from None
        sources: tuple = ()
        n_vocab = len(tokenizer)
        try:
            config = AutoConfig.from_pretrained(str(root))
            n_vocab, sources = getattr(config, "vocab_size", None) or n_vocab, (config,)
            sources = (GenerationConfig.from_pretrained(str(root)), config)
        except (OSError, ValueError):
            pass  # a tokenizer without its model's configs: the tokenizer's own size and end token
        self._init_vocab(tokenizer, n_vocab, sources)
        self._fingerprint: str | None = None

    def vocab_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.n_vocab, self.token_text)
        return self._fingerprint

    def adds_bos(self) -> bool:
        return self._bos is not None

    def end_token(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else min(self._eog)

    def close(self) -> None:
        pass
