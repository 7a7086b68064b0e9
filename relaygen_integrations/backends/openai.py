"""A model behind any OpenAI-compatible completion server (vLLM, SGLang, llama.cpp's server,
llama-cpp-python's ``llama_cpp.server``): how a relay goes past one machine.

The server holds the weights, the KV cache (its prefix cache makes re-sent context cheap) and the
sampler. Each request sends the context so far and streams the reply; the engine reads it one token at
a time and runs the same cue and sentence-end matcher as in process; when control passes to the other
model it closes the stream, and the server stops generating (vLLM, SGLang and llama.cpp abort a request
whose client disconnects). Server-side stop strings are not used to find cues: the OpenAI protocol drops
the matched stop string, and a word cue needs the character after it.

Tokens: with the served model's tokenizer (``tokenizer=``, a GGUF file or Hugging Face directory; by
default the chat template's source where the server takes token-id prompts) the ids are the server's own:
the context goes as a list of ids and the generated ids come back from the stream (``server_tokens.py``),
checked once at start-up against the server's ``/tokenize``. Without one, each streamed piece of text gets
a local id in a per-request table and hand-offs go by text (``local_ids``).

Scoring (the check, calibration, log-likelihoods) goes by id too, on the servers that can
(``server_scoring.py``); ``why_no_scoring`` says why another cannot, and what to do instead.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Iterator, Sequence

from ..core.backend import Step
from ..core.sampling import Sampler, SamplingParams
from ..errors import ConfigError, ServerError
from . import server_kind, server_scoring, server_tokens
from .chat_template import ChatTemplate, load_chat_template
from .server_tokens import NEUTRAL_SAMPLING

try:
    import requests
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the openai backend needs requests: pip install 'relaygen-integrations[openai]'") from exc

END = 0  # the local id for "the server ended the completion" (without a tokenizer)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class OpenAIBackend:
    """One model on a completion server at ``base_url`` (``http://host:port`` or ``.../v1``).

    ``chat_template``: a GGUF file, a tokenizer_config.json / model directory, or Jinja text, used
    to render chat prompts locally (servers do not expose their template for raw completions);
    ``chat_format='raw'`` joins message contents instead. ``tokenizer``: the served model's GGUF file or Hugging
    Face directory, for hand-offs and scoring by token id; ``"auto"`` (default): where ``chat_template`` comes
    from (a GGUF file, a model directory) if the server takes token-id prompts; ``"model"``: that, whatever the
    server; ``"none"``. ``server``: what the server is (``sglang``, ``vllm``,
    ``llama-server``, ``llama-cpp-python`` or ``openai``; default: recognised at start-up,
    ``backends/server_kind.py``), which says what it can do. ``model``: the served model's name
    (default: the first one the server lists). ``max_request_tokens``: the most tokens one streamed
    request asks for (a stream that runs out is reopened where it stopped). Network: connection errors
    and HTTP 5xx are retried ``retries`` times with exponential backoff from ``backoff`` seconds;
    ``timeout`` bounds the wait for each streamed chunk.
    """

    name = "openai"
    concurrency = "independent"  # each request its own backends; the servers batch
    default_max_batch = 4

    def __init__(self, base_url: str, model: str | None = None, chat_template: str | Path | None = None,
                 chat_format: str | None = None, api_key: str | None = None, n_ctx: int = 32768,
                 timeout: float = 120.0, retries: int = 3, backoff: float = 0.5, max_request_tokens: int = 512,
                 server: str | None = None, tokenizer: str | Path | bool | None = None):
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
        self.vocab = server_tokens.load_vocab(self, tokenizer, chat_template)
        self.local_ids = self.vocab is None  # ids from a per-request table: the prompt is tokenised where it runs
        self.by_id = self.vocab is not None and self.kind in server_tokens.ID_PROMPTS
        self.end_id = END if self.vocab is None else self.vocab.end_token()
        self.scoring_problem = server_scoring.problem(self)  # None where this server scores (probed once)
        self._vllm_generate: bool | None = None
        self.text_keys: dict[str, list[int]] | None = None  # llama-cpp-python's top choices: text -> ids
        self._pieces: list[bytes] = [b""]  # local id -> text bytes; 0 is END
        self._ids: dict[bytes, int] = {}
        self._response: requests.Response | None = None
        self._chunks: Iterator[tuple[list[int], str | None]] | None = None
        self._queue: deque[int] = deque()  # ids of the open stream not yet handed out
        self._stream_context: list[int] = []  # what the open stream continues
        self._server_holds: list[int] = []  # what the server last evaluated for this backend (its prefix cache)
        self._ended = False  # the open stream said the completion is over
        self._opened = 0  # streams opened during the current next_token call
        self._prefilled = 0  # tokens the streams opened by this next_token call had the server evaluate

    # --- HTTP --------------------------------------------------------------------------------
    def _send(self, method: str, path: str, root: bool = False, **kw) -> requests.Response:
        """One request with retries on connection errors and 5xx; a clear error naming the URL.
        ``path``: under ``/v1``, or under the server's root with ``root``."""
        url = (self.root_url if root else self.base_url) + path
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

    def post_root(self, path: str, body: dict):
        """A JSON POST on the server's root (``/generate``, ``/tokenize``...), with retries: its JSON."""
        r = self._send("POST", path, root=True, json=body)
        try:
            return r.json()
        except ValueError:
            raise ServerError(f"{self.root_url}{path} answered something that is not JSON: {r.text[:200]!r}") from None

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
        # each stream of a request its own seed, from the request's seed and where the stream starts:
        # never from how many requests this backend served before (the same request samples the same)
        seed, most = (p.seed + len(context)) % 2**31, min(self.max_request_tokens, p.max_tokens)
        if self.by_id:
            path, body = server_tokens.stream_request(self.kind, self.model, list(context), p, most, seed)
            root, read = True, server_tokens.ChunkReader(self.kind)
        else:
            path, root, read = "/completions", False, self._text_chunk
            body = {"model": self.model, "prompt": self._text(context), "stream": True, "max_tokens": most,
                    "temperature": p.temperature, "top_p": p.top_p, "seed": seed, **NEUTRAL_SAMPLING}
            if p.top_k > 0:
                body["top_k"] = p.top_k  # not in OpenAI's API; vLLM, SGLang and llama.cpp accept it
        self._request = (path, root, body)
        self._prefilled += max(1, len(context) - common_prefix(context, self._server_holds))
        self._response = self._send("POST", path, root=root, json=body, stream=True)
        self._chunks = self._events(self._response, read)
        self._stream_context = list(context)
        self._server_holds = self._stream_context
        self._opened += 1

    def _events(self, response: requests.Response, read) -> Iterator[tuple[list[int], str | None]]:
        for line in response.iter_lines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise ServerError(f"{response.url}: {event['error']}")
            ids, text, finish = read(event)
            if self.by_id and self.kind == "llama-server":
                ids = server_tokens.missing_ids(ids, text, self.vocab.token_bytes, self.vocab.tokenize)
            yield ids, finish

    def _text_chunk(self, event: dict) -> tuple[list[int], bytes, str | None]:
        """A chunk of the OpenAI completion stream: its text as ids (a local id, or the tokenizer's)."""
        choice = event["choices"][0]
        text = (choice.get("text") or "").encode("utf-8")
        ids = [] if not text else [self._intern(text)] if self.vocab is None else self.vocab.tokenize(text)
        reason = choice.get("finish_reason")
        return ids, text, None if reason is None else "length" if reason == "length" else "stop"

    def _close_stream(self) -> None:
        if self._response is not None:
            self._response.close()  # the server sees the disconnect and stops generating
        self._response = self._chunks = None
        self._queue.clear()
        self._ended = False

    # --- generation --------------------------------------------------------------------------
    def next_token(self, context: Sequence[int], sampler: Sampler) -> Step:
        """The next streamed token. Metered as in process: a step that opened a stream is one call of what
        the server's prefix cache lacked (as far as this backend knows: what it last sent and read), any
        other one call of one token; ``requests``: the completion streams this step opened."""
        self._opened = self._prefilled = 0
        token = self._next(context, sampler)
        if token == END and self.vocab is None:  # the stream ended: nothing evaluated for it
            return Step(token, requests=self._opened)
        return Step(token, calls=(self._prefilled or 1,), requests=self._opened)

    def _next(self, context: Sequence[int], sampler: Sampler) -> int:
        if self._chunks is None or list(context) != self._stream_context:
            self._open(context, sampler)
        failures = 0
        while True:
            if self._queue:
                token = self._queue.popleft()
                self._stream_context.append(token)
                self._server_holds = self._stream_context
                return token
            if self._ended:
                self._close_stream()
                return self.end_id
            try:
                item = next(self._chunks, None)
            except requests.RequestException as exc:
                failures += 1
                if failures > self.retries:
                    self._raise_stream_failure(f"the stream broke ({type(exc).__name__}) {failures} times")
                self._open(self._stream_context, sampler)  # continue from what arrived
                continue
            if item is None or item[1] == "length" and not item[0]:
                failures += 1  # a stream that ends with no token, again and again, would loop forever
                if failures > self.retries:
                    self._raise_stream_failure(f"{failures} streams in a row ended without a token")
                self._open(self._stream_context, sampler)  # the per-request cap, not the answer's end
                continue
            ids, finish = item
            self._queue.extend(ids)
            self._ended = finish == "stop"

    def _raise_stream_failure(self, what: str):
        """Some servers (llama-cpp-python's) reject a request only after the stream has started, so
        the error text never arrives; ask once without streaming to report the server's own words."""
        self._close_stream()
        path, root, body = self._request
        self._send("POST", path, root=root, json={**body, "stream": False})
        raise ServerError(f"{self.root_url if root else self.base_url}{path}: {what}")

    # --- the token protocol: the tokenizer's ids, or local ones --------------------------------
    def _intern(self, data: bytes) -> int:
        """A local id for a piece of text. The table lives for one request (``reset`` clears it), and only
        the thread running that request uses it (``local_ids``: the engine tokenises the prompt there)."""
        token = self._ids.get(data)
        if token is None:
            token = self._ids[data] = len(self._pieces)
            self._pieces.append(data)
        return token

    def _text(self, context: Sequence[int]) -> str:
        if self.vocab is not None and context and self.vocab.adds_bos() and context[0] == self.vocab.document_start_token():
            context = context[1:]  # a server given text adds its own BOS
        return b"".join(map(self.token_bytes, context)).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.tokenize(prompt.encode("utf-8"), special=True, add_bos=True)

    def cached_prefix(self, context: Sequence[int]) -> int:
        """Not visible from here: the server's prefix cache decides what it re-evaluates."""
        return 0

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        if self.vocab is not None:
            return self.vocab.tokenize(text, special, add_bos)
        return [self._intern(text)] if text else []

    def token_bytes(self, token: int) -> bytes:
        return self.vocab.token_bytes(token) if self.vocab is not None else self._pieces[token]

    def is_end_of_generation(self, token: int) -> bool:
        return self.vocab.is_end_of_generation(token) if self.vocab is not None else token == END

    def vocab_fingerprint(self) -> str:
        if self.vocab is not None:
            return self.vocab.vocab_fingerprint()  # the same as an in-process model's over the same GGUF
        return f"server:{self.base_url}:{id(self)}"  # local ids mean nothing elsewhere: hand off text

    def chat_prompt(self, messages: list[dict]) -> str:
        if self.template is None:
            return "\n\n".join(m["content"] for m in messages)
        return self.template.render(messages)

    def pause(self) -> None:
        self._close_stream()

    def on_gpu(self) -> bool:
        return False  # not known from here: the server decides

    # --- scoring (server_scoring.py) -----------------------------------------------------------
    def scorer(self) -> "server_scoring.ServerScoring | None":
        return server_scoring.ServerScoring(self) if self.scoring_problem is None else None

    def why_no_scoring(self, what: str) -> str:
        """Why ``what`` (the check, calibration, log-likelihoods) cannot run on this server, and what instead."""
        return server_kind.scoring_refusal(self.kind, what, self.scoring_problem)

    def check_rows(self, context: Sequence[int], n: int, then: int | None = None):
        """The large model's view of the last ``n`` tokens of ``context`` (and of ``then`` after them), scored
        on the server in one request: its top choices at each position (``check.Scores``)."""
        scored_context = list(context) + ([then] if then is not None else [])
        scored = server_scoring.score(self, scored_context, len(context) - n)
        self._server_holds = scored_context
        return server_scoring.TopRows(scored, scored_context[len(context) - n:]), scored.evaluated

    def can_check(self) -> bool:
        return self.scoring_problem is None

    def check_sampling(self, params: SamplingParams) -> None:
        why = server_scoring.exact_draws(params)
        if why:
            raise ConfigError(why)

    def vllm_generate(self) -> bool:
        """Whether this vLLM has its token-in endpoint (``--enable-scale-out``), asked once."""
        if self._vllm_generate is None:
            r = self.session.post(self.root_url + "/inference/v1/generate", timeout=(10, self.timeout), json={
                "model": self.model, "token_ids": [self.end_id], "sampling_params": {"max_tokens": 1}})
            self._vllm_generate = r.status_code == 200
        return self._vllm_generate

    def reset(self) -> None:
        """A new request: no open stream, and a fresh id table (a long-lived backend must not keep every
        prompt and answer it ever served)."""
        self._close_stream()
        self._stream_context = []
        if self.vocab is None:
            self._server_holds = []  # local ids of another request mean nothing
        self._pieces, self._ids = [b""], {}

    def close(self) -> None:
        self._close_stream()
        self.session.close()
        if self.vocab is not None:
            self.vocab.close()
