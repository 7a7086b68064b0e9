"""The ``relaygen`` command. Every subcommand is a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .cli_options import (add_cue_options, add_engine_options, add_model_options, add_relay_options,
                          add_sampling_options,
                          backend_options, engine_from_args, flag, params_from_args)
from .errors import RelayGenError

COLOURS = {"large": "cyan", "small": "magenta", "forced": "dim"}


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _print_run(console, engine, prompt: str, params, live: bool):
    """Run the engine; print each delta in its model's colour as it comes (live) or all at the end."""
    from rich.text import Text

    result = None
    for event in engine.stream(prompt, params):
        if event.kind == "text" and live:
            console.print(Text(event.text, style=COLOURS[event.model]), end="", soft_wrap=True)
        elif event.kind == "done":
            result = event.result
    if not live:
        text = Text()
        for seg in result.segments:
            text.append(seg.text, style=COLOURS[seg.model])
        console.print(text, soft_wrap=True, end="")
    console.print()
    return result


def _run(engine, prompt: str, args) -> int:
    params = params_from_args(args)
    console = _console()
    if args.json:
        result = engine.generate(prompt, params)
        record = {"prompt": prompt, "profile": engine.profile.name, "mode": engine.config.mode, **result.to_dict()}
        print(json.dumps(record, ensure_ascii=False, indent=2))
        return 0
    result = _print_run(console, engine, prompt, params, live=args.stream)
    console.print()
    _print_stats(console, result, engine)
    return 0


def _print_stats(console, result, engine) -> None:
    from rich.table import Table

    st = result.stats
    table = Table(title=f"relay stats (profile {engine.profile.name}, hand-off by {st.handoff})", title_justify="left")
    for col in ("", "written", "share", "prompt", "evaluated", "caught up", "seconds"):
        table.add_column(col, justify="right" if col else "left")
    total = st.generated_tokens or 1
    for role in ("large", "small"):
        m = getattr(st, role)
        table.add_row(f"[{COLOURS[role]}]{role}[/]", str(m.generated_tokens), f"{m.generated_tokens / total:.0%}",
                      str(m.prompt_tokens), str(m.evaluated_tokens), str(m.handoff_tokens), f"{m.seconds:.2f}")
    console.print(table)
    console.print(f"switches {st.switches} · finish {st.finish_reason} · wall {st.wall_seconds:.2f} s · "
                  f"{st.tokens_per_second:.1f} tok/s · seed {result.seed}")
    if st.large.drafted_tokens:
        console.print(f"speculative: {st.large.drafted_tokens} drafted · {st.large.accepted_draft_tokens} accepted · "
                      f"{st.large.rejected_draft_tokens} rejected "
                      f"({st.large.accepted_draft_tokens / st.large.drafted_tokens:.0%} acceptance)")
    if st.sentences_checked:
        console.print(f"check {engine.check_policy}: {st.sentences_checked} sentences checked · {st.sentences_cut} cut · "
                      f"{st.small_tokens_discarded} small tokens thrown away · {st.cut_tokens} written by the large "
                      "model at cuts" + (f" · {st.resumes} resumed by the small model, {st.resumed_tokens} tokens "
                                         "kept after resuming" if engine.config.resume else ""))


def cmd_generate(args) -> int:
    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    if not prompt.strip():
        raise RelayGenError("the prompt is empty")
    params_from_args(args)  # bad sampling settings fail before models load
    engine = engine_from_args(args)
    if args.math:
        from .math_tasks import math_prompt

        prompt = math_prompt(prompt)
    return _run(engine, prompt, args)


def cmd_serve(args) -> int:
    from .cli_options import spec_mapping
    from .integrations.serve import serve
    from .options import RelaySpec

    from .backends import backend_class

    options = {k: v for k, v in spec_mapping(args).items() if v is not None and k != "pair"}
    max_batch = args.max_batch if args.max_batch is not None else backend_class(args.backend).default_max_batch
    options.update(progress=False, max_batch=max_batch, queue_timeout=args.queue_timeout)
    RelaySpec.from_mapping({"pair": args.pair, **options}, spelled=flag)  # a mistake named as the user wrote it
    key = args.key if args.key is not None else os.environ.get("RELAYGEN_SERVE_KEY")
    return serve(args.pair, options, host=args.host, port=args.port, key=key, model_name=args.model_name)


def cmd_demo(args) -> int:
    from .math_tasks import answers_match, data_file, load_problems, math_prompt

    data = data_file(args.data)
    problems = load_problems(data, limit=args.index + 1)
    if args.index >= len(problems):
        raise RelayGenError(f"{data} has only {len(problems)} problems")
    problem = problems[args.index]
    console = _console()
    console.print(f"[bold]GSM8K {problem['id']}[/]: {problem['problem']}\n")
    console.print("[cyan]large model[/] / [magenta]small model[/]\n")
    params = params_from_args(args)
    engine = engine_from_args(args)
    result = _print_run(console, engine, math_prompt(problem["problem"]), params, live=True)
    console.print()
    _print_stats(console, result, engine)
    ok = answers_match(result.text, problem["answer"])
    console.print(f"reference answer {problem['answer']}: [{'green' if ok else 'red'}]{'correct' if ok else 'wrong'}[/]")
    return 0


def cmd_models(args) -> int:
    from .cli_models import cmd_models as run

    return run(args)


def cmd_calibrate(args) -> int:
    from .calibration.run import calibrate, check_writable
    from .calibration.threshold import check_quantile_of
    from .math_tasks import data_file
    from .core.sampling import SamplingParams
    from .loader import resolve_pair
    from .options import RelaySpec
    from .registry import model_path

    out = Path(args.out) if args.out else _pair_profile_out(args)
    check_writable(out)  # fail before loading models
    check_quantile_of(args.check_quantile)
    data_file(args.data)  # a missing file or unknown data set fails before models load
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_tokens=args.max_tokens, seed=args.seed).validated()
    candidates = args.cues
    if candidates:
        from .core.cues import validate_cues

        validate_cues(candidates)
    engine = engine_from_args(args, mode="large", use_cues=False)
    resolved = resolve_pair(RelaySpec(pair=args.pair, large=args.large, small=args.small))
    reg, models = resolved.registry, {}
    for role in ("large", "small"):
        name = str(getattr(resolved, role))
        path = model_path(reg.model(name)) if name in reg.models else Path(name)
        sha = next((s.get("sha256") for s in reg.model(name).sources if s.get("sha256")), None) \
            if name in reg.models else None
        models[role] = {"name": name, "file": path.name, "sha256": sha}
    profile = calibrate(engine, data=args.data, out=out, problems=args.problems, start=args.start,
                        samples=args.samples, seed=args.seed, params=params, candidates=candidates,
                        mode="substring" if args.substring_cues else "word", threshold=args.threshold,
                        min_occurrences=args.min_occurrences, traces_path=args.traces, models=models,
                        progress=sys.stderr.isatty(), check_quantile=args.check_quantile,
                        default_check=args.default_check)
    cost = profile["cost"]
    print(f"selected {len(profile['cues'])} cues: {', '.join(repr(c) for c in profile['cues'])}")
    print(f"traces: {cost['trace_tokens']} tokens in {cost['trace_seconds']} s of generation; "
          f"scored {cost['scored_tokens']} tokens in {cost['wall_seconds_this_run']['margins']} s")
    check = profile["check"]
    print(f"check threshold tau = {check['tau']:.4g} (the {check['quantile']:.1%} quantile)" if check["tau"] is not None
          else f"no check threshold: {check['why']}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    if check.get("default") == "tau":
        print(f"check=auto now runs tau = {check['tau']:.4g} for this pair")
    elif check["tau"] is not None:
        print("the check stays off by default; to make this tau the pair's default, rerun with --default-check or "
              "add \"default\": \"tau\" to the profile's \"check\" entry (docs/calibration.md)")
    return 0


def _pair_profile_out(args) -> Path:
    """Where a pair's own calibration goes when no --out is given: where the registry finds it for the pair."""
    from .registry import Registry, user_profile_path

    if args.large or args.small:
        raise RelayGenError("--large/--small calibrate models other than the pair's: name the profile with --out")
    registry = Registry.load()
    pair = registry.pair(args.pair)
    out = user_profile_path(pair.name)
    if registry.user_names_profile(pair):
        print(f"note: your registry names a profile for {pair.name}, which it keeps using; this calibration goes "
              f"to {out}", file=sys.stderr)
    if not registry.user_profiles:
        print(f"note: $RELAYGEN_REGISTRY is set, so the pair will not pick up {out} by itself: name it in that "
              "registry or pass --profile", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def cmd_bench_run(args) -> int:
    from .bench.runner import BenchSettings, run_bench
    from .math_tasks import DATASETS

    max_tokens = args.max_tokens or (512 if args.data == "gsm8k" else 2048)
    settings = BenchSettings(
        dataset=args.data, methods=args.methods, start=args.start, limit=args.limit, samples=args.samples,
        seed=args.seed, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_tokens=max_tokens,
        answer_reserve_tokens=args.answer_reserve, pair=args.pair, large=args.large, small=args.small,
        backend=args.backend, draft_max=args.draft_max, agreement=not args.no_agreement,
        costs=not args.no_costs, backend_options=backend_options(args)).validated(spelled=flag)
    stem = args.data if args.data in DATASETS else Path(args.data).stem
    out = Path(args.out or Path("evals") / "results" / "bench" / f"{stem}.jsonl")
    console = _console(stderr=True)
    run_bench(settings, out, progress=sys.stderr.isatty(), console=console)
    console.print(f"results in {out}; summarise with: relaygen bench report {out}")
    return 0


def cmd_bench_concurrency(args) -> int:
    from .bench.concurrency import SweepSettings, run_sweep, write_report

    settings = SweepSettings(
        dataset=args.data, methods=args.methods, levels=tuple(args.levels), requests=args.requests, start=args.start,
        max_tokens=args.max_tokens, repeats=args.repeats, pair=args.pair, large=args.large, small=args.small,
        backend=args.backend, backend_options=backend_options(args)).validated(spelled=flag)
    console = _console(stderr=True)
    rows = run_sweep(settings, progress=sys.stderr.isatty(), console=console)
    out = write_report(settings, rows, Path(args.out), "relaygen " + " ".join(sys.argv[1:]))
    print(out.read_text(encoding="utf-8"))
    return 0


def cmd_bench_report(args) -> int:
    from .bench.report import write_report

    out = write_report([Path(p) for p in args.results], Path(args.out), title=args.title, plots=not args.no_plots)
    print(out.read_text(encoding="utf-8") if args.print else f"wrote {out}")
    return 0


def cmd_bench_costs(args) -> int:
    from .bench.report import print_costs

    args.cues, args.profile, args.substring_cues, args.speculative = None, None, False, "off"
    return print_costs(engine_from_args(args), answer_tokens=args.tokens, segment_tokens=args.segment_tokens)


def build_parser() -> argparse.ArgumentParser:
    from .bench.methods import DEFAULT_METHODS  # a constant: the module imports nothing heavy

    parser = argparse.ArgumentParser(prog="relaygen", description=(
        "RelayGen: a large model reasons and a small model writes the easy sentences after switch cues. "
        "Spans by the large model print in cyan, by the small model in magenta."))
    parser.add_argument("--version", action="version", version=f"relaygen-integrations {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer a prompt with a model pair",
                       description="Answer PROMPT with the relay and print who wrote what, then stats.")
    g.add_argument("prompt", help="the prompt text ('-' reads standard input)")
    g.add_argument("--math", action="store_true", help="append the math instruction (answer in \\boxed{})")
    add_engine_options(g)
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo", help="solve one GSM8K problem with the default pair, greedy")
    d.add_argument("--index", type=int, default=0, help="problem index in the data file (default: 0)")
    d.add_argument("--data", default="gsm8k", help="a data set name or JSONL file (default: gsm8k)")
    add_engine_options(d, temperature=0.0)
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("calibrate", help="pick a pair's switch cues from the small model's margins",
                       description="The large model writes traces; the small model is teacher-forced over them; "
                                   "cues after which the small model is more confident than elsewhere are selected.")
    c.add_argument("--data", default="gsm8k", help="data file (JSONL with id, problem, answer) or 'gsm8k'")
    c.add_argument("--start", type=int, default=0, help="index of the first problem to use")
    c.add_argument("--problems", type=int, default=40, help="number of problems (default: 40)")
    c.add_argument("--samples", type=int, default=4, help="traces per problem (default: 4)")
    c.add_argument("--out", help="profile JSON to write (plot: same name, .png); default, for a registry pair: "
                   "$RELAYGEN_HOME/profiles/PAIR.json, which the pair uses from then on")
    c.add_argument("--default-check", action="store_true",
                   help="make the calibrated tau the pair's default check (check=auto runs it); off by default: "
                   "let a benchmark show the check pays on your pair first")
    c.add_argument("--traces", help="trace store (default: OUT with .traces.jsonl); reused and resumed")
    c.add_argument("--threshold", type=float, default=0.0, help="select cues with delta > this (default: 0)")
    c.add_argument("--min-occurrences", type=int, default=5, help="occurrences a cue needs (default: 5)")
    c.add_argument("--check-quantile", type=float, default=0.01,
                   help="the checked relay's tau: this quantile of the large model's probability of its own trace "
                        "tokens (default: 0.01)")
    add_model_options(c)
    add_cue_options(c, "a candidate cue, instead of the 91 reference candidates")
    add_sampling_options(c, max_tokens=512)
    c.set_defaults(func=cmd_calibrate, seed=0, speculative="off")

    b = sub.add_parser("bench", help="benchmark methods for accuracy and speed; report; cost model",
                       description="Accuracy and speed of the relay against its baselines on this machine.")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    br = bsub.add_parser("run", help="answer problems with each method (resumable)",
                         description="Methods: large, small, relay (calibrated profile), relay-all (all candidate "
                                     "cues), relay:PROFILE, each of large/relay optionally +draft or +lookup "
                                     "(speculative decoding). Results are appended to a JSONL file; rerunning "
                                     "the same command skips what is done.")
    br.add_argument("--data", default="gsm8k", help="gsm8k, math500, aime2024, aime2025, amc23 or a JSONL file")
    br.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list (default: {DEFAULT_METHODS})")
    br.add_argument("--start", type=int, default=0, help="index of the first problem (default: 0)")
    br.add_argument("--limit", type=int, default=None, help="number of problems (default: all)")
    br.add_argument("--samples", type=int, default=1, help="samples per problem for pass@1 (needs --temperature > 0)")
    br.add_argument("--seed", type=int, default=0, help="seed of sample 0; sample k uses seed + k (default: 0)")
    br.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    br.add_argument("--top-p", type=float, default=0.95)
    br.add_argument("--top-k", type=int, default=20)
    br.add_argument("--max-tokens", type=int, default=None, help="budget per answer (default: 512 for gsm8k, else 2048)")
    br.add_argument("--answer-reserve", type=int, default=0, help="tokens kept for the answer stage (default: 0)")
    br.add_argument("--draft-max", type=int, default=8, help="most tokens per speculative draft (default: 8)")
    br.add_argument("--no-agreement", action="store_true", help="skip the answer-stage experiment")
    br.add_argument("--no-costs", action="store_true", help="skip measuring the cost model's unit costs")
    br.add_argument("--out", help="results JSONL (default: evals/results/bench/DATA.jsonl)")
    add_model_options(br)
    br.set_defaults(func=cmd_bench_run)
    bs = bsub.add_parser("concurrency", help="throughput against requests in flight (batched relays)",
                         description="The same problems answered with 1, 2, 4, ... requests in flight on one "
                                     "concurrent engine, each method, repeated and interleaved; reports each "
                                     "level's throughput as a ratio to one request at a time.")
    bs.add_argument("--data", default="gsm8k", help="a data set name or JSONL file (default: gsm8k)")
    bs.add_argument("--methods", default="large,relay", help="comma list, as bench run's, without +draft/+lookup "
                                                              "(default: large,relay)")
    bs.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4], help="requests in flight (default: 1 2 4)")
    bs.add_argument("--requests", type=int, default=4, help="problems per run (default: 4)")
    bs.add_argument("--start", type=int, default=0, help="index of the first problem (default: 0)")
    bs.add_argument("--max-tokens", type=int, default=128, help="budget per answer (default: 128)")
    bs.add_argument("--repeats", type=int, default=2, help="repeats, alternating the order (default: 2)")
    bs.add_argument("--out", required=True, help="report (Markdown); every run's answers go beside it (.jsonl)")
    add_model_options(bs)
    bs.set_defaults(func=cmd_bench_concurrency)
    bp = bsub.add_parser("report", help="summarise results files into Markdown and plots")
    bp.add_argument("results", nargs="+", help="results JSONL files from `relaygen bench run`")
    bp.add_argument("--out", required=True, help="report file (plots go beside it)")
    bp.add_argument("--title", help="the report's heading (default: RelayGen benchmark)")
    bp.add_argument("--no-plots", action="store_true")
    bp.add_argument("--print", action="store_true", help="print the report")
    bp.set_defaults(func=cmd_bench_report)
    bc = bsub.add_parser("costs", help="measure the pair's costs and predict relay speedups before a benchmark")
    bc.add_argument("--segment-tokens", type=float, default=15.0, help="tokens per small-model sentence (default: 15)")
    bc.add_argument("--tokens", type=int, default=300, help="tokens per answer (default: 300)")
    add_model_options(bc)
    bc.set_defaults(func=cmd_bench_costs)

    s = sub.add_parser("serve", help="an OpenAI-compatible endpoint for a pair (LiteLLM's proxy, no config to write)",
                       description="Serve chat completions, completions (streaming too), /v1/models and usage "
                                   "with the relay statistics on HOST:PORT, up to --max-batch requests at once.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=4000, help="port (default: 4000)")
    s.add_argument("--key", default=None, help="API key clients must send (default: $RELAYGEN_SERVE_KEY; none: open)")
    s.add_argument("--model-name", default=None, help="the model's name for clients (default: the pair's name)")
    s.add_argument("--max-batch", type=int, default=None,
                   help="requests served at once; llama.cpp evaluates them together (default: 4; hf: 1)")
    s.add_argument("--queue-timeout", type=float, default=600.0,
                   help="seconds a request beyond --max-batch waits for a free sequence (default: 600)")
    add_model_options(s)
    add_relay_options(s)
    add_cue_options(s, "a switch cue; replaces the profile")
    s.set_defaults(func=cmd_serve, speculative="off")

    m = sub.add_parser("models", help="list, fetch or locate model files")
    m.add_argument("action", choices=["list", "fetch", "path"])
    m.add_argument("name", nargs="?", help="a model or pair name from `relaygen models list`")
    m.add_argument("--from", dest="source", help="fetch: take the file from this local path (verified)")
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RelayGenError as exc:
        print(f"relaygen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relaygen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
