"""Answer benchmark problems with every method, interleaved per problem, into a resumable JSONL file.

Each line is one record: ``run`` (settings and machine, one per invocation), ``costs`` (the cost
model's unit costs, measured at the start of each invocation) or ``sample`` (one method's answer to
one problem: correctness, time, tokens per model, evaluation calls, segments, text). A rerun with the
same settings skips the samples already in the file, so a long benchmark can be stopped and resumed.

For each problem the methods run back to back, in an order that rotates from problem to problem, so a
slow spell of a shared machine hits all methods alike; speedups are ratios of total times.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..math_tasks import DATASETS, answers_match, box_content, data_file, last_boxed, load_problems, math_prompt
from .costs import measure
from .methods import DEFAULT_METHODS, MethodRunner, parse_methods

# the names bench records give some of RelayStats.summary()'s fields (older results files use them)
RECORD_NAMES = {"seconds": "wall_s", "finish_reason": "finish", "generated_tokens": "tokens", "cues_fired": "cues"}
# settings a resumed run must share with the file it appends to (methods, limit and samples may grow)
RESUME_KEYS = ("pair", "large", "small", "backend", "dataset", "max_tokens", "temperature", "top_p", "top_k",
               "seed", "draft_max", "answer_reserve_tokens")


@dataclass
class BenchSettings:
    dataset: str = "gsm8k"
    methods: str = DEFAULT_METHODS
    start: int = 0
    limit: int | None = None
    samples: int = 1
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 20
    max_tokens: int = 512
    answer_reserve_tokens: int = 0
    pair: str | None = None
    large: str | None = None
    small: str | None = None
    backend: str = "llamacpp"
    draft_max: int = 8
    agreement: bool = True  # the answer-stage experiment on each large-only trace
    costs: bool = True  # measure the cost model's unit costs at start
    backend_options: dict = field(default_factory=dict)

    def validated(self, spelled=None) -> "BenchSettings":
        """``spelled``: how the caller's user writes a backend option (the CLI's flags)."""
        parse_methods(self.methods)
        if self.samples < 1:
            raise ConfigError("--samples must be at least 1")
        if self.samples > 1 and self.temperature == 0:
            raise ConfigError("--samples K > 1 needs --temperature > 0: greedy samples are all the same answer")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.start < 0:
            raise ConfigError("--start must be >= 0")
        if self.max_tokens < 1:
            raise ConfigError("--max-tokens must be at least 1")
        if self.backend == "openai" and any(m.speculative != "off" for m in parse_methods(self.methods)):
            raise ConfigError("speculative methods (+draft, +lookup) run in process: use the llamacpp or hf backend "
                              "(the checked methods, +check, +exact and +tau=P, run over servers that score)")
        self.spec(spelled=spelled)  # the backend's options, checked against what it takes
        return self

    def spec(self, progress: bool = False, spelled=None):
        """The engine these settings build (speculation is composed per method, so off here)."""
        from ..options import RelaySpec

        return RelaySpec.from_mapping({"pair": self.pair, "large": self.large, "small": self.small,
                                       "backend": self.backend, "speculative": "off", "draft_max": self.draft_max,
                                       "progress": progress, "answer_reserve_tokens": self.answer_reserve_tokens,
                                       **self.backend_options}, spelled=spelled)


def recorded_settings(settings: BenchSettings, path: Path) -> dict:
    """The settings as the results file keeps them: a secret (a server's API key) is never written."""
    options = {k: ("<set>" if k == "api_key" and v else v) for k, v in settings.backend_options.items()}
    return {**asdict(settings), "dataset": settings.dataset if settings.dataset in DATASETS else str(path),
            "backend_options": options}


def read_records(path: Path) -> list[dict]:
    """All records of a results file; a line cut short by a stopped run is ignored (it is rewritten)."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if f.readline():  # only the last line may be incomplete
                    raise ConfigError(f"{path}:{n} is not JSON: not a results file?") from None
    return records


def _check_resume(settings: dict, records: list[dict], path: Path) -> None:
    runs = [r for r in records if r.get("type") == "run"]
    if not runs:
        if records:
            raise ConfigError(f"{path} is not a relaygen bench results file")
        return
    first = runs[0]["settings"]
    changed = [k for k in RESUME_KEYS if first.get(k) != settings.get(k)]
    if changed:
        diff = ", ".join(f"{k}: {first.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ConfigError(f"{path} holds a run with other settings ({diff}); resume with the same settings "
                          "or write to a new --out file")


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    return info


class _Writer:
    """Appends records, each flushed to disk at once; first drops a line a stopped run left unfinished."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size:
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                with open(path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _answer_on_trace(engine, prompt: str, reasoning: str, params) -> tuple[str, float]:
    """The answer ``engine`` (one model alone) writes after another model's reasoning: it continues the
    rendered prompt plus the reasoning, and is stopped as soon as the box closes."""
    text_prompt = engine.large.chat_prompt([{"role": "user", "content": prompt}]) + reasoning
    t0, text = time.perf_counter(), ""
    stream = engine.stream(text_prompt, params, chat=False)
    try:
        for event in stream:
            text += event.text
            if event.kind == "text" and box_content(text)[1]:
                break  # the box is closed: that is the whole answer
    finally:
        stream.close()
    return box_content(text)[0], time.perf_counter() - t0


def run_bench(settings: BenchSettings, out: Path, progress: bool = True, console=None) -> Path:
    """Run (or resume) a benchmark; returns the results file."""
    from ..core.engine import RelayConfig, RelayEngine
    from ..loader import build, make_drafter, resolve_pair

    spec = settings.validated().spec(progress)
    methods = parse_methods(settings.methods)
    path = data_file(settings.dataset)
    problems = load_problems(path)
    end = len(problems) if settings.limit is None else min(len(problems), settings.start + settings.limit)
    problems = [(i, problems[i]) for i in range(settings.start, end)]
    if not problems:
        raise ConfigError(f"no problems: {path.name} has {end} and --start is {settings.start}")
    as_dict = recorded_settings(settings, path)
    records = read_records(out)
    _check_resume(as_dict, records, out)
    done = {(r["id"], r["method"], r["sample"]) for r in records if r.get("type") == "sample"}
    todo = [(i, p, k) for i, p in problems for k in range(settings.samples)]
    remaining = sum((p["id"], m.name, k) not in done for _, p, k in todo for m in methods)
    if remaining == 0:
        if console:
            console.print(f"{out}: all {len(todo) * len(methods)} samples already done")
        return out

    base = build(spec)
    drafters = {mode: make_drafter(spec, base.large, resolve_pair(spec), mode) for mode in ("draft", "lookup")
                if any(m.speculative == mode for m in methods)}
    runner = MethodRunner(base, methods, drafters)
    answerer = RelayEngine(base.large, base.small, base.profile, RelayConfig(mode="small"))

    notes = _scoring_notes(runner, methods)
    writer = _Writer(out)
    try:
        writer.write({"type": "run", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "settings": as_dict, "machine": machine_description(), "profile": base.profile.name,
                      "reasoning_end": base.config.reasoning_end, **({"notes": notes} if notes else {})})
        for note in notes if console else ():
            console.print(f"note: {note}")
        if settings.costs and (base.large.local_ids or base.small.local_ids):
            if console:  # a server without its model's tokenizer: no token counts to price
                console.print("no cost model over servers without the models' tokenizers (tokenizer=): skipped")
        elif settings.costs:
            _wait_while_paused(out)
            writer.write(_measure_costs(runner, [p["problem"] for _, p in problems[:40]], console))
        _answer_all(runner, answerer, methods, todo, done, settings, writer, remaining, progress, console)
    finally:
        writer.close()
        base.large.close()
        base.small.close()  # an hf small backend may share the large one's weights: closing twice is harmless
        if "draft" in drafters:
            drafters["draft"].close()
    return out


def _scoring_notes(runner: MethodRunner, methods) -> list[str]:
    """Where a checked method's scoring is slow on its server (say so, as its cost is priced as measured)."""
    from ..backends.local import LocalBackend

    if not any(m.check != "off" for m in methods) or isinstance(runner.large, LocalBackend):
        return []
    from ..backends.server_scoring import slow_path

    return [note for note in [slow_path(runner.large)] if note]


def _measure_costs(runner: MethodRunner, texts: list[str], console) -> dict:
    if console:
        console.print("measuring each model's cost per evaluation call (cost model) ...")
    record = {"type": "costs", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tokens = runner.large.tokenize("\n\n".join(texts).encode("utf-8"))
    for role, costs in measure({"large": runner.large, "small": runner.small}, tokens).items():
        record[role] = costs.to_dict()
    return record


def _answer_all(runner, answerer, methods, todo, done, settings, writer, remaining, progress, console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..core.sampling import SamplingParams

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    correct: dict[str, list[int]] = {m.name: [0, 0] for m in methods}
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("answering", total=remaining)
        for n, (index, problem, k) in enumerate(todo):
            order = methods[n % len(methods):] + methods[:n % len(methods)]
            answered = []
            for method in order:
                if (problem["id"], method.name, k) in done:
                    continue
                _wait_while_paused(writer.path, bar, task)
                bar.update(task, description=f"#{index} {method.name:<12} " + "  ".join(
                    f"{name} {c}/{t}" for name, (c, t) in correct.items() if t))
                params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                                        seed=settings.seed + k, max_tokens=settings.max_tokens)
                record = answer_one(runner, method.name, index, problem, k, params)
                if method.name == "large" and settings.agreement:
                    record["answer_stage"] = answer_stage(answerer, problem, record, params)
                writer.write(record)
                correct[method.name][0] += record["correct"]
                correct[method.name][1] += 1
                answered.append(f"{method.name} {'right' if record['correct'] else 'wrong'} {record['wall_s']:.1f}s")
                bar.advance(task)
            if answered and not progress and console:  # a log line per problem when there is no bar (nohup)
                console.print(f"#{index} sample {k}: " + ", ".join(answered), highlight=False)


def pause_file(out: Path) -> Path:
    """Create this file to pause a running benchmark between two answers (its timings stay clean
    while the machine does other work); the runner creates ``<out>.paused`` once it has stopped, and
    continues when the pause file is removed."""
    return out.with_name(out.name + ".pause")


def _wait_while_paused(out: Path, bar=None, task=None) -> None:
    request, ack = pause_file(out), out.with_name(out.name + ".paused")
    if not request.exists():
        return
    if bar is not None:
        bar.update(task, description=f"paused: remove {request} to continue")
    ack.touch()
    try:
        while request.exists():
            time.sleep(1)
    finally:
        ack.unlink(missing_ok=True)


def answer_one(runner: MethodRunner, method: str, index: int, problem: dict, sample: int, params) -> dict:
    """One method's answer to one problem, graded, with the counts the summary and cost model need."""
    engine = runner.engine(method)
    result = engine.generate(math_prompt(problem["problem"]), params)
    st, summary = result.stats, result.stats.summary()
    roles = ("large", "small", "draft") if runner.methods[method].speculative == "draft" else ("large", "small")
    metered = {role: getattr(st, role) for role in roles}
    return {
        "type": "sample", "index": index, "id": problem["id"], "method": method, "sample": sample,
        "seed": params.seed, "reference": problem["answer"], "extracted": last_boxed(result.text),
        "correct": answers_match(result.text, problem["answer"]),
        # the summary's fields; the records' names for four of them: wall_s (seconds), finish (finish_reason),
        # tokens (generated_tokens), cues (cues_fired)
        **{RECORD_NAMES.get(k, k): v for k, v in summary.items() if k not in ("prompt_tokens", "large_share")},
        "models": {role: _model_record(getattr(st, role)) for role in ("large", "small")},
        "calls": {role: dict(sorted(m.calls.items())) for role, m in metered.items()},
        "row_calls": {role: dict(sorted(m.row_calls.items())) for role, m in metered.items()},
        "first_call": {role: m.first_call for role, m in metered.items() if m.eval_calls},
        "segments": [[s.model, s.stage, s.tokens, len(s.text)] for s in result.segments],
        "reasoning_chars": len(result.reasoning), "text": result.text,
    }


def _model_record(stats) -> dict:
    """A model's stats in a record, less the call histograms (the record keeps those per role)."""
    return {k: v for k, v in asdict(stats).items() if k not in ("calls", "row_calls", "first_call")}


def answer_stage(answerer, problem: dict, record: dict, params) -> dict | None:
    """The paper's answer-stage experiment on a large-only trace: given the same reasoning, does the
    small model put the same answer in the box as the large model did?"""
    text = record["text"]
    if record["reasoning_chars"] >= len(text) and not text.endswith("\\boxed{"):
        return None  # no answer stage: the large model never opened a box
    reasoning, answer = text[:record["reasoning_chars"]], text[record["reasoning_chars"]:]
    large_answer = box_content(answer)[0]
    small_answer, seconds = _answer_on_trace(answerer, math_prompt(problem["problem"]), reasoning, params)
    agree = bool(large_answer.strip()) and bool(small_answer.strip()) and (
        large_answer.strip() == small_answer.strip() or answers_match(f"\\boxed{{{small_answer}}}", large_answer))
    return {"large": large_answer, "small": small_answer, "agree": agree,
            "large_correct": answers_match(f"\\boxed{{{large_answer}}}", problem["answer"]),
            "small_correct": answers_match(f"\\boxed{{{small_answer}}}", problem["answer"]),
            "seconds": round(seconds, 4)}
