"""Hand-offs to a server by token id: the streaming request and reply of each server kind.

With the model's own tokenizer (``GGUFVocab``) the server backend's token ids are the server's, so the
context goes to the server as a list of ids and the generated ids come back from the stream: the large
model never sees the small model's sentence re-tokenised. Each kind's fields, from its released source:

    llama-server      POST /completion, ``prompt`` a list of ids, ``return_tokens``; each streamed chunk has
                      ``tokens`` (the token it sent) and ``stop``/``stop_type`` (llama.cpp@0c1e57098 as
                      vendored in llama-cpp-python 0.3.36: tools/server/server-context.cpp
                      ``send_partial_response``, server-task.cpp ``to_json_non_oaicompat``)
    vllm              POST /v1/completions, ``prompt`` a list of ids, ``return_token_ids``; each chunk's
                      ``choices[0].token_ids`` (vLLM 0.34.0: entrypoints/openai/completion/protocol.py
                      ``CompletionResponseStreamChoice``)
    sglang            POST /generate, ``input_ids``, ``sampling_params``; each chunk's ``output_ids`` (all so
                      far, or only the new ones with ``--incremental-streaming-output``) and
                      ``meta_info.completion_tokens`` / ``finish_reason`` (SGLang 0.5.23:
                      srt/managers/tokenizer_manager.py)

llama-server holds back a token that ends inside a UTF-8 character and sends its text with the next
token, listing only that one: the held-back ids are then re-derived from the text (``missing_ids``).
Servers that take only text (llama-cpp-python's, any other) get the text, and each streamed piece is
tokenised here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core.sampling import SamplingParams
from ..errors import ConfigError, ServerError

ID_PROMPTS = ("sglang", "vllm", "llama-server")  # kinds that take a list of token ids as the prompt
# Servers add their own defaults on top of temperature/top-p/top-k (llama-cpp-python's server: a
# repeat penalty of 1.1 and min-p 0.05); switch them off so the server samples as the local backends do.
NEUTRAL_SAMPLING = {"repeat_penalty": 1.0, "repetition_penalty": 1.0, "min_p": 0.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0}
PROBE_TEXT = "Relay check: 12 + 30 = 42. Therefore, the answer is 42."


def stream_request(kind: str, model: str, ids: list[int], p: SamplingParams, max_tokens: int,
                   seed: int) -> tuple[str, dict]:
    """The path (from the server's root) and body of a streamed completion of the token ids ``ids``."""
    if kind == "llama-server":
        body = {"prompt": ids, "stream": True, "n_predict": max_tokens, "return_tokens": True,
                "cache_prompt": True, "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k,
                "seed": seed, **NEUTRAL_SAMPLING}
        return "/completion", body
    if kind == "vllm":
        body = {"model": model, "prompt": ids, "stream": True, "max_tokens": max_tokens, "return_token_ids": True,
                "temperature": p.temperature, "top_p": p.top_p, "seed": seed, **NEUTRAL_SAMPLING}
        if p.top_k > 0:
            body["top_k"] = p.top_k
        return "/v1/completions", body
    if kind == "sglang":
        sampling = {"max_new_tokens": max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                    "top_k": p.top_k if p.top_k > 0 else -1, "sampling_seed": seed, "min_p": 0.0,
                    "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                    "skip_special_tokens": False}
        return "/generate", {"input_ids": ids, "sampling_params": sampling, "stream": True}
    raise ConfigError(f"a {kind} server takes no token-id prompts")


class ChunkReader:
    """Turns one stream's events into (new token ids, text, finish): finish is ``"stop"`` (the answer
    ended), ``"length"`` (the request's cap) or None."""

    def __init__(self, kind: str):
        self.kind, self.seen = kind, 0

    def __call__(self, event: dict) -> tuple[list[int], bytes, str | None]:
        if self.kind == "llama-server":
            ids = [int(t) for t in event.get("tokens") or []]
            finish = None
            if event.get("stop"):
                finish = "length" if event.get("stop_type") == "limit" else "stop"
            return ids, (event.get("content") or "").encode("utf-8"), finish
        if self.kind == "sglang":
            meta = event.get("meta_info") or {}
            total = int(meta.get("completion_tokens", self.seen))
            output = [int(t) for t in event.get("output_ids") or []]
            ids = output[len(output) - (total - self.seen):] if total > self.seen else []
            self.seen = total
            reason = (meta.get("finish_reason") or {}).get("type")
            return ids, b"", None if reason is None else "length" if reason == "length" else "stop"
        choice = event["choices"][0]  # vllm
        reason = choice.get("finish_reason")
        return ([int(t) for t in choice.get("token_ids") or []], (choice.get("text") or "").encode("utf-8"),
                None if reason is None else "length" if reason == "length" else "stop")


def missing_ids(ids: list[int], text: bytes, token_bytes: Callable[[int], bytes],
                tokenize: Callable[[bytes], list[int]]) -> list[int]:
    """llama-server lists only the last token of a chunk whose text includes tokens it held back (a
    character split over tokens): those come first, re-derived from the chunk's text (its tokenisation, where
    that ends with the listed tokens; a prefix alone may be a broken character, which would not tokenise)."""
    if not text or not ids:
        return ids
    listed = b"".join(token_bytes(t) for t in ids)
    if len(text) <= len(listed) or not text.endswith(listed):
        return ids
    whole = tokenize(text)
    if whole[len(whole) - len(ids):] == ids:
        return whole
    return tokenize(text[: len(text) - len(listed)]) + ids


def tokenize_request(kind: str, model: str, text: str) -> tuple[str, dict, bool] | None:
    """The path and body asking the server to tokenise ``text``, and whether its answer starts with the BOS
    token a model that adds one adds (None: no such endpoint). vLLM and SGLang: /tokenize ``prompt``,
    ``add_special_tokens``; llama-server: ``content``, ``add_special``; llama-cpp-python: /extras/tokenize
    ``input`` (special tokens and BOS always). All answer ``{"tokens": [...]}``."""
    if kind in ("vllm", "sglang"):
        return "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False}, False
    if kind == "llama-server":
        return "/tokenize", {"content": text, "add_special": False}, False
    if kind == "llama-cpp-python":
        return "/extras/tokenize", {"model": model, "input": text}, True
    return None


def tokenizer_files(source) -> Path | None:
    """Where a model's tokenizer is, from what names its chat template: a GGUF file, or a Hugging Face model
    directory (or a file in one) with ``tokenizer.json`` / ``tokenizer_config.json``; None for Jinja text."""
    try:
        path = Path(str(source)).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return path
        root = path.parent if path.is_file() else path
        if root.is_dir() and ((root / "tokenizer.json").is_file() or (root / "tokenizer_config.json").is_file()):
            return root
    except OSError:  # Jinja text too long to be a file name
        pass
    return None


def load_vocab(backend, tokenizer, chat_template):
    """The served model's vocabulary (``GGUFVocab`` or ``HFTokenizer``) for an ``OpenAIBackend``, or None:
    ``tokenizer`` is auto (where its chat template comes from, a GGUF file or model directory, where the server
    takes id prompts), model (that, whatever the server), none, or the files themselves. Checked at once against
    the server's own tokenizer where it has an endpoint for it."""
    own = tokenizer_files(chat_template) if chat_template is not None else None
    if tokenizer in (None, "auto"):
        tokenizer = own if backend.kind in ID_PROMPTS else None
    elif tokenizer == "model":
        if own is None:
            raise ConfigError("tokenizer='model' takes the tokenizer from where the chat template comes from (a GGUF "
                              "file or a model directory), and the chat template here is neither: "
                              f"{str(chat_template)[:80]!r}")
        tokenizer = own
    if tokenizer in (None, False, "none"):
        return None
    path = tokenizer_files(tokenizer)
    if path is None:
        raise ConfigError(f"tokenizer must be auto, model, none, the served model's GGUF file or its Hugging Face "
                          f"directory, got {str(tokenizer)!r}" + ("" if Path(str(tokenizer)).exists() else " (no such file)"))
    if path.suffix == ".gguf":
        from .llamacpp_vocab import GGUFVocab as Vocab
    else:
        from .hf_vocab import HFTokenizer as Vocab
    vocab = Vocab(path)
    asked = tokenize_request(backend.kind, backend.model, PROBE_TEXT)
    if asked is not None:
        route, body, with_bos = asked
        ours = vocab.tokenize(PROBE_TEXT.encode("utf-8"), special=with_bos, add_bos=with_bos)
        check_same_tokenizer(backend.root_url, ours, backend.post_root(route, body), str(path))
    return vocab


def check_same_tokenizer(url: str, ours: list[int], theirs: object, tokenizer: str) -> None:
    """One clear error at start-up when the server tokenises differently from the local tokenizer."""
    if not isinstance(theirs, dict) or not isinstance(theirs.get("tokens"), list):
        raise ServerError(f"{url}/tokenize answered {str(theirs)[:200]!r}, not a token list")
    got = [t if isinstance(t, int) else t.get("id") for t in theirs["tokens"]]
    if got != ours:
        at = next((i for i, (a, b) in enumerate(zip(ours, got)) if a != b), min(len(ours), len(got)))
        raise ConfigError(f"the server at {url} tokenises differently from the tokenizer {tokenizer} (first "
                          f"difference at token {at}: {got[at:at + 3]} there, {ours[at:at + 3]} here): give the "
                          "tokenizer of the model the server runs, or no tokenizer (hand-offs by text)")
