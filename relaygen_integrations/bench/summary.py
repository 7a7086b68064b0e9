"""Statistics of a benchmark results file: accuracy with confidence intervals, paired comparisons
against the large model, speedups as ratios of total times, token shares, the answer-stage
experiment, and the cost model's predicted speedups next to the measured ones."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .costs import UnitCosts, memory_bound
from .runner import read_records

Z95 = 1.959963984540054


Pricing = Callable[[dict], dict[str, UnitCosts]]  # an answer -> the unit costs to price its calls with


@dataclass
class Results:
    """One results file: its settings, machine, unit costs and samples. ``invocation_of`` maps a sample
    (by ``id``) to the index in ``costs`` of the measurement taken at the start of the invocation that
    wrote it, absent when that invocation measured none: a resumed run may land on another host or load."""

    path: Path
    runs: list[dict]
    costs: list[dict]
    samples: list[dict]
    invocation_of: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        self._parsed = [_unit_costs([c]) for c in self.costs]

    @property
    def settings(self) -> dict:
        return self.runs[0]["settings"]

    @property
    def methods(self) -> list[str]:
        order = [m.strip() for r in self.runs for m in r["settings"]["methods"].split(",")]
        present = {s["method"] for s in self.samples}
        return [m for m in dict.fromkeys(order) if m in present]

    def unit_costs(self) -> dict[str, UnitCosts] | None:
        """Per model, the median over all measurements (one per invocation) of each call size."""
        return _unit_costs(self.costs) if self.costs else None

    def costs_of(self, record: dict) -> dict[str, UnitCosts]:
        """The unit costs of the invocation that wrote this answer (all invocations' medians if it measured none)."""
        i = self.invocation_of.get(id(record))
        return self._parsed[i] if i is not None else self.unit_costs()


def _unit_costs(measurements: list[dict]) -> dict[str, UnitCosts]:
    out = {}
    for role in ("large", "small"):
        first = measurements[0][role]

        def median(key: str) -> list[float]:
            return [statistics.median(c[role][key][i] for c in measurements) for i in range(len(first[key]))]

        rows = first.get("row_sizes") is not None  # None: a server that cannot score has no row calls
        out[role] = UnitCosts(first["sizes"], median("seconds"), first.get("row_sizes"),
                              median("row_seconds") if rows else None)
    out["draft"] = out["small"]  # the draft model is the pair's small model (same file, same costs)
    return out


def load_results(path: Path) -> Results:
    if not path.is_file():
        raise ConfigError(f"results file not found: {path}")
    records = read_records(path)
    runs = [r for r in records if r.get("type") == "run"]
    if not runs:
        raise ConfigError(f"{path} holds no benchmark run (is it a `relaygen bench run` results file?)")
    samples, costs, invocation_of, current = [], [], {}, None
    for r in records:
        if r.get("type") == "run":
            current = None  # a new invocation: its costs line, if any, follows
        elif r.get("type") == "costs":
            current = len(costs)
            costs.append(r)
        elif r.get("type") == "sample":
            samples.append(r)
            if current is not None:
                invocation_of[id(r)] = current
    if not samples:
        raise ConfigError(f"{path} holds no answers yet")
    return Results(path, runs, costs, samples, invocation_of)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p, z2 = successes / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial (sign) test of a vs b discordant pairs under p = 1/2."""
    n = a + b
    if n == 0:
        return 1.0
    k = min(a, b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _bootstrap(values_by_problem: list[tuple[float, float]], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of sum(a) / sum(b) when problems are resampled."""
    arr = np.asarray(values_by_problem, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(resamples, len(arr)))
    ratios = arr[idx, 0].sum(axis=1) / arr[idx, 1].sum(axis=1)
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


@dataclass
class MethodSummary:
    method: str
    problems: int
    samples: int
    pass1: float
    ci: tuple[float, float]
    mean_s: float
    median_s: float
    tokens: float  # per answer
    large_share: float
    switches: float  # per answer
    length_finishes: int  # answers cut by the budget
    speedup: float | None = None  # sum(large time) / sum(this time), same problems and samples
    speedup_ci: tuple[float, float] | None = None
    per_problem_speedup: tuple[float, float, float] | None = None  # quartiles of large/this per answer
    only_this: int = 0  # problem-samples this method got right and large-only wrong
    only_large: int = 0
    sign_p: float | None = None
    acceptance: float | None = None  # speculative: accepted / drafted tokens
    checked: tuple[int, int, int] | None = None  # checked relay: sentences checked, cut, small tokens thrown away
    handbacks: int = 0  # early hand-backs by the small model
    resumes: tuple[int, int] = (0, 0)  # resumptions after a cut, small-model tokens kept after them
    cue_checks: dict = field(default_factory=dict)  # {cue: (sentences checked after it, cut)}
    predicted_speedup: float | None = None
    memory_bound_speedup: float | None = None  # the same calls priced as on memory-bound hardware
    cheap_small_speedup: float | None = None  # ... with the small model's step at SMALL_STEP of the large's
    anchored_speedup: float | None = None  # unit costs rescaled per model so the one-model baselines fit
    predicted_model_s: float | None = None  # cost model's total model time
    measured_model_s: float | None = None  # time inside the backends (what the cost model models)
    total_s: float = 0.0


def summarise(results: Results) -> list[MethodSummary]:
    by = {m: {(s["id"], s["sample"]): s for s in results.samples if s["method"] == m} for m in results.methods}
    if "large" not in by:
        raise ConfigError(f"{results.path}: no large-only answers, so no reference for speedups")
    costs = results.unit_costs()
    priced: dict[str, Pricing | None] = {}  # the cost model's three pricings of the same calls
    if costs:
        priced = {"predicted_speedup": results.costs_of, "anchored_speedup": anchored_pricing(results),
                  "memory_bound_speedup": lambda r: {role: memory_bound(c) for role, c in results.costs_of(r).items()},
                  "cheap_small_speedup": lambda r: cheap_small_pricing(results.costs_of(r))}
    out = []
    for m, rs in by.items():
        recs = list(rs.values())
        per_problem: dict[str, list[bool]] = {}
        for r in recs:
            per_problem.setdefault(r["id"], []).append(bool(r["correct"]))
        k = max(len(v) for v in per_problem.values())
        pass1 = statistics.fmean(statistics.fmean(v) for v in per_problem.values())
        if k == 1:
            ci = wilson(sum(v[0] for v in per_problem.values()), len(per_problem))
        else:  # resample problems
            means = np.array([statistics.fmean(v) for v in per_problem.values()])
            boots = np.random.default_rng(0).choice(means, size=(2000, len(means))).mean(axis=1)
            ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
        walls = [r["wall_s"] for r in recs]
        tokens = sum(r["tokens"] for r in recs)
        s = MethodSummary(
            method=m, problems=len(per_problem), samples=len(recs), pass1=pass1, ci=ci,
            mean_s=statistics.fmean(walls), median_s=statistics.median(walls), tokens=tokens / len(recs),
            large_share=sum(r["large_tokens"] for r in recs) / tokens if tokens else 0.0,
            switches=sum(r["switches"] for r in recs) / len(recs),
            length_finishes=sum(r["finish"] == "length" for r in recs), total_s=sum(walls))
        checked = sum(r.get("sentences_checked", 0) for r in recs)
        s.handbacks = sum(r.get("handbacks", 0) for r in recs)
        if checked:
            s.checked = (checked, sum(r["sentences_cut"] for r in recs), sum(r["small_tokens_discarded"] for r in recs))
            s.resumes = (sum(r.get("resumes", 0) for r in recs), sum(r.get("resumed_tokens", 0) for r in recs))
            for r in (r for r in recs if "cues_cut" in r):  # records before cues_cut existed have no per-cue cuts
                for cue, fired in r.get("cues", {}).items():
                    had = s.cue_checks.get(cue, (0, 0))
                    s.cue_checks[cue] = (had[0] + fired, had[1] + r["cues_cut"].get(cue, 0))
        drafted = sum(r["models"]["large"]["drafted_tokens"] for r in recs)
        if drafted:
            s.acceptance = sum(r["models"]["large"]["accepted_draft_tokens"] for r in recs) / drafted
        keys = [key for key in rs if key in by["large"]]
        if keys:
            pairs = [(by["large"][key]["wall_s"], rs[key]["wall_s"]) for key in keys]
            s.speedup = sum(a for a, _ in pairs) / sum(b for _, b in pairs)
            s.speedup_ci = _bootstrap(pairs) if len(pairs) > 1 else None
            ratios = sorted(a / b for a, b in pairs)
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            s.per_problem_speedup = (q[0], q[1], q[2])
            s.only_this = sum(rs[key]["correct"] and not by["large"][key]["correct"] for key in keys)
            s.only_large = sum(by["large"][key]["correct"] and not rs[key]["correct"] for key in keys)
            s.sign_p = sign_test(s.only_this, s.only_large)
            large_recs, these = [by["large"][key] for key in keys], [rs[key] for key in keys]
            for name, prices in priced.items():
                if prices:
                    setattr(s, name, _predicted_ratio(large_recs, these, prices))
        if costs:
            s.predicted_model_s = sum(predict_seconds(r, results.costs_of(r)) for r in recs)
            s.measured_model_s = sum(r["models"]["large"]["seconds"] + r["models"]["small"]["seconds"] for r in recs)
        out.append(s)
    return out


# A small model's decode step as a share of the large model's on memory-bound hardware, for the paper-like
# what-if: a step reads the weights, so the share is about the weight bytes' (Qwen3-1.7B beside Qwen3-32B:
# ~1/19), and launch overheads keep it above that. This machine's pair measures ~0.5, where discarded drafts
# cost as much as they save; the paper's pairs sit near 0.1.
SMALL_STEP = 0.1


def cheap_small_pricing(costs: dict[str, UnitCosts]) -> dict[str, UnitCosts]:
    """Memory-bound prices with every small-model call (relaying or drafting) at ``SMALL_STEP`` of the
    large model's: whether a method pays on a pair whose small model is much smaller than this machine's."""
    large = memory_bound(costs["large"])
    return {role: large if role == "large" else large.scaled(SMALL_STEP) for role in costs}


def anchored_pricing(results: Results) -> Pricing | None:
    """Each answer's unit costs, each model's scaled by one factor so that the cost model reproduces the
    time that model spent in its one-model baseline (large-only, small-only) of this very run. The
    quick measurement gives the shape (a batch against a decode step, one model against the other);
    the baselines give the level, which drifts with the load of a shared machine."""
    factor = {}
    for role in ("large", "small"):
        recs = [r for r in results.samples if r["method"] == role]
        if not recs:
            return None
        predicted = sum(results.costs_of(r)[role].predict(r["calls"][role], r["row_calls"].get(role)) for r in recs)
        factor[role] = sum(r["models"][role]["seconds"] for r in recs) / predicted
    factor["draft"] = factor["small"]
    return lambda r: {role: c.scaled(factor[role]) for role, c in results.costs_of(r).items()}


def _predicted_ratio(reference: list[dict], records: list[dict], price: Pricing) -> float:
    return (sum(predict_seconds(r, price(r)) for r in reference)
            / sum(predict_seconds(r, price(r)) for r in records))


def predict_seconds(record: dict, costs: dict[str, UnitCosts]) -> float:
    """The cost model's time for one answer: every evaluation call it made, priced by size."""
    return sum(costs[role].predict(calls, record["row_calls"].get(role)) for role, calls in record["calls"].items())


@dataclass
class AnswerStage:
    traces: int  # large-only traces whose answer the large model finished (its box closed)
    agree: int
    large_correct: int
    small_correct: int
    disagreements: list[dict]
    unfinished: int  # traces left out: the budget ran out before the large model closed the box


def answer_stage(results: Results) -> AnswerStage | None:
    """The answer-stage experiment over large-only traces. A trace whose box the large model never closed
    (the budget ran out in the reasoning or in the box) has no large-model answer to compare with."""
    from ..math_tasks import box_content

    rows = [(s, s["answer_stage"]) for s in results.samples if s["method"] == "large" and s.get("answer_stage")]
    finished = [(s, a) for s, a in rows if box_content(s["text"][s["reasoning_chars"]:])[1]]
    if not finished:
        return None
    return AnswerStage(len(finished), sum(a["agree"] for _, a in finished),
                       sum(a["large_correct"] for _, a in finished), sum(a["small_correct"] for _, a in finished),
                       [{"id": s["id"], "large": a["large"], "small": a["small"], "reference": s["reference"]}
                        for s, a in finished if not a["agree"]], unfinished=len(rows) - len(finished))


def time_breakdown(records: list[dict], price: Pricing) -> dict[str, float]:
    """Where the cost model says the time went, summed over answers: each model's first call (its
    prompt; for a relaying small model also the large model's text so far), its one-token decode
    steps, its speculative verification batches, and its other batched calls (hand-off catch-ups)."""
    out: dict[str, float] = {}
    for r in records:
        costs = price(r)
        for role, calls in r["calls"].items():
            calls = {int(k): int(v) for k, v in calls.items()}
            for size, count in r["row_calls"].get(role, {}).items():  # verification batches
                calls[int(size)] -= int(count)
                out[f"{role} verify"] = out.get(f"{role} verify", 0.0) + int(count) * costs[role].row_call(int(size))
            first = r["first_call"].get(role)
            if first:
                calls[first] -= 1
                out[f"{role} first call"] = out.get(f"{role} first call", 0.0) + costs[role].call(first)
            for size, count in calls.items():
                kind = "decode" if size == 1 else "batched"
                out[f"{role} {kind}"] = out.get(f"{role} {kind}", 0.0) + count * costs[role].call(size)
    return out
