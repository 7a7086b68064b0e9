"""The ``relaygen`` command's shared flags, and how they become a RelaySpec and SamplingParams.

The backend flags are spelled for the command line (``--threads``) and named as the backends' options
(``n_threads``); ``RelaySpec`` checks them against the chosen backend, so a flag of another backend is
an error naming the flag. Flags that build an engine default to None: ``RelaySpec`` and ``RelayConfig``
hold the only defaults (the help texts name them).
"""

from __future__ import annotations

import argparse
import sys

from .backends import BACKENDS
from .backends.server_kind import KINDS


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--pair", help="registry pair (default: the registry's default pair)")
    g.add_argument("--large", help="override the large model: registry name or GGUF path (hf: also a model directory)")
    g.add_argument("--small", help="override the small model: registry name or GGUF path (hf: also a model directory)")
    g.add_argument("--backend", default="llamacpp", choices=list(BACKENDS),
                   help="llamacpp (GGUF, default), hf (transformers + torch) or openai (two completion servers)")
    g.add_argument("--n-ctx", type=int, default=None,
                   help="context window per model (default: 4096; openai: the prompt limit checked locally, 32768)")
    g.add_argument("--threads", type=int, default=None,
                   help="llamacpp, hf: CPU threads per model (default: all cores, up to 8)")
    g.add_argument("--gpu-layers", type=int, default=None, help="llamacpp: layers to offload to the GPU (-1: all)")
    g.add_argument("--device", default=None, help="hf: cpu, cuda, mps or auto (default: auto)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="hf: weight dtype (default: float32)")
    g.add_argument("--large-url", help="openai: base URL of the large model's server, e.g. http://host:8000/v1")
    g.add_argument("--small-url", help="openai: base URL of the small model's server")
    g.add_argument("--chat-template", help="openai: chat template source (GGUF, tokenizer_config.json or Jinja); "
                                           "default: the registry model's GGUF if fetched")
    g.add_argument("--api-key", default=None, help="openai: bearer token (default: $RELAYGEN_API_KEY)")
    g.add_argument("--server", default=None, choices=KINDS,
                   help="openai: what the servers are, which says what they can do (default: recognised at start-up)")
    g.add_argument("--tokenizer", default=None, choices=("auto", "model", "none"),
                   help="openai: hand off and score by token id with each model's own tokenizer, from where its chat "
                        "template comes (GGUF file or model directory); auto (default): where the server takes "
                        "token-id prompts; model: on any server; none: by text")


def add_cue_options(p: argparse.ArgumentParser, what: str) -> None:
    r = p.add_argument_group("cues")
    r.add_argument("--cue", action="append", dest="cues", metavar="CUE", help=f"{what} (repeat for several)")
    r.add_argument("--substring-cues", action="store_true",
                   help="match cues as plain substrings (the reference's behaviour; for ablations)")


def add_relay_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("relay")
    r.add_argument("--mode", choices=["relay", "large", "small"],
                   help="relay (default), or one model alone as a baseline")
    r.add_argument("--profile", help="cue profile: paper-qwen3, paper-r1, all-candidates, or a profile JSON file")
    r.add_argument("--answer-model", choices=["small", "large"],
                   help="who writes the answer after the reasoning-end marker (default: small, as the paper)")
    r.add_argument("--min-large-tokens", type=int, help="large-model tokens before a cue may fire (default: 5)")
    r.add_argument("--reasoning-end", help="reasoning-end marker (default: the model's, from the registry)")
    r.add_argument("--check", metavar="POLICY",
                   help="checked relay: the large model vets each small-model sentence and cuts it at the first token "
                        "it rejects: auto (default: the cue profile's default policy where the pair can check, "
                        "else off), off, exact (output as the large model's alone), or tau=P (cut below "
                        "probability P, e.g. tau=0.01); llamacpp and hf backends")
    r.add_argument("--resume", type=int, metavar="N",
                   help="with a check: after a cut and the large model's token there, the small model finishes the "
                        "sentence (checked again), at most N times per sentence (default: 0, the large model finishes it)")
    r.add_argument("--answer-reserve", type=int,
                   help="tokens kept for the answer stage if reasoning exhausts the budget (default: 0)")


def add_sampling_options(p: argparse.ArgumentParser, temperature: float | None = 0.6, max_tokens: int = 1024) -> None:
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=temperature, help=f"0 = greedy (default: {temperature})")
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--top-k", type=int, default=20)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--max-tokens", type=int, default=max_tokens, help=f"budget for both models together (default: {max_tokens})")


def add_speculative_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding (llamacpp)")
    g.add_argument("--speculative", choices=["auto", "off", "draft", "lookup"],
                   help="draft: the small model drafts the large model's tokens; lookup: prompt lookup; "
                        "auto (default): draft on a GPU, off on a CPU")
    g.add_argument("--draft-max", type=int, help="most tokens per draft (default: 8; adapted to acceptance)")
    g.add_argument("--draft-model", help="draft model: registry name or GGUF path (default: the pair's small model)")


def add_engine_options(p: argparse.ArgumentParser, temperature: float | None = 0.6) -> None:
    add_model_options(p)
    add_speculative_options(p)
    add_relay_options(p)
    add_cue_options(p, "a switch cue; replaces the profile")
    add_sampling_options(p, temperature)
    o = p.add_argument_group("output")
    o.add_argument("--stream", action="store_true", help="print text as it is generated")
    o.add_argument("--json", action="store_true", help="print one JSON record instead of coloured text")


def engine_from_args(args, mode: str | None = None, use_cues: bool = True):
    from .loader import build
    from .options import RelaySpec

    return build(RelaySpec.from_mapping(spec_mapping(args, mode, use_cues), spelled=flag))


# flags a command may have, as the RelaySpec / RelayConfig fields they set (left out: the field's default)
SPEC_FLAGS = {"speculative": "speculative", "draft_max": "draft_max", "draft_model": "draft_model",
              "mode": "mode", "min_large_tokens": "min_large_tokens", "answer_model": "answer_model",
              "reasoning_end": "reasoning_end", "answer_reserve": "answer_reserve_tokens", "check": "check",
              "resume": "resume"}


def spec_mapping(args, mode: str | None = None, use_cues: bool = True) -> dict:
    """The flags as ``RelaySpec.from_mapping`` takes them (checked there); a flag not given is left out."""
    profile = (args.cues or args.profile) if use_cues else None
    given = vars(args)
    return {
        "pair": args.pair, "large": args.large, "small": args.small, "backend": args.backend, "profile": profile,
        "cue_matching": "substring" if use_cues and args.substring_cues else None,
        "progress": sys.stderr.isatty() and not given.get("json", False),
        "large_url": args.large_url, "small_url": args.small_url,
        **{field: given[flag] for flag, field in SPEC_FLAGS.items() if given.get(flag) is not None},
        **({"mode": mode} if mode else {}), **backend_options(args)}


# backend options as the CLI spells them; each backend's constructor says which of them it takes
FLAGS = {"n_ctx": "--n-ctx", "n_threads": "--threads", "n_gpu_layers": "--gpu-layers", "device": "--device",
          "dtype": "--dtype", "chat_template": "--chat-template", "api_key": "--api-key",
          "large_url": "--large-url", "small_url": "--small-url", "server": "--server", "tokenizer": "--tokenizer"}


def flag(option: str) -> str:
    return FLAGS.get(option, option)


def backend_options(args) -> dict:
    """The backend options the user set; RelaySpec checks them against the chosen backend (never dropped)."""
    import os

    given = {"n_ctx": args.n_ctx, "n_threads": args.threads, "n_gpu_layers": args.gpu_layers, "device": args.device,
             "dtype": args.dtype, "chat_template": args.chat_template, "api_key": args.api_key,
             "large_url": args.large_url, "small_url": args.small_url, "server": args.server,
             "tokenizer": args.tokenizer}
    options = {k: v for k, v in given.items() if v is not None}
    if args.backend == "openai" and "api_key" not in options and os.environ.get("RELAYGEN_API_KEY"):
        options["api_key"] = os.environ["RELAYGEN_API_KEY"]
    return options


def params_from_args(args):
    from .core.sampling import SamplingParams

    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                          max_tokens=args.max_tokens).validated()
