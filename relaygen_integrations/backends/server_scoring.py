"""Scoring on a server: the log-probability of given tokens after a prefix, and the top choices at each
position, which the checked relay, calibration and lm-eval's log-likelihoods need.

Each kind's best path, read from its released source (docs/backends.md's server-kind table; nothing here ran against
vLLM or SGLang, whose paths are tested against protocol test servers in tests/backends):

    sglang            POST /generate: ``input_ids``, ``return_logprob``, ``logprob_start_len = first - 1``,
                      ``top_logprobs_num``; the radix cache is reused up to the start (1 + S tokens evaluated)
    vllm              POST /inference/v1/generate (``vllm serve --enable-scale-out``): ``prompt_logprobs``,
                      ``prompt_logprob_start = first - 1``, ``skip_reading_prefix_cache: false`` (the cache
                      reused up to the start, block-aligned); otherwise /v1/completions ``prompt_logprobs``,
                      which recomputes the whole prefix (correct, slow: the bench says so)
    llama-cpp-python  /v1/completions ``echo`` + ``logprobs`` on the text (its server takes no id lists); in
                      0.3.36 the numbers are shifted by one position for models that add no BOS token
                      (llama-cpp-python#1983): a probe at start-up finds it and scoring is refused
    llama-server      none (llama.cpp#27174): refused, naming the alternatives

One request scores a whole segment and also returns the row after it (one generated token's top
choices), so the check and the large model's next token cost one round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.sampling import SamplingParams
from ..errors import ConfigError, ServerError
from .scoring import Scoring

TOP_N = 20  # top choices asked per position: vLLM's default --max-logprobs


@dataclass
class Scored:
    logprobs: list[float]  # of context[first + j] given what precedes it
    tops: list[list[tuple[int, float]]]  # (id, log-prob), best first: the rows predicting context[first:], then the next
    evaluated: int  # tokens the server's path evaluates for it (its design, not a measurement)
    greedy_last: bool = False  # the last row is only its greedy token (llama-cpp-python, when that ends the text)


def exact_draws(params: SamplingParams, top_n: int = TOP_N) -> str | None:
    """Why the large model's own draw cannot be made exactly from the top ``top_n`` choices (None: it can)."""
    if params.greedy or 0 < params.top_k <= top_n:
        return None
    return (f"the check over a server draws the large model's token from the top {top_n} log-probabilities the "
            f"server returns, which is exact for greedy decoding or top_k <= {top_n}; this request has "
            f"temperature {params.temperature:g} and top_k {params.top_k or 'unlimited'}: set top_k (e.g. 20)")


class TopRows:
    """A scored segment as the check reads it (``core.check``): each token's probability, and the large
    model's own draw at a position from that position's top choices."""

    requests = 1  # one round trip scored it

    def __init__(self, scored: Scored, tokens: Sequence[int]):
        self.scored, self.tokens = scored, list(tokens)

    def probabilities(self, tokens: Sequence[int]) -> np.ndarray:
        if list(tokens) != self.tokens[: len(tokens)]:
            raise AssertionError("the check asked about tokens that were not scored")  # pragma: no cover
        return np.exp(np.asarray(self.scored.logprobs[: len(tokens)], dtype=np.float64))

    def draw(self, i: int, sample) -> int:
        why = exact_draws(sample.params)
        if why:
            raise ConfigError(why)
        if i == len(self.scored.tops) - 1 and self.scored.greedy_last and not sample.params.greedy:
            raise ServerError("llama-cpp-python's server does not return the top choices after a text whose greedy "
                              "next token ends it, so the large model's token there cannot be sampled: use greedy "
                              "decoding, or SGLang or vLLM for the large model")
        ids, logprobs = zip(*self.scored.tops[i])
        return ids[sample(np.asarray(logprobs, dtype=np.float32))]


def problem(backend) -> str | None:
    """Why ``backend``'s server cannot score (None: it can). llama-cpp-python's echo is probed once: a prompt
    of m tokens must come back as m + 1 scored tokens (the generated one last); 0.3.36 drops the last and
    shifts the rest for models that add no BOS token (llama-cpp-python#1983)."""
    from .server_kind import NO_SCORING, NO_TOKENIZER

    if backend.kind in NO_SCORING:
        return NO_SCORING[backend.kind]
    if backend.vocab is None:
        return NO_TOKENIZER
    if backend.kind != "llama-cpp-python":
        return None
    probe = "12 + 30 = 42"
    m = len(backend.vocab.tokenize(probe.encode("utf-8")))
    r = backend.post_root("/v1/completions", {"model": backend.model, "prompt": probe, "echo": True, "logprobs": 1,
                                              "max_tokens": 1, "temperature": 0.0})
    got = len(((r.get("choices") or [{}])[0].get("logprobs") or {}).get("tokens") or [])
    if got == m + 1:
        return None
    return (f"its echoed prompt log-probabilities are misaligned for this model ({got} scored tokens for a "
            f"{m}-token prompt and 1 generated: shifted by one position, llama-cpp-python#1983, which hits models "
            "that add no BOS token), so they would be wrong numbers")


def slow_path(backend) -> str | None:
    """What a user should know about this server's scoring cost, where it recomputes the whole prefix."""
    if backend.kind == "vllm" and backend.scoring_problem is None and not backend.vllm_generate():
        return (f"{backend.root_url}: vLLM without --enable-scale-out scores through /v1/completions prompt_logprobs, "
                "which skips its prefix cache: each check recomputes the whole context")
    if backend.kind == "llama-cpp-python" and backend.scoring_problem is None:
        return (f"{backend.root_url}: llama-cpp-python's server sorts the whole vocabulary in Python at every scored "
                "position: checks are slow for real vocabularies")
    return None


def score(backend, context: Sequence[int], first: int, top_n: int = TOP_N) -> Scored:
    """``context[first:]`` scored after ``context[:first]`` on ``backend``'s server (an ``OpenAIBackend`` with a
    tokenizer, of a kind that scores)."""
    context = [int(t) for t in context]
    if not 0 < first <= len(context):
        raise ValueError(f"need 0 < first <= len(context), got first={first}, len={len(context)}")
    kind = backend.kind
    if kind == "sglang":
        return _sglang(backend, context, first, top_n)
    if kind == "vllm":
        return _vllm(backend, context, first, top_n)
    if kind == "llama-cpp-python":
        return _echo(backend, context, first, top_n)
    raise ConfigError(backend.why_no_scoring("scoring"))


def _check_ids(url: str, got: Sequence[int], want: Sequence[int]) -> None:
    if [int(t) for t in got] != list(want):
        raise ServerError(f"{url} scored other tokens than it was sent ({list(got)[:5]}... for {list(want)[:5]}...)")


def _sglang(backend, context: list[int], first: int, top_n: int) -> Scored:
    body = {"input_ids": context, "return_logprob": True, "logprob_start_len": first - 1, "top_logprobs_num": top_n,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}}
    meta = backend.post_root("/generate", body)["meta_info"]
    given = meta["input_token_logprobs"][1:]  # entry 0 is the token before ``first``: always None
    _check_ids(backend.root_url + "/generate", [t for _, t, *_ in given], context[first:])
    tops = [[(int(t), float(lp)) for lp, t, *_ in row] for row in meta["input_top_logprobs"][1:]]
    tops.append([(int(t), float(lp)) for lp, t, *_ in meta["output_top_logprobs"][0]])
    cached = meta.get("cached_tokens")
    return Scored([float(lp) for lp, *_ in given], tops, len(context) - cached if isinstance(cached, int) else len(context) - first + 1)


def _vllm_top(entry: dict, top_n: int) -> list[tuple[int, float]]:
    """A vLLM prompt log-probs entry ``{id: {logprob, rank}}`` (the top-N plus the scored token, whatever its
    rank): the top-N, best first."""
    top = [(int(t), float(v["logprob"])) for t, v in entry.items() if (v.get("rank") or 1) <= top_n]
    return sorted(top, key=lambda x: -x[1])


def _vllm(backend, context: list[int], first: int, top_n: int) -> Scored:
    n = len(context) - first
    if backend.vllm_generate():
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": top_n}
        if n:
            params.update(prompt_logprobs=top_n, prompt_logprob_start=first - 1, skip_reading_prefix_cache=False)
        r = backend.post_root("/inference/v1/generate", {"model": backend.model, "token_ids": context,
                                                          "sampling_params": params, "output_mode": "tokens"})
        out = [(int(c["token_id"]), float(c["logprob"])) for c in r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
               if (c.get("rank") or 1) <= top_n]
        out.sort(key=lambda x: -x[1])
        prompt, evaluated = r.get("prompt_logprobs") or [], n + 1
    else:  # the OpenAI endpoint: prompt log-probs skip the prefix cache, so the whole context is evaluated
        r = backend.post_root("/v1/completions", {
            "model": backend.model, "prompt": context, "max_tokens": 1, "temperature": 0.0, "logprobs": top_n,
            "prompt_logprobs": top_n if n else None, "return_tokens_as_token_ids": True})
        choice = r["choices"][0]
        top = choice["logprobs"]["top_logprobs"][0]
        out = sorted(((int(k.removeprefix("token_id:")), float(v)) for k, v in top.items()), key=lambda x: -x[1])[:top_n]
        prompt, evaluated = choice.get("prompt_logprobs") or [], len(context)
    rows = [prompt[p] for p in range(first, len(context))]
    if any(row is None or str(t) not in row for row, t in zip(rows, context[first:])):
        raise ServerError(f"{backend.root_url} returned no log-probability for some scored tokens")
    logprobs = [float(row[str(t)]["logprob"]) for row, t in zip(rows, context[first:])]
    return Scored(logprobs, [_vllm_top(row, top_n) for row in rows] + [out], evaluated)


def _echo(backend, context: list[int], first: int, top_n: int) -> Scored:
    vocab = backend.vocab
    skip = 1 if vocab.adds_bos() and context[0] == vocab.document_start_token() else 0  # the server adds its own
    if first - skip < 1:
        raise ConfigError("llama-cpp-python's server does not score a text's first token (its echo nulls it, as "
                          "OpenAI's format does): score texts with a context, or use SGLang, vLLM or an in-process backend")
    text = b"".join(vocab.token_bytes(t) for t in context[skip:]).decode("utf-8", errors="replace")
    r = backend.post_root("/v1/completions", {"model": backend.model, "prompt": text, "echo": True, "logprobs": top_n,
                                              "max_tokens": 1, "temperature": 0.0, "repeat_penalty": 1.0})
    lp = r["choices"][0]["logprobs"]
    expected = context[skip:]
    ended = len(lp["tokens"]) == len(expected) and r["choices"][0].get("finish_reason") == "stop"
    if ended:  # its greedy next token ends the text, and such a token is not echoed: the last row is that token
        lp = {k: list(v) + [{vocab.token_bytes(vocab.end_token()).decode("utf-8", "ignore"): 0.0}] * (k == "top_logprobs")
              + [None] * (k != "top_logprobs") for k, v in lp.items()}
    elif len(lp["tokens"]) != len(expected) + 1:
        raise ServerError(f"{backend.root_url}'s echoed log-probabilities are misaligned ({len(lp['tokens'])} for "
                          f"{len(expected)} prompt tokens and 1 generated): llama-cpp-python#1983")
    keys = _text_keys(backend)
    for j, t in enumerate(expected):
        if lp["tokens"][j] != vocab.token_bytes(t).decode("utf-8", errors="ignore"):
            raise ServerError(f"{backend.root_url} tokenised the text differently from the local tokenizer at token {j} "
                              f"({lp['tokens'][j]!r} there): a server that takes only text needs a vocabulary whose text "
                              "re-tokenises to the same ids; use SGLang or vLLM, which take token ids")
    tops = []
    for j in range(first - skip, len(expected) + 1):
        row = dict(lp["top_logprobs"][j])
        if len(row) > top_n:  # it adds the scored token to the top-N: not one of them
            row.pop(lp["tokens"][j])
        scored = expected[j] if j < len(expected) else None
        tops.append(sorted(((_id_of(backend, keys, s, scored), float(v)) for s, v in row.items()), key=lambda x: -x[1]))
    logprobs = [float(v) if v is not None else -math.inf for v in lp["token_logprobs"][first - skip: len(expected)]]
    return Scored(logprobs, tops, len(context) - first + 1, greedy_last=ended)


def _text_keys(backend) -> dict[str, list[int]]:
    """Each text llama-cpp-python may key a top choice by, and the ids it stands for: a token's text decoded
    with errors ignored; a control token's is empty or its name, depending on the tokens before it (its
    ``detokenize``)."""
    if backend.text_keys is None:
        vocab, table = backend.vocab, {}
        for t in range(vocab.n_vocab):
            text = vocab.token_bytes(t).decode("utf-8", errors="ignore")
            for key in ("", text) if vocab.is_control(t) and text else (text,):
                table.setdefault(key, []).append(t)
        backend.text_keys = table
    return backend.text_keys


def _id_of(backend, keys: dict[str, list[int]], text: str, scored: int | None) -> int:
    """The id a top choice keyed by ``text`` stands for. Several tokens share a text (control tokens and broken
    UTF-8 bytes are all empty): the scored token if it is one of them, else the end of generation, else an error."""
    ids = keys.get(text)
    if not ids:
        raise ServerError(f"{backend.root_url} returned a top token {text!r} that is no token's text here")
    if len(ids) == 1:
        return ids[0]
    if scored in ids:
        return scored
    ends = [t for t in ids if backend.vocab.is_end_of_generation(t)]
    if ends:
        return ends[0]
    raise ServerError(f"{backend.root_url} (llama-cpp-python) keys its top choices by text, and {text!r} is the text "
                      f"of {len(ids)} tokens: the large model's choice there is not known; use SGLang or vLLM")


class ServerScoring(Scoring):
    """What scores text for a server backend (lm-eval's log-likelihoods, calibration): one request per text."""

    def __init__(self, backend):
        self.backend = backend
        self.name, self.path = backend.name, getattr(backend.vocab, "path", None)

    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    def tokenize(self, text: bytes, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.backend.tokenize(text, special, add_bos)

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.backend.prompt_tokens(prompt)

    def token_bytes(self, token: int) -> bytes:
        return self.backend.token_bytes(token)

    def chat_prompt(self, messages: list[dict]) -> str:
        return self.backend.chat_prompt(messages)

    def document_start_token(self) -> int:
        return self.backend.vocab.document_start_token()

    def token_logprobs(self, context: Sequence[int], first: int) -> tuple[np.ndarray, np.ndarray]:
        scored = score(self.backend, context, first)
        logprobs = np.asarray(scored.logprobs, dtype=np.float64)
        return logprobs, np.array([lp >= top[0][1] for lp, top in zip(scored.logprobs, scored.tops)], dtype=bool)

    def position_margins(self, context: Sequence[int], first: int, chunk: int = 256) -> np.ndarray:
        if first == len(context):
            return np.zeros(0)
        tops = score(self.backend, context, first, top_n=2).tops[:-1]
        return np.array([math.exp(t[0][1]) - (math.exp(t[1][1]) if len(t) > 1 else 0.0) for t in tops])
