"""A model behind any OpenAI-compatible completion server (vLLM, SGLang, llama.cpp's server,
llama-cpp-python's ``llama_cpp.server``): how a relay goes past one machine.

The server holds the weights, the KV cache (its prefix cache makes re-sent context cheap) and the
sampler. Each request sends the chat-templated text so far to the raw ``/v1/completions`` endpoint,
so a partial assistant turn continues exactly, and streams the reply. The engine reads the stream
one chunk (one token on llama.cpp and vLLM) at a time and runs the same cue and sentence-end matcher
as in-process; when control passes to the other model it closes the stream, and the server stops
generating (vLLM, SGLang and llama.cpp abort a request whose client disconnects).

Server-side stop strings are not used to find cues: the OpenAI protocol drops the matched stop
string from the output and servers differ in whether they say which one matched, and a word cue
needs the character after it, which a stop string cannot express.

Tokens: the server's token ids never reach the client. Each streamed chunk gets a local id in a
per-request table, so the engine's token bookkeeping works unchanged and hand-offs go by text.

It implements the engine's protocol (``core/backend.py``) directly: no KV cache here, no logits, so
no scoring (``backends/scoring.require_scoring`` says so) and no checking of another model's text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..core.backend import Step
from ..core.sampling import Sampler
from ..errors import ConfigError, ServerError
from . import server_kind
from .chat_template import ChatTemplate, load_chat_template

try:
    import requests
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the openai backend needs requests: pip install 'relaygen-integrations[openai]'") from exc

END = 0  # the local id for "the server ended the completion"
# Servers add their own defaults on top of temperature/top-p/top-k (llama-cpp-python's server: a
# repeat penalty of 1.1 and min-p 0.05); switch them off so the server samples as the local backends do.
NEUTRAL_SAMPLING = {"repeat_penalty": 1.0, "repetition_penalty": 1.0, "min_p": 0.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0}


class OpenAIBackend:
    """One model on a completion server at ``base_url`` (``http://host:port`` or ``.../v1``).

    ``chat_template``: a GGUF file, a tokenizer_config.json / model directory, or Jinja text, used
    to render chat prompts locally (servers do not expose their template for raw completions);
    ``chat_format='raw'`` joins message contents instead. ``server``: what the server is (``sglang``,
    ``vllm``, ``llama-server``, ``llama-cpp-python`` or ``openai``; default: recognised at start-up,
    ``backends/server_kind.py``), which says what it can do. ``model``: the served model's name
    (default: the first one the server lists). ``max_request_tokens``: the most tokens one streamed
    request asks for (a stream that runs out is reopened where it stopped). Network: connection errors and HTTP 5xx are retried ``retries`` times with exponential backoff
    from ``backoff`` seconds; ``timeout`` bounds the wait for each streamed chunk.
    """

    name = "openai"
    concurrency = "independent"  # each request its own backends; the servers batch
    default_max_batch = 4
    local_ids = True  # ids from a per-request table (reset clears it): the prompt is tokenised where it runs

    def __init__(self, base_url: str, model: str | None = None, chat_template: str | Path | None = None,
                 chat_format: str | None = None, api_key: str | None = None, n_ctx: int = 32768,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 0.5, max_request_tokens: int = 512,
                 server: str | None = None):
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.root_url = self.base_url.removesuffix("/v1")  # where the non-OpenAI endpoints are (server kinds)
        if chat_format not in (None, "raw"):
            raise ConfigError(f"chat_format must be None (use chat_template) or 'raw', not {chat_format!r}")
        if chat_format is None and chat_template is None:
            raise ConfigError("a server backend renders chat prompts locally: pass chat_template "
                              "(a GGUF file, tokenizer_config.json or Jinja text) or chat_format='raw'")
        self.template: ChatTemplate | None = load_chat_template(chat_template) if chat_format is None else None
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_request_tokens, self._n_ctx = max_request_tokens, n_ctx
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.model = model or self._first_model()
        self.kind = server_kind.resolve(server, self._get_json, self.root_url)
        self._pieces: list[bytes] = [b""]  # local id -> text bytes; 0 is END
        self._ids: dict[bytes, int] = {}
        self._response: requests.Response | None = None
        self._chunks: Iterator[dict] | None = None
        self._stream_context: list[int] = []  # what the open stream continues
        self._ended = False  # the open stream's last chunk said the completion is over
        self._opened = 0  # streams opened during the current next_token call

    # --- HTTP --------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kw) -> requests.Response:
        """One request with retries on connection errors and 5xx; a clear error naming the URL."""
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                r = self.session.request(method, url, timeout=(10, self.timeout), **kw)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.retries:
                    raise ServerError(f"cannot reach {url} after {attempt + 1} attempts "
                                      f"({type(exc).__name__}); is the server running?") from None
            else:
                if r.status_code < 500 or attempt == self.retries:
                    if r.status_code != 200:
                        raise ServerError(f"{url} answered HTTP {r.status_code}: {r.text[:300].strip()}")
                    return r
                r.close()
            time.sleep(self.backoff * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_json(self, path: str):
        """A GET on the server's root (for recognising its kind): its JSON, or None however it fails."""
        try:
            r = self.session.get(self.root_url + path, timeout=(5, 5))
            return r.json() if r.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def _first_model(self) -> str:
        data = self._send("GET", "/models").json().get("data") or []
        if not data:
            raise ServerError(f"{self.base_url}/models lists no model")
        limit = data[0].get("max_model_len")  # vLLM says how long its context is
        if isinstance(limit, int) and limit > 0:
            self._n_ctx = min(self._n_ctx, limit)
        return data[0]["id"]

    def _open(self, context: Sequence[int], sampler: Sampler) -> None:
        self._close_stream()
        p = sampler.params
        body = {
            "model": self.model, "prompt": self._text(context), "stream": True,
            "max_tokens": min(self.max_request_tokens, p.max_tokens),
            # each stream of a request its own seed, from the request's seed and where the stream starts:
            # never from how many requests this backend served before (the same request samples the same)
            "temperature": p.temperature, "top_p": p.top_p, "seed": (p.seed + len(context)) % 2**31,
        }
        if p.top_k > 0:
            body["top_k"] = p.top_k  # not in OpenAI's API; vLLM, SGLang and llama.cpp accept it
        body.update(NEUTRAL_SAMPLING)
        self._body = body
        self._response = self._send("POST", "/completions", json=body, stream=True)
        self._chunks = self._events(self._response)
        self._stream_context = list(context)
        self._opened += 1

    def _events(self, response: requests.Response) -> Iterator[dict]:
        for line in response.iter_lines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise ServerError(f"{self.base_url}/completions: {event['error']}")
            yield event["choices"][0]

    def _close_stream(self) -> None:
        if self._response is not None:
            self._response.close()  # the server sees the disconnect and stops generating
        self._response = self._chunks = None
        self._ended = False

    # --- generation --------------------------------------------------------------------------
    def next_token(self, context: Sequence[int], sampler: Sampler) -> Step:
        """The next streamed token (one call of one token: the server's own prompt work is its prefix
        cache's, not seen here); ``requests``: the completion streams this step opened."""
        self._opened = 0
        token = self._next(context, sampler)
        return Step(token, calls=(1,) if token != END else (), requests=self._opened)

    def _next(self, context: Sequence[int], sampler: Sampler) -> int:
        if self._chunks is None or list(context) != self._stream_context:
            self._open(context, sampler)
        elif self._ended:
            self._close_stream()
            return END
        failures = 0
        while True:
            try:
                choice = next(self._chunks, None)
            except requests.RequestException as exc:
                failures += 1
                if failures > self.retries:
                    self._raise_stream_failure(f"the stream broke ({type(exc).__name__}) {failures} times")
                self._open(self._stream_context, sampler)  # continue from what arrived
                continue
            if choice is None or choice.get("finish_reason") == "length" and not choice.get("text"):
                failures += 1  # a stream that ends with no token, again and again, would loop forever
                if failures > self.retries:
                    self._raise_stream_failure(f"{failures} streams in a row ended without a token")
                self._open(self._stream_context, sampler)  # the per-request cap, not the answer's end
                continue
            text = choice.get("text") or ""
            if text:
                token = self._intern(text.encode("utf-8"))
                self._stream_context.append(token)
                self._ended = choice.get("finish_reason") == "stop"  # the last chunk can carry text
                return token
            if choice.get("finish_reason") == "stop":
                self._close_stream()
                return END

    def _raise_stream_failure(self, what: str):
        """Some servers (llama-cpp-python's) reject a request only after the stream has started, so
        the error text never arrives; ask once without streaming to report the server's own words."""
        self._close_stream()
        self._send("POST", "/completions", json={**self._body, "stream": False, "max_tokens": 1})
        raise ServerError(f"{self.base_url}/completions: {what}")

    # --- the token protocol, over local ids --------------------------------------------------
    def _intern(self, data: bytes) -> int:
        """A local id for a piece of text. The table lives for one request (``reset`` clears it), and only
        the thread running that request uses it (``local_ids``: the engine tokenises the prompt there)."""
        token = self._ids.get(data)
        if token is None:
            token = self._ids[data] = len(self._pieces)
            self._pieces.append(data)
        return token

    def _text(self, context: Sequence[int]) -> str:
        return b"".join(self._pieces[t] for t in context).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.tokenize(prompt.encode("utf-8"), special=True)

    def cached_prefix(self, context: Sequence[int]) -> int:
        """Not visible from here: the server's prefix cache decides what it re-evaluates."""
        return 0

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        return [self._intern(text)] if text else []

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token]

    def is_end_of_generation(self, token: int) -> bool:
        return token == END

    def vocab_fingerprint(self) -> str:
        return f"server:{self.base_url}:{id(self)}"  # local ids mean nothing elsewhere: hand off text

    def chat_prompt(self, messages: list[dict]) -> str:
        if self.template is None:
            return "\n\n".join(m["content"] for m in messages)
        return self.template.render(messages)

    def pause(self) -> None:
        self._close_stream()

    def on_gpu(self) -> bool:
        return False  # not known from here: the server decides

    def scorer(self) -> None:
        return None  # servers sample on their side: no distributions over given text

    def why_no_scoring(self, what: str) -> str:
        """Why ``what`` (the check, calibration, log-likelihoods) cannot run on this server, and what instead."""
        return server_kind.scoring_refusal(self.kind, what)

    def reset(self) -> None:
        """A new request: no open stream, and a fresh id table (a long-lived backend must not keep every
        prompt and answer it ever served)."""
        self._close_stream()
        self._stream_context = []
        self._pieces, self._ids = [b""], {}

    def close(self) -> None:
        self._close_stream()
        self.session.close()
