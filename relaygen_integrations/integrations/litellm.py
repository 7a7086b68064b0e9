"""LiteLLM provider ``relaygen``: ``litellm.completion(model="relaygen/<pair>[:<profile>]", ...)``.

``register()`` adds it to ``litellm.custom_provider_map``; the LiteLLM proxy loads the module-level
``handler`` from its config (docs/litellm-serve.md). Each model string loads one engine per process, on first use.

Concurrency: each model string is one ``ConcurrentEngine`` (``serving/pool.py``) serving up to
``max_batch`` requests at once (default: the backend's ``default_max_batch``, 4 on llama.cpp and servers;
llama.cpp evaluates them together in batched rounds); more wait up to ``queue_timeout`` seconds for a
free sequence, then fail with ``litellm.Timeout``. A request is prepared once, on the call, and runs in
a worker of the engine, so a slow or vanished reader never holds the others back; an async stream gets
its events posted to the event loop, and a stream that is closed or cancelled stops its request within
a step.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from typing import Any

# Importing litellm otherwise fetches a model price list from GitHub; its bundled copy is enough here.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import CustomLLM  # noqa: E402
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices  # noqa: E402

from ..core.engine import Engine  # noqa: E402
from ..core.events import RelayEvent, RelayResult, RelayStats  # noqa: E402
from ..core.request import Request  # noqa: E402
from ..core.sampling import SamplingParams  # noqa: E402
from ..errors import (ConfigError, ContextWindowError, ModelNotFoundError, QueueTimeoutError, RelayGenError,  # noqa: E402
                      ServerError)
from ..serving.pool import ConcurrentEngine  # noqa: E402
from .litellm_routing import check_pair_names  # noqa: E402

PROVIDER = "relaygen"
SAMPLING = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n")
NO_OPS = ("stream", "stream_options", "user", "max_retries")  # LiteLLM's own options, an end-user id
THINK_MARKERS = ("</think>",)  # a pair whose reasoning ends here is a thinking model: split its output
QUEUE_TIMEOUT = 600.0  # seconds a request waits for a free sequence by default
LOAD_RETRY_AFTER = 30.0  # seconds a failed load is answered from memory before it is tried again
FINISH = {"stop": "stop", "stop_string": "stop", "length": "length", "context": "length"}


class RelayGenProvider(CustomLLM):
    """The handler. ``load_options`` go to ``load_pair`` (backend, n_threads, n_gpu_layers, large_url, ...:
    ``RelaySpec``'s fields, the relay settings and the chosen backend's options, checked here);
    ``reasoning_content``: ``"auto"`` splits reasoning and answer for thinking pairs (marker ``</think>``),
    ``True``/``False`` always/never; ``queue_timeout``: seconds a request may wait for a free sequence
    (finite: no request waits forever); ``max_batch``: concurrent requests per model string (default: the
    backend's ``default_max_batch``: 4 on llama.cpp and servers, 1 for the hf backend)."""

    def __init__(self, reasoning_content: bool | str = "auto", queue_timeout: float = QUEUE_TIMEOUT,
                 **load_options: Any):
        super().__init__()
        if reasoning_content not in ("auto", True, False):
            raise ConfigError(f"reasoning_content must be 'auto', True or False, not {reasoning_content!r}")
        self.reasoning_content = reasoning_content
        if isinstance(queue_timeout, bool) or not isinstance(queue_timeout, (int, float)) or not 0 < queue_timeout < math.inf:
            raise ConfigError(f"queue_timeout must be a positive number of seconds, not {queue_timeout!r}")
        self.queue_timeout = float(queue_timeout)
        self.load_options = {"progress": False, **load_options}
        from ..backends import backend_class
        from ..options import RelaySpec

        spec = RelaySpec.from_mapping(self.load_options)
        self.load_options.setdefault("max_batch", backend_class(spec.backend).default_max_batch)
        self.load_options["queue_timeout"] = self.queue_timeout
        RelaySpec.from_mapping(self.load_options)  # a keyword no backend or relay setting takes fails here, at once
        self._engines: dict[str, ConcurrentEngine] = {}
        self._failed: dict[str, tuple[float, RelayGenError]] = {}  # model string -> (when, why) its load failed
        self._loading = threading.Lock()
        self._check_registry()
        atexit.register(self.close)  # free the models before the interpreter tears down llama.cpp's bindings

    def close(self) -> None:
        """Free every loaded model (the next request loads again)."""
        with self._loading:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
            self._failed.clear()

    def _check_registry(self) -> None:
        """The registry's pair names, checked once here (for the proxy, at start-up): a name LiteLLM
        would route elsewhere never reaches ``completion`` to be refused there."""
        from ..registry import Registry

        try:
            registry = Registry.load(self.load_options.get("registry_path"))
        except RelayGenError:  # reported, with its reason, by the first request that needs it
            return
        check_pair_names(registry.pairs)

    # --- LiteLLM's four entry points ---------------------------------------------------------
    def completion(self, model: str, messages: list, model_response: Any, optional_params: dict,
                   litellm_params: dict | None = None, timeout: Any = None, **_: Any):
        with _as_litellm_errors(model):
            params = self._params(model, optional_params, litellm_params)
            engine = self._engine(model)
            result = engine.generate(messages, params)
            return self._fill(model_response, model, result, engine)

    async def acompletion(self, model: str, messages: list, model_response: Any, optional_params: dict,
                          litellm_params: dict | None = None, **kw: Any):
        return await asyncio.to_thread(self.completion, model=model, messages=messages, model_response=model_response,
                                       optional_params=optional_params, litellm_params=litellm_params, **kw)

    def streaming(self, model: str, messages: list, optional_params: dict, litellm_params: dict | None = None,
                  **_: Any) -> Iterator[ModelResponseStream]:
        engine, request = self._prepare(model, messages, optional_params, litellm_params)
        return self._chunks(engine, model, request)

    def astreaming(self, model: str, messages: list, optional_params: dict, litellm_params: dict | None = None,
                   **_: Any) -> AsyncIterator[ModelResponseStream]:
        """LiteLLM calls this in a worker thread (so loading may block) and iterates the result on its
        event loop, where the engine posts the request's events; cancelling the stream cancels the request."""
        engine, request = self._prepare(model, messages, optional_params, litellm_params)
        return self._achunks(engine, model, request)

    def _prepare(self, model: str, messages: list, optional_params: dict,
                 litellm_params: dict | None) -> tuple[ConcurrentEngine, Request]:
        """The engine and the prepared request: a bad one fails here, at the call, not at the first chunk."""
        with _as_litellm_errors(model):
            params = self._params(model, optional_params, litellm_params)
            engine = self._engine(model)
            return engine, engine.prepare(messages, params)

    # --- helpers ------------------------------------------------------------------------------
    def _engine(self, model: str) -> ConcurrentEngine:
        with self._loading:  # one load per model string, however many requests arrive at once
            if model not in self._engines:
                pair, _, profile = model.partition(":")
                if not pair:
                    raise ConfigError("the model string is relaygen/<pair>[:<profile>], e.g. "
                                      "relaygen/qwen2.5-coder-1.5b+0.5b")
                failed = self._failed.get(model)
                if failed is not None and time.monotonic() - failed[0] < LOAD_RETRY_AFTER:
                    raise type(failed[1])(str(failed[1]))  # the same error again, without loading again
                from ..serving.build import load_concurrent

                try:
                    options = dict(self.load_options)  # a profile in the model string wins over the handler's
                    engine = load_concurrent(pair, **{**options, "profile": profile or options.get("profile")})
                except RelayGenError as e:
                    self._failed[model] = (time.monotonic(), e)
                    raise
                self._failed.pop(model, None)
                self._engines[model] = engine
            return self._engines[model]

    def _params(self, model: str, optional: dict, litellm_params: dict | None) -> SamplingParams:
        optional = dict(optional or {})
        unknown = sorted(set(optional) - set(SAMPLING) - set(NO_OPS))
        drop = bool((litellm_params or {}).get("drop_params") or litellm.drop_params)
        if unknown and not drop:
            raise litellm.UnsupportedParamsError(
                message=f"relaygen does not support {', '.join(unknown)} (supported: {', '.join(SAMPLING)}); "
                        "pass drop_params=True to ignore unsupported parameters", model=model, llm_provider=PROVIDER)
        if optional.get("n", 1) != 1:
            raise litellm.UnsupportedParamsError(message="relaygen writes one choice per request (n=1)",
                                                 model=model, llm_provider=PROVIDER)
        budget = optional.get("max_completion_tokens", optional.get("max_tokens"))
        stop = optional.get("stop") or ()
        kwargs = {k: optional[k] for k in ("temperature", "top_p", "top_k", "seed") if optional.get(k) is not None}
        return SamplingParams(max_tokens=budget if budget is not None else SamplingParams.max_tokens,
                              stop=(stop,) if isinstance(stop, str) else tuple(stop), **kwargs).validated()

    def _splits(self, engine: Engine) -> bool:
        if self.reasoning_content == "auto":
            return engine.config.reasoning_end in THINK_MARKERS
        return bool(self.reasoning_content)

    def _fill(self, response: Any, model: str, result: RelayResult, engine: ConcurrentEngine):
        split, marker = self._splits(engine), engine.config.reasoning_end or ""
        message = response.choices[0].message
        if split:
            message.content = result.answer.lstrip()
            message.reasoning_content = _reasoning_text(result, marker)
        else:
            message.content = result.text
        response.choices[0].finish_reason = FINISH.get(result.stats.finish_reason, "stop")
        response.model = f"{PROVIDER}/{model}"
        response.created = int(time.time())
        setattr(response, "usage", _usage(result.stats))
        return response

    def _chunks(self, engine: ConcurrentEngine, model: str, request: Request) -> Iterator[ModelResponseStream]:
        """Text deltas as the engine writes them. Closing the stream cancels the request."""
        writer = _ChunkWriter(model, self._splits(engine), engine.config.reasoning_end)
        with _as_litellm_errors(model):  # a request that waits too long for a sequence fails at its first chunk
            with closing(engine.stream(request)) as events:
                for event in events:
                    yield from writer.feed(event)

    async def _achunks(self, engine: ConcurrentEngine, model: str, request: Request) -> AsyncIterator[ModelResponseStream]:
        """``_chunks`` on the event loop."""
        writer = _ChunkWriter(model, self._splits(engine), engine.config.reasoning_end)
        with _as_litellm_errors(model):
            events = engine.astream(request)
            try:
                async for event in events:
                    for chunk in writer.feed(event):
                        yield chunk
            finally:
                await events.aclose()


class _ChunkWriter:
    """Relay events as LiteLLM stream chunks. The last delta is held back to carry the finish reason and
    the usage (LiteLLM reads usage only from a chunk with content)."""

    def __init__(self, model: str, split: bool, marker: str | None):
        self.model, self.split = model, split
        self.reasoning = _ReasoningFilter(marker or "")
        self.stream_id = f"chatcmpl-{uuid.uuid4()}"  # one id for all of a stream's chunks
        self.pending: tuple[str, str, str | None] | None = None  # (field, text, model that wrote it), not yet sent
        self.answer_started = False

    def _chunk(self, *args) -> ModelResponseStream:
        return _chunk(self.model, *args, stream_id=self.stream_id)

    def feed(self, event: RelayEvent) -> list[ModelResponseStream]:
        out = []
        if event.kind == "text":
            pieces = [("content", event.text)]
            if self.split and event.stage == "reasoning":  # a token can hold the marker and answer text after it
                pieces = [("reasoning_content", self.reasoning.feed(event.text)), ("content", self.reasoning.after())]
            for field, text in pieces:
                if self.split and field == "content" and not self.answer_started:
                    text = text.lstrip()  # as the non-streamed content
                self.answer_started = self.answer_started or (field == "content" and bool(text))
                if text:
                    if self.pending is not None:
                        out.append(self._chunk(*self.pending))
                    self.pending = (field, text, event.model)
        elif event.kind == "done":
            rest = self.reasoning.rest() if self.split else ""
            if rest:  # reasoning cut by the budget before its marker
                if self.pending is not None:
                    out.append(self._chunk(*self.pending))
                self.pending = ("reasoning_content", rest, None)
            stats = event.result.stats
            usage = _usage(stats)
            out.append(self._chunk(*(self.pending or ("content", "", None)), FINISH.get(stats.finish_reason, "stop"),
                                   usage, usage.relay))
        return out


class _ReasoningFilter:
    """Streams reasoning text without the opening ``<think>`` and the closing marker."""

    def __init__(self, marker: str):
        self.marker, self.buffer, self.started = marker, "", False
        self._after = ""  # text that followed the marker inside the delta that completed it

    def feed(self, text: str) -> str:
        self.buffer += text
        if not self.started:
            stripped = self.buffer.lstrip()
            if "<think>".startswith(stripped):
                return ""  # could still be the opening tag
            self.buffer = stripped.removeprefix("<think>").lstrip("\n")
            self.started = True
        cut = self.buffer.find(self.marker) if self.marker else -1
        if cut >= 0:
            out, self._after, self.buffer = self.buffer[:cut], self.buffer[cut + len(self.marker):], ""
            self.marker = ""  # seen: nothing after it is reasoning
            return out
        keep = len(self.marker) - 1 if self.marker else 0
        out, self.buffer = (self.buffer[:-keep], self.buffer[-keep:]) if keep else (self.buffer, "")
        return out

    def after(self) -> str:
        """The answer text that came in the same delta as the end of the marker (once)."""
        out, self._after = self._after, ""
        return out

    def rest(self) -> str:
        """What is still held back when the reasoning ends without its marker."""
        out, self.buffer = self.buffer, ""
        return out if self.started else out.lstrip().removeprefix("<think>")


def _reasoning_text(result: RelayResult, marker: str) -> str:
    """The reasoning stage without an opening ``<think>`` and the marker that ended it (the stream's filter)."""
    cleaned = _ReasoningFilter(marker)
    return cleaned.feed(result.reasoning) + cleaned.rest()


def _chunk(model: str, field: str, text: str, writer: str | None, finish: str | None = None, usage: Any = None,
           relay: dict | None = None, stream_id: str | None = None) -> ModelResponseStream:
    """One streamed delta; ``provider_specific_fields`` says which model wrote it and, on the last chunk,
    carries the relay statistics (LiteLLM rebuilds a streamed ``usage`` with the standard counts only)."""
    delta = Delta(content=text) if field == "content" else Delta(content=None, reasoning_content=text)
    chunk = ModelResponseStream(id=stream_id, model=f"{PROVIDER}/{model}",
                                choices=[StreamingChoices(index=0, delta=delta, finish_reason=finish)])
    chunk.provider_specific_fields = {"relay_model": writer, **({"relay": relay} if relay else {})}
    if usage is not None:
        chunk.usage = usage
    return chunk


# the fields of RelayStats.summary() in usage.relay
RELAY_USAGE = ("large_tokens", "small_tokens", "large_share", "switches", "check", "sentences_checked", "sentences_cut",
               "small_tokens_discarded", "cut_tokens", "resumes", "resumed_tokens", "seconds")


def _usage(stats: RelayStats) -> Any:
    """OpenAI's three counts plus ``relay``: who wrote how much, switches, the check's counts, time."""
    summary = stats.summary()
    prompt, generated = summary["prompt_tokens"], summary["generated_tokens"]
    return litellm.Usage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated,
                         relay={k: summary[k] for k in RELAY_USAGE})


@contextmanager
def _as_litellm_errors(model: str):
    """Our errors as the LiteLLM exceptions an OpenAI client expects."""
    try:
        yield
    except QueueTimeoutError as e:
        raise litellm.Timeout(message=str(e), model=model, llm_provider=PROVIDER) from None
    except ModelNotFoundError as e:
        raise litellm.NotFoundError(message=f"relaygen/{model}: {e}", model=model, llm_provider=PROVIDER) from None
    except ConfigError as e:
        if isinstance(e, ContextWindowError):
            raise litellm.ContextWindowExceededError(message=str(e), model=model, llm_provider=PROVIDER) from None
        raise litellm.BadRequestError(message=str(e), model=model, llm_provider=PROVIDER) from None
    except ServerError as e:
        raise litellm.ServiceUnavailableError(message=str(e), model=model, llm_provider=PROVIDER) from None
    except RelayGenError as e:
        raise litellm.APIError(status_code=500, message=str(e), model=model, llm_provider=PROVIDER) from None


handler = RelayGenProvider()  # what register() and the proxy config use


def register(provider: RelayGenProvider | None = None) -> RelayGenProvider:
    """Make ``relaygen/...`` model strings reach ``provider`` (default: the module's ``handler``)."""
    provider = provider or handler
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map if p.get("provider") != PROVIDER]
    litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": provider})
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    return provider
