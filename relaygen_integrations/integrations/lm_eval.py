"""The lm-evaluation-harness model ``relaygen``: the relay generates, the large model scores.

``generate_until`` runs each request through the relay engine: one at a time with ``batch_size=1``
(the default), up to ``batch_size`` at once otherwise (``auto``: 4), evaluated together in llama.cpp's
batched rounds or sent to the servers concurrently (``serving/pool.py``). ``loglikelihood`` and ``loglikelihood_rolling`` are scored by the large model alone
(the small one with ``mode=small``): switching only changes how text is generated, so scoring with
the relay would mean nothing. Per-request relay statistics go to a JSONL file beside lm-eval's
``--output_path`` and, aggregated per task, into the results file's ``config.relaygen``.

    lm_eval --model relaygen --model_args pretrained=qwen2.5-coder-1.5b+0.5b \\
        --tasks relaygen_gsm8k_cot --include_path evals/tasks --apply_chat_template --limit 50
"""

from __future__ import annotations

import functools
import json
import re
import sys
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM
from tqdm import tqdm

from ..core.chat import text_messages
from ..core.engine import Engine
from ..core.events import RelayResult
from ..core.sampling import SamplingParams
from ..errors import ConfigError, ContextWindowError, RelayGenError
from ..backends.scoring import require_scoring
from .lm_eval_stats import large_share, request_record, stats_path_beside_output, summarise, write_stats
from .model_args import parse_model_args


def _batch_size(batch_size: Any, max_batch_size: Any) -> "int | str":
    """lm-eval's ``--batch_size``: a positive integer or ``auto`` (its ``auto:N`` re-probing means nothing
    here); ``max_batch_size`` caps ``auto``."""
    text = str(batch_size if batch_size is not None else 1).strip()
    if text.startswith("auto"):
        if max_batch_size is not None:
            return _batch_size(max_batch_size, None)
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or value > 256:
        raise ConfigError(f"batch_size must be a positive integer up to 256 or 'auto', got {batch_size!r}")
    return value


def _under_lm_eval_cli() -> bool:
    """Whether this process is the ``lm_eval`` command (its console script, or ``python -m lm_eval``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") == "lm_eval.__main__" or Path(sys.argv[0]).name in ("lm_eval", "lm-eval")


def _one_line_errors(method):
    """Under the ``lm_eval`` command a user's mistake (a RelayGenError) is one line on stderr and exit
    status 2, as with ``relaygen``; lm-eval itself would print a traceback. From Python it is raised."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except RelayGenError as e:
            if not _under_lm_eval_cli():
                raise
            print(f"relaygen: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return wrapper


# generation settings for tasks that do not set them: lm-eval's 256-token default, greedy
GENERATION_DEFAULTS = {"max_gen_toks": 256, "temperature": 0.0, "top_p": 1.0, "top_k": 0}
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "seed")
GPU_DEVICES = ("cuda", "mps", "gpu", "metal")


class RelayGenLM(LM):
    """Model arguments (``--model_args key=value,...`` or one JSON object):

    pretrained / pair   registry pair (default: the registry's default pair)
    large, small        override either model (registry name or model file)
    backend             llamacpp (default), hf or openai (then large_url, small_url)
    profile             built-in profile name or profile JSON (default: the pair's calibrated profile)
    cues                a list of cue strings instead of a profile (JSON, or ``cues=["So,","Now"]``)
    cue_matching        how cues match: see relaygen_integrations.core.cues
    mode                relay (default), large or small: one model alone, for baselines
    answer_model        small (default, as in the paper) or large
    min_large_tokens, reasoning_end, answer_reserve_tokens   RelayConfig fields
    speculative, draft_max, draft_model   speculative decoding of the large model (llamacpp, hf)
    backend options     the chosen backend's constructor options, e.g. n_ctx, n_threads, n_gpu_layers,
                        flash_attn (llamacpp); n_ctx, n_threads, device, dtype (hf); chat_template,
                        api_key, timeout, retries (openai). Another backend's option is an error.
    max_gen_toks        budget when a task does not set one (256, lm-eval's default)
    temperature, top_p, top_k   sampling when a task does not set it (default greedy)
    seed                base seed (1234); each request's seed is derived from it and the prompt
    stats_path          per-request statistics file (default: beside --output_path)
    think_end_token     lm-eval's name: grade only the text after it (a thinking model's answer, not its
                        reasoning). auto (default): the pair's reasoning-end marker when it is a closing
                        tag such as ``</think>`` (a ``\boxed{`` marker is part of the answer); none: all text
    batch_size          lm-eval's --batch_size: requests in flight at once (1; ``auto``: 4; hf: 1)

    From Python, ``engine=`` takes a built RelayEngine instead (its configuration then applies).
    """

    @_one_line_errors
    def __init__(self, engine: Engine | None = None, stats_path: str | None = None, progress: bool = True,
                 **model_args: Any):
        super().__init__()
        args = dict(model_args)
        pretrained, pair = args.pop("pretrained", None), args.pop("pair", None)
        if pretrained and pair and pretrained != pair:
            raise ConfigError("pass the pair once: pretrained= and pair= are the same argument")
        cues = args.pop("cues", None)
        if cues is not None and args.get("profile") is not None:
            raise ConfigError("pass either profile= or cues=, not both")
        if cues is not None and (not isinstance(cues, (list, tuple)) or not all(isinstance(c, str) for c in cues)):
            raise ConfigError(f"cues must be a list of strings (JSON model_args), got {cues!r}")
        batch_size = _batch_size(args.pop("batch_size", None), args.pop("max_batch_size", None))
        self.defaults = {k: args.pop(k, v) for k, v in GENERATION_DEFAULTS.items()}
        SamplingParams(temperature=self.defaults["temperature"], top_p=self.defaults["top_p"],
                       top_k=self.defaults["top_k"], max_tokens=self.defaults["max_gen_toks"]).validated()
        self.seed = int(args.pop("seed", 1234))
        think_end = args.pop("think_end_token", "auto")
        if not isinstance(think_end, str) or not think_end:
            raise ConfigError(f"think_end_token must be auto, none or the text that ends the reasoning, got {think_end!r}")
        device = args.pop("device", None)
        self.pair = pretrained or pair
        self.progress = progress
        self.records: list[dict] = []
        self._seen: Counter = Counter()
        self._stats_file = Path(stats_path) if stats_path else stats_path_beside_output(pretrained)
        if engine is None:
            from ..backends import backend_class
            from ..loader import build
            from ..options import RelaySpec
            from ..serving.build import build_concurrent

            spec = RelaySpec.from_mapping({"pair": self.pair, "progress": progress, **args,
                                           **({"profile": cues} if cues is not None else {})},
                                          what="relaygen model argument")
            spec = _apply_device(spec, device)
            if batch_size == "auto":
                batch_size = backend_class(spec.backend).default_max_batch
            engine = build(spec) if batch_size == 1 else build_concurrent(replace(spec, max_batch=batch_size),
                                                                          scoring=True)
        elif args:
            raise ConfigError(f"with engine= the engine's own configuration applies; drop {', '.join(sorted(args))}")
        self.engine = engine
        self.batch_size = engine.max_batch
        self.think_end = think_end_of(think_end, engine.config.reasoning_end)
        mode = engine.config.mode  # an engine passed in brings its own configuration
        drafter = getattr(engine.large, "drafter", None)  # a SpeculativeBackend's
        self.scoring = engine.small if mode == "small" else engine.large  # the model whose scorer() scores
        self.scorer = self.scoring.scorer()  # None where it cannot score (require_scoring says so)
        self.info = {"pair": self.pair, "large": model_args.get("large"), "small": model_args.get("small"),
                     "backend": model_args.get("backend", "llamacpp"), "mode": mode,
                     "profile": engine.profile.name, "cues": list(engine.profile.cues),
                     "cue_matching": engine.profile.mode, "answer_model": engine.config.answer_model,
                     "speculative": type(drafter).__name__ if drafter is not None else "off",
                     "scored_by": "small" if mode == "small" else "large"}

    @classmethod
    @_one_line_errors
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "RelayGenLM":
        """``key=value,...`` (lists and quoted strings may contain commas) or one JSON object."""
        args = parse_model_args(arg_string)
        return cls.create_from_arg_obj(args, additional_config)

    # --- lm-eval's contract ------------------------------------------------------------------
    @_one_line_errors
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        params = []
        for req in requests:  # seeds in request order, whatever order the answers come back in
            context, gen_kwargs = req.args
            key = _context_key(context)
            params.append(self._sampling(gen_kwargs, key, self._seen[key]))
            self._seen[key] += 1
        bar = tqdm(total=len(requests), desc="relaygen generate", disable=disable_tqdm or not self.progress)

        def answer(i: int) -> RelayResult:
            req = requests[i]
            context = req.args[0]
            try:  # a string is the prompt as lm-eval rendered it; messages (lm-eval 0.5) get the model's template
                return self.engine.generate(context, params[i], chat=not isinstance(context, str))
            except ConfigError as e:
                hint = " (raise n_ctx= in --model_args)" if isinstance(e, ContextWindowError) else ""
                raise type(e)(f"{req.task_name} doc {req.doc_id}: {e}{hint}") from None

        results: list[RelayResult] = []
        with ThreadPoolExecutor(max_workers=self.batch_size) as pool:  # batch_size requests in flight
            futures = [pool.submit(answer, i) for i in range(len(requests))] if self.batch_size > 1 else None
            for i, req in enumerate(requests):
                try:
                    result = futures[i].result() if futures else answer(i)
                except BaseException:
                    for f in futures or ():
                        f.cancel()
                    raise
                results.append(result)
                self.records.append(request_record(req, result))
                self.cache_hook.add_partial("generate_until", tuple(req.args), graded_text(result.text, self.think_end))
                bar.update(1)
                bar.set_postfix_str(f"large {large_share(self.records):.0%} of tokens")
        bar.close()
        write_stats(self._stats_file, self.records)
        return [graded_text(r.text, self.think_end) for r in results]

    @_one_line_errors
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        require_scoring(self.scoring, "loglikelihood (multiple-choice tasks)")
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        # requests that share a context run back to back: the KV cache keeps the context between them
        order = sorted(range(len(requests)), key=lambda i: (_context_key(requests[i].args[0]), requests[i].args[1]))
        for i in tqdm(order, desc="relaygen loglikelihood", disable=disable_tqdm or not self.progress):
            context, continuation = requests[i].args
            ctx, cont = self._encode_pair(self._context_text(context), continuation)
            logprobs, greedy = self.scorer.token_logprobs(ctx + cont, len(ctx))
            results[i] = (float(logprobs.sum()), bool(greedy.all()))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), results[i])
        return results  # type: ignore[return-value]

    @_one_line_errors
    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
        """lm-eval 0.4 sends ``(text,)`` and takes a float per request; 0.5 sends ``("", text)`` and
        takes ``(logprob, False)``. The request's own shape says which contract applies."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        require_scoring(self.scoring, "loglikelihood_rolling (perplexity tasks)")
        out: list = []
        start = self.scorer.document_start_token()
        for req in tqdm(requests, desc="relaygen loglikelihood_rolling", disable=disable_tqdm or not self.progress):
            args = tuple(req.args)
            if len(args) == 2 and args[0] != "":
                raise ConfigError(f"loglikelihood_rolling scores a whole text: its context must be empty, got "
                                  f"{str(args[0])[:40]!r}")
            text = args[-1]
            tokens = self.scorer.tokenize(text.encode("utf-8"), special=True)
            total = 0.0
            for window in get_rolling_token_windows(tokens, start, self.scorer.n_ctx, context_len=1):
                ctx, cont = make_disjoint_window(window)
                total += float(self.scorer.token_logprobs(list(ctx) + list(cont), len(ctx))[0].sum())
            result = total if len(args) == 1 else (total, False)
            out.append(result)
            self.cache_hook.add_partial("loglikelihood_rolling", args, result)
        return out

    # --- chat templates ----------------------------------------------------------------------
    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        """The model's own template. Without a generation prompt the last (assistant) message is a
        prefix the model continues, so it is appended after the assistant's opening. Contents may be lists
        of text parts (``text_messages``)."""
        messages = text_messages(chat_history) if chat_history else []
        if add_generation_prompt or not messages or messages[-1].get("role") != "assistant":
            return self.engine.large.chat_prompt(messages)
        return self.engine.large.chat_prompt(messages[:-1]) + messages[-1]["content"]

    @property
    def tokenizer_name(self) -> str:
        return f"relaygen:{Path(str(getattr(self.scorer, 'path', None) or self.pair or 'default')).name}"

    def chat_template(self, chat_template: bool | str = False) -> str:
        """What the template renders for a probe conversation (lm-eval logs and hashes it)."""
        probe = [{"role": "user", "content": "{user}"}]  # no system turn: some templates refuse one
        return self.engine.large.chat_prompt(probe)

    def get_model_info(self) -> dict:
        info = {**self.info, "stats": summarise(self.records)}
        if self._stats_file is not None and self.records:
            info["requests_file"] = str(self._stats_file)
        return {"relaygen": info}

    # --- helpers -----------------------------------------------------------------------------
    def _context_text(self, context: "str | list[dict]") -> str:
        """A context as text: lm-eval 0.5 may send chat messages, which the model's template renders."""
        return context if isinstance(context, str) else self.apply_chat_template(list(context))

    def _sampling(self, gen_kwargs: dict, context: str, occurrence: int) -> SamplingParams:
        gen_kwargs = dict(gen_kwargs or {})
        unknown = set(gen_kwargs) - set(GEN_KWARGS)
        if unknown:
            raise ConfigError(f"unsupported generation argument(s) {', '.join(sorted(unknown))}; relaygen "
                              f"supports {', '.join(GEN_KWARGS)}")
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else [s for s in until if s]
        temperature = gen_kwargs.get("temperature", self.defaults["temperature"])
        do_sample = gen_kwargs.get("do_sample")
        if do_sample is False:
            temperature = 0.0
        elif do_sample and not temperature:
            raise ConfigError("do_sample=True with temperature=0: set a temperature (e.g. 0.6)")
        base = int(gen_kwargs.get("seed", self.seed))
        # the same prompt gets the same seed whatever the order of requests; repeats get new ones
        seed = zlib.crc32(f"{base}:{occurrence}:{context}".encode("utf-8"))
        return SamplingParams(temperature=float(temperature), top_p=float(gen_kwargs.get("top_p", self.defaults["top_p"])),
                              top_k=int(gen_kwargs.get("top_k", self.defaults["top_k"])), seed=seed,
                              max_tokens=int(gen_kwargs.get("max_gen_toks", self.defaults["max_gen_toks"])),
                              stop=tuple(until))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """As lm-eval's hf model: trailing spaces of the context move to the continuation, the pair is
        tokenized whole, and an empty context becomes the document-start token."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        tok = self.scorer.tokenize
        if not context:
            ctx, cont = [self.scorer.document_start_token()], tok(continuation.encode("utf-8"), special=True)
        else:
            whole = tok((context + continuation).encode("utf-8"), special=True, add_bos=True)
            ctx = tok(context.encode("utf-8"), special=True, add_bos=True)
            ctx, cont = whole[: len(ctx)], whole[len(ctx):]
            if not ctx:
                ctx = [self.scorer.document_start_token()]
        if not cont:
            raise ConfigError(f"empty continuation after tokenizing {continuation!r}")
        limit = self.scorer.n_ctx
        if len(cont) >= limit:
            raise ConfigError(f"a continuation of {len(cont)} tokens does not fit n_ctx={limit}")
        if len(ctx) + len(cont) > limit:  # keep the end of the context, as lm-eval's hf model does
            ctx = ctx[len(ctx) + len(cont) - limit:]
        return ctx, cont

def _context_key(context: "str | list[dict]") -> str:
    """A request context as one string, for seeds and ordering (messages as canonical JSON)."""
    return context if isinstance(context, str) else json.dumps(list(context), sort_keys=True, ensure_ascii=False)


def _apply_device(spec, device: str | None):
    """lm-eval's ``--device`` (default ``cuda:0``, even on machines without CUDA) is a preference, used only
    when the model arguments do not say: llama.cpp offloads every layer for a GPU device (a build without
    GPU support runs on the CPU regardless), transformers takes the device when it is there and otherwise
    picks the best available one, servers choose their own."""
    from dataclasses import replace

    options = dict(spec.backend_options)
    if device is None or spec.backend == "openai":
        return spec
    kind = device.split(":")[0].lower()
    if spec.backend == "llamacpp":
        options.setdefault("n_gpu_layers", -1 if kind in GPU_DEVICES else 0)
    elif spec.backend == "hf" and "device" not in options:
        import torch

        available = kind == "cpu" or kind == "cuda" and torch.cuda.is_available() or kind == "mps" and (
            getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
        if not available:
            print(f"relaygen: device {device} is not available here; the hf backend picks the best one",
                  file=sys.stderr)
        options["device"] = device if available else "auto"
    return replace(spec, backend_options=options)


def register() -> None:
    """Register ``relaygen`` with lm-eval now (the start-up hook does this by itself; call it when
    running with ``python -S`` or from a program that imported lm-eval's registry unusually)."""
    import lm_eval.models  # noqa: F401 - built-ins first, or get_model would never load them

    from .lm_eval_hook import register_lazily

    register_lazily()


def think_end_of(setting: str, reasoning_end: str | None) -> str | None:
    """The text after which an answer is graded (None: the whole text); see ``think_end_token``."""
    if setting == "none":
        return None
    if setting == "auto":
        return reasoning_end if reasoning_end and re.fullmatch(r"</\w+>", reasoning_end) else None
    return setting


def graded_text(text: str, think_end: str | None) -> str:
    """What lm-eval grades: the text after the last ``think_end`` (all of it when the reasoning never ended,
    as lm-eval's own ``think_end_token`` does)."""
    return text.rsplit(think_end, 1)[-1].lstrip() if think_end else text
