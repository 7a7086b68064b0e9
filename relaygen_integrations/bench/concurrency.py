"""Throughput against concurrency: ``relaygen bench concurrency``.

One concurrent engine (``max_batch`` = the highest level) answers the same problems at each level L of
offered load: L requests in flight, each client taking the next problem when its last one ended. The
(method, level) runs of a repeat are interleaved, and each repeat runs them in the other order, so a
slow spell of a shared machine hits all alike; a level's throughput (generated tokens per second of
wall time) is divided by level 1's of the same method in the same repeat. Also per run: accuracy,
how many answers equal level 1's (batched evaluation may change a token: batch numerics), latency,
how many sequences a model call evaluated on average (did the rounds really batch), and the share of
wall time the models spent evaluating (the rest: Python between calls, rounds waiting for requests).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..backends import backend_class
from ..errors import ConfigError
from ..math_tasks import answers_match, data_file, load_problems, math_prompt
from .methods import method_config, parse_methods
from .runner import machine_description


@dataclass
class SweepSettings:
    dataset: str = "gsm8k"
    methods: str = "large,relay"
    levels: tuple[int, ...] = (1, 2, 4)
    requests: int = 4  # problems per run: start .. start + requests - 1
    start: int = 0
    max_tokens: int = 128
    repeats: int = 2
    pair: str | None = None
    large: str | None = None
    small: str | None = None
    backend: str = "llamacpp"
    backend_options: dict = field(default_factory=dict)

    def validated(self, spelled=None) -> "SweepSettings":
        for m in parse_methods(self.methods, need_large=False):
            if m.speculative != "off":
                raise ConfigError(f"method {m.name!r}: speculative decoding is not combined with batched requests yet")
        levels = sorted(set(self.levels))
        if not levels or levels[0] < 1 or levels[-1] > 256:
            raise ConfigError(f"--levels must be numbers of requests in flight from 1 to 256, got {list(self.levels)}")
        if levels[0] != 1:
            raise ConfigError("--levels must include 1: every level's throughput is a ratio to one request at a time")
        if self.requests < levels[-1]:
            raise ConfigError(f"--requests {self.requests} is fewer than the highest level ({levels[-1]}): that "
                              "level would never have that many requests in flight")
        if self.repeats < 1 or self.max_tokens < 1 or self.start < 0:
            raise ConfigError("--repeats and --max-tokens must be at least 1, --start at least 0")
        if levels[-1] > 1 and backend_class(self.backend).concurrency == "single":
            raise ConfigError(f"the {self.backend} backend serves one request at a time: --levels 1 only")
        self.levels = tuple(levels)
        self.spec(spelled)
        return self

    def spec(self, spelled=None):
        from ..options import RelaySpec

        return RelaySpec.from_mapping({"pair": self.pair, "large": self.large, "small": self.small,
                                       "backend": self.backend, "max_batch": max(self.levels),
                                       **self.backend_options}, spelled=spelled)


def run_sweep(settings: SweepSettings, progress: bool = True, console=None) -> list[dict]:
    """Every (repeat, method, level) run; each a dict with its timings and answers."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..core.profile import load_profile
    from ..core.sampling import SamplingParams
    from ..serving.build import build_concurrent

    settings.validated()
    problems = load_problems(data_file(settings.dataset))[settings.start:settings.start + settings.requests]
    if len(problems) < settings.requests:
        raise ConfigError(f"{settings.dataset} has {len(problems)} problems from index {settings.start}, "
                          f"not --requests {settings.requests}")
    methods = parse_methods(settings.methods, need_large=False)
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens)
    base = build_concurrent(settings.spec())
    try:
        engines = {m.name: base.variant(method_config(m, base.config, base.profile),
                                        load_profile(m.profile) if m.profile else None) for m in methods}
        order = [(m.name, level) for m in methods for level in settings.levels]
        schedule = [(r, *run) for r in range(settings.repeats) for run in (order if r % 2 == 0 else order[::-1])]
        rows = []
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("answering", total=len(schedule) * len(problems))
            for repeat, method, level in schedule:
                bar.update(task, description=f"repeat {repeat + 1} {method} x{level}")
                row = run_level(engines[method], problems, level, params, lambda: bar.advance(task))
                rows.append({"repeat": repeat, "method": method, **row})
                if console and not progress:
                    console.print(f"repeat {repeat + 1} {method} x{level}: {row['throughput']:.2f} tokens/s, "
                                  f"{row['right']}/{len(problems)} right", highlight=False)
        for engine in engines.values():
            engine.close()
    finally:
        base.close()
    return rows


def run_level(engine, problems: list[dict], level: int, params, advance=lambda: None) -> dict:
    """``problems`` answered with ``level`` requests in flight; the first failure is raised after all end."""
    pending, lock = list(enumerate(problems)), threading.Lock()
    answers: dict[int, dict] = {}
    failures: list[BaseException] = []
    scheduler = engine.scheduler
    calls0, sequences0, busy0 = (scheduler.calls, scheduler.sequences, scheduler.busy_seconds) if scheduler else (0, 0, 0)

    def client():
        while not failures:
            with lock:
                if not pending:
                    return
                i, problem = pending.pop(0)
            t0 = time.perf_counter()
            try:
                result = engine.generate(math_prompt(problem["problem"]), params)
                answers[i] = {"id": problem["id"], "latency": time.perf_counter() - t0, "text": result.text,
                              "tokens": result.stats.generated_tokens, "finish": result.stats.finish_reason,
                              "small_tokens": result.stats.small.generated_tokens}
                advance()
            except BaseException as e:  # raised below, once the other clients have stopped
                failures.append(e)
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"bench-client-{n}") for n in range(level)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        raise failures[0]
    ordered = [answers[i] for i in range(len(problems))]
    for answer, problem in zip(ordered, problems):  # here: math-verify's timeout works on the main thread only
        answer["correct"] = answers_match(answer["text"], problem["answer"])
    tokens = sum(a["tokens"] for a in ordered)
    calls = scheduler.calls - calls0 if scheduler else 0
    return {"level": level, "wall_s": wall, "tokens": tokens, "throughput": tokens / wall,
            "right": sum(a["correct"] for a in ordered), "latency_p50": statistics.median(a["latency"] for a in ordered),
            "latency_max": max(a["latency"] for a in ordered),
            "sequences_per_call": (scheduler.sequences - sequences0) / calls if calls else None,
            "models_busy": (scheduler.busy_seconds - busy0) / wall if scheduler else None, "answers": ordered}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (method, level): the median throughput ratio to level 1 over repeats, its spread, and the rest."""
    base = {(r["repeat"], r["method"]): r for r in rows if r["level"] == 1}
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["level"]), []).append(r)
    out = []
    for (method, level), runs in groups.items():
        ratios = [r["throughput"] / base[r["repeat"], method]["throughput"] for r in runs]
        same = [sum(a["text"] == b["text"] for a, b in zip(r["answers"], base[r["repeat"], method]["answers"]))
                for r in runs]
        per_call = [r["sequences_per_call"] for r in runs if r["sequences_per_call"] is not None]
        busy = [r["models_busy"] for r in runs if r.get("models_busy") is not None]
        out.append({"method": method, "level": level, "runs": len(runs),
                    "throughput": statistics.median(r["throughput"] for r in runs),
                    "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                    "right": [r["right"] for r in runs], "same_as_level_1": same,
                    "small_share": sum(a.get("small_tokens", 0) for r in runs for a in r["answers"])
                    / max(1, sum(a["tokens"] for r in runs for a in r["answers"])),
                    "latency_p50": statistics.median(r["latency_p50"] for r in runs),
                    "sequences_per_call": statistics.median(per_call) if per_call else None,
                    "models_busy": statistics.median(busy) if busy else None})
    return out


def write_report(settings: SweepSettings, rows: list[dict], out: Path, command: str) -> Path:
    """A Markdown table at ``out`` and every run (answers included) as JSON lines beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    n = settings.requests
    lines = [f"# Throughput against concurrency: {settings.pair or 'default pair'}, backend {settings.backend}", "",
             f"`{command}`", "",
             f"{settings.dataset} problems {settings.start}-{settings.start + n - 1}, greedy, at most "
             f"{settings.max_tokens} tokens each; {settings.repeats} repeats, runs interleaved; machine: "
             f"{json.dumps(machine_description())}. Ratio: a level's throughput over level 1's, same method and "
             "repeat (median, min-max). \"Same as level 1\": answers whose text equals level 1's, per repeat.", "",
             "| method | requests in flight | tokens/s | vs 1 (median, min-max) | right of "
             f"{n} | same as level 1 | small share | latency p50 s | sequences per model call | models busy |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summarise(rows):
        per_call = f"{s['sequences_per_call']:.2f}" if s["sequences_per_call"] is not None else "-"
        busy = f"{s['models_busy']:.0%}" if s["models_busy"] is not None else "-"
        lines.append(f"| {s['method']} | {s['level']} | {s['throughput']:.2f} | {s['ratio']:.2f}x "
                     f"({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) | {', '.join(map(str, s['right']))} | "
                     f"{', '.join(map(str, s['same_as_level_1']))} | {s['small_share']:.0%} | {s['latency_p50']:.1f} | "
                     f"{per_call} | {busy} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    runs = out.with_suffix(".jsonl")
    with open(runs, "w", encoding="utf-8") as f:
        recorded = asdict(settings)
        recorded["backend_options"] = {k: ("<set>" if k == "api_key" and v else v)  # never a secret in a file
                                       for k, v in settings.backend_options.items()}
        f.write(json.dumps({"type": "settings", **recorded}) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out
