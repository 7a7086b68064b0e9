"""The benchmark report: Markdown tables from one or more results files (its plots: figures.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import ConfigError
from .figures import (accuracy_vs_small_share_figure, accuracy_vs_speedup_figure, run_labels, save,
                      token_strip)
from .summary import SMALL_STEP, Results, answer_stage, load_results, summarise, time_breakdown



def _command(results: Results) -> str:
    """One command that reproduces the whole file: a resumed run may have added problems or methods."""
    s = results.settings
    limits = [r["settings"]["limit"] for r in results.runs]
    parts = ["relaygen bench run", f"--data {s['dataset']}", f"--methods {','.join(results.methods)}"]
    if s["start"]:
        parts.append(f"--start {s['start']}")
    if None not in limits:
        parts.append(f"--limit {max(limits)}")
    parts.append(f"--max-tokens {s['max_tokens']}")
    if s["temperature"]:
        parts += [f"--temperature {s['temperature']}", f"--samples {s['samples']}", f"--seed {s['seed']}"]
    for key, flag in (("pair", "--pair"), ("large", "--large"), ("small", "--small")):
        if s.get(key):
            parts.append(f"{flag} {s[key]}")
    opts = s.get("backend_options", {})
    if opts.get("n_threads"):
        parts.append(f"--threads {opts['n_threads']}")
    if opts.get("n_gpu_layers"):
        parts.append(f"--gpu-layers {opts['n_gpu_layers']}")
    parts.append(f"--out {results.path.as_posix()}")
    return " ".join(parts)


def _clip(text: str, n: int = 40) -> str:
    text = " ".join(text.split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= n else text[: n - 1] + "…"


def cue_acceptance_table(checks: list, most: int = 12) -> list[str]:
    """Per cue, how many of the sentences after it each checked method's check accepted whole (the cues fired
    most often first)."""
    rows = [r for r in checks if r.cue_checks]
    if not rows:
        return []
    fired: dict[str, int] = {}
    for r in rows:
        for cue, (n, _) in r.cue_checks.items():
            fired[cue] = fired.get(cue, 0) + n
    cues = sorted(fired, key=lambda c: -fired[c])[:most]
    md = ["", f"Per-cue acceptance: sentences after the cue that the check accepted whole / checked ({len(cues)} cues "
          "fired most often):", "", "| cue | " + " | ".join(r.method for r in rows) + " |",
          "|---|" + "---|" * len(rows)]
    for cue in cues:
        cells = []
        for r in rows:
            n, cut = r.cue_checks.get(cue, (0, 0))
            cells.append(f"{n - cut}/{n} ({_pct((n - cut) / n)}%)" if n else "-")
        md.append(f"| `{cue}` | " + " | ".join(cells) + " |")
    return md


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def section(results: Results, plots_dir: Path | None, label: str, strip_name: str) -> list[str]:
    """One results file's part of the report; `label` (its data set, run_labels) and `strip_name` (its token strip's
    file) tell it apart from another run of the same data set in the same report."""
    s = results.settings
    rows = summarise(results)
    machine = results.runs[-1]["machine"]
    sampling = "greedy" if not s["temperature"] else f"temperature {s['temperature']}, {s['samples']} samples per problem"
    n = max(r.problems for r in rows)
    md = [f"## {label}: {n} problems, {sampling}, at most {s['max_tokens']} tokens per answer", "",
          f"Command (resumable): `{_command(results)}`", "",
          f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}, Python {machine['python']}, "
          f"llama-cpp-python {machine.get('llama_cpp_python', '-')}. Pair: {s.get('pair') or 'default'}, "
          f"calibrated profile `{results.runs[0]['profile']}`, reasoning ends at `{results.runs[0]['reasoning_end']}`. "
          f"{len(results.runs)} invocation(s), {len(results.samples)} answers.", "",
          "| method | pass@1 % [95% CI] | right only here / only large | sign test p | speedup vs large (total time) [95% CI] "
          "| per-answer speedup: median [IQR] | mean / median s | tokens/answer | large-model share | switches/answer "
          "| cut by budget |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paired = "-" if r.method == "large" else f"{r.only_this} / {r.only_large}"
        p = "-" if r.method == "large" or r.sign_p is None else f"{r.sign_p:.2g}"
        ci = "" if r.speedup_ci is None or r.method == "large" else f" [{r.speedup_ci[0]:.2f}-{r.speedup_ci[1]:.2f}]"
        q = r.per_problem_speedup
        per = "-" if q is None or r.method == "large" else f"{q[1]:.2f}x [{q[0]:.2f}-{q[2]:.2f}]"
        md.append(f"| {r.method} | {_pct(r.pass1)} [{_pct(r.ci[0])}-{_pct(r.ci[1])}] | {paired} | {p} | "
                  f"{_fmt_x(r.speedup)}{ci} | {per} | {r.mean_s:.1f} / {r.median_s:.1f} | {r.tokens:.0f} | "
                  f"{_pct(r.large_share)}% | {r.switches:.2f} | {r.length_finishes} |")
    spec = [r for r in rows if r.acceptance is not None]
    if spec:
        md += ["", "Speculative decoding: " + "; ".join(
            f"{r.method} accepted {_pct(r.acceptance)}% of drafted tokens" for r in spec) + "."]
    checks = [r for r in rows if r.checked is not None]
    if checks:
        md += ["", "Checked relay: " + "; ".join(
            f"{r.method} checked {r.checked[0]} sentences, cut {r.checked[1]} ({_pct(r.checked[1] / r.checked[0])}%), "
            f"threw away {r.checked[2]} small-model tokens" + (f", the small model handed back early {r.handbacks} times"
                                                               if r.handbacks else "")
            + (f", the small model resumed {r.resumes[0]} times ({r.resumes[0] / r.samples:.2f} per answer) and kept "
               f"{r.resumes[1]} tokens written after resuming" if r.resumes[0] else "") for r in checks) + "."]
        md += cue_acceptance_table(checks)
    stage = answer_stage(results)
    if stage:
        md += ["", "### Answer stage: small vs large model on the same reasoning",
               f"On {stage.traces} large-model traces whose answer the large model finished ({stage.unfinished} left "
               "out: the budget ran out first), the small model, continuing the same "
               f"reasoning, put an equivalent answer in the box {stage.agree} times ({_pct(stage.agree / stage.traces)}%; "
               f"the paper: 99.86% with Qwen3-1.7B vs Qwen3-32B). Correct: large {stage.large_correct}, small "
               f"{stage.small_correct}."]
        if stage.disagreements:
            shown = stage.disagreements[:8]
            md += ["", "| problem | large | small | reference |", "|---|---|---|---|"]
            md += [f"| {d['id']} | `{_clip(d['large'])}` | `{_clip(d['small'])}` | `{_clip(d['reference'])}` |"
                   for d in shown]
            if len(stage.disagreements) > len(shown):
                md.append(f"\n({len(stage.disagreements) - len(shown)} more in the results file.)")
    costs = results.unit_costs()
    if costs:
        md += ["", "### Cost model: predicted vs measured",
               f"Unit costs measured at the start of each invocation ({len(results.costs)}x; medians shown; each answer "
               "is priced with its own invocation's costs, since a resumed run may land on another host or load), "
               "one call = evaluate n tokens, read the logits, choose a token:", "",
               "| model | decode (n=1) ms | n=5 ms | n=16 ms | n=64 ms | n=256 ms | prefill ms/token (n=256) "
               "| verify 4 drafted tokens ms | verify 8 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for role in ("large", "small"):
            c = costs[role]
            md.append(f"| {role} | {1000 * c.decode:.1f} | {1000 * c.call(5):.1f} | {1000 * c.call(16):.1f} | "
                      f"{1000 * c.call(64):.1f} | {1000 * c.call(256):.1f} | {1000 * c.prefill_per_token:.1f} | "
                      f"{1000 * c.row_call(4):.1f} | {1000 * c.row_call(8):.1f} |")
        md += ["", "Each answer's evaluation calls (sizes recorded per model) priced with these costs predict its time; "
               "the predicted speedup is the ratio of the predicted totals, over the same answers as the measured one.",
               "The unit costs' level drifts with the load of a shared machine between the measurement and the answers; "
               "the 'anchored' column rescales each model's costs by one factor so that its one-model baseline "
               "(large-only, small-only) is reproduced, which tests the cost model's shape (batches against decode "
               "steps, one model against the other) apart from that drift. "
               "The last column prices the same calls as on memory-bound hardware (a call of up to 64 tokens costs one "
               "decode step, this machine's decode costs): what the same token split would give where hand-offs "
               "and verification batches are nearly free; the one before it prices them so with the small "
               f"model's step at {SMALL_STEP:g} of the large model's, as for a pair like Qwen3-1.7B beside "
               "Qwen3-32B (this machine's pair measures about 0.5).",
               "", "| method | predicted speedup | measured speedup | predicted / measured | predicted model time (s) "
               "| measured model time (s) | measured wall time (s) | anchored prediction | anchored / measured "
               f"| memory-bound, small step {SMALL_STEP:g} | memory-bound what-if |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            agree = "-" if r.predicted_speedup is None or not r.speedup else f"{r.predicted_speedup / r.speedup:.2f}"
            md.append(f"| {r.method} | {_fmt_x(r.predicted_speedup)} | {_fmt_x(r.speedup)} | {agree} | "
                      f"{r.predicted_model_s:.0f} | {r.measured_model_s:.0f} | {r.total_s:.0f} | "
                      f"{_fmt_x(r.anchored_speedup)} | {_ratio(r.anchored_speedup, r.speedup)} | "
                      f"{_fmt_x(r.cheap_small_speedup)} | {_fmt_x(r.memory_bound_speedup)} |")
        relay_like = [m for m in results.methods if m != "large" and m != "small"]
        if relay_like:
            shown = ["large", *relay_like]
            parts = {m: time_breakdown([x for x in results.samples if x["method"] == m], results.costs_of) for m in shown}
            cats = [c for c in _CATEGORIES if any(p.get(c) for p in parts.values())]
            md += ["", "Where the time went (cost model, seconds over all answers; a model's first call is its prompt, "
                   "for the relaying small model together with the large model's text so far):", "",
                   "| method | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
            md += [f"| {m} | " + " | ".join(f"{parts[m].get(c, 0):.1f}" for c in cats) + " |" for m in shown]
    if plots_dir is not None:
        strip = token_strip(results, plots_dir / strip_name)
        if strip:
            path, pick = strip
            md += ["", f"![who wrote which tokens]({path.name})", "",
                   f"Who wrote which tokens in one answer ({pick['id']}, {pick['method']}: the relay answer with the "
                   "most switches among the first 20 problems); blue: large model, red: small model. The text, "
                   "with the small model's spans in «guillemets»:", "", "```text", marked_text(pick), "```"]
    return md


_CATEGORIES = [f"{role} {kind}" for role in ("large", "small", "draft")
               for kind in ("first call", "decode", "verify", "batched")]


def marked_text(record: dict) -> str:
    """The answer's text with each span the small model wrote inside «...»."""
    out, pos = [], 0
    for model, _stage, _tokens, chars in record["segments"]:
        span = record["text"][pos: pos + chars]
        pos += chars
        out.append(f"«{span}»" if model == "small" else span)
    return "".join(out) + record["text"][pos:]


def headline(all_results: list[Results]) -> list[str]:
    """One row per method, pass@1 and speedup per data set."""
    names = run_labels(all_results)
    summaries = [{s.method: s for s in summarise(r)} for r in all_results]
    methods = list(dict.fromkeys(m for s in summaries for m in s))
    md = ["| method | " + " | ".join(f"{n} pass@1 % | {n} speedup" for n in names) + " |",
          "|---|" + "---|---|" * len(names)]
    for m in methods:
        cells = []
        for s in summaries:
            r = s.get(m)
            cells += ["-", "-"] if r is None else [f"{_pct(r.pass1)} (n={r.problems})", _fmt_x(r.speedup)]
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    return md


def write_report(paths: list[Path], out: Path, title: str | None = None, plots: bool = True) -> Path:
    """Markdown report (and PNG plots beside it) for results files from `relaygen bench run`."""
    if not paths:
        raise ConfigError("no results files given")
    all_results = [load_results(p) for p in paths]
    out.parent.mkdir(parents=True, exist_ok=True)
    title_arg = f" --title {shlex.quote(title)}" if title else ""  # the recorded command reproduces the file
    md = [f"# {title or 'RelayGen benchmark'}", "", f"Generated by `relaygen bench report {' '.join(p.as_posix() for p in paths)} "
          f"--out {out.as_posix()}{title_arg}`. Speedups are ratios of total wall time against the large model alone on the same "
          "problems, methods interleaved per problem; CIs: Wilson (accuracy), problem bootstrap (speedup).", "",
          "## Headline", ""] + headline(all_results)
    if plots:
        save(accuracy_vs_speedup_figure(all_results), out.parent / "accuracy_vs_speedup.png")
        md += ["", "![accuracy vs speedup](accuracy_vs_speedup.png)"]
        if any({"check", "exact"} & set(m.split("+")[1:]) or "+tau=" in m for r in all_results for m in r.methods):
            save(accuracy_vs_small_share_figure(all_results), out.parent / "accuracy_vs_small_share.png")
            md += ["", "![accuracy vs small-model share](accuracy_vs_small_share.png)"]
    stems = [r.path.stem for r in all_results]
    for res, label in zip(all_results, run_labels(all_results)):
        # two runs of one data set (bench_check/gsm8k.jsonl, bench_resume/gsm8k.jsonl) each get their own strip
        name = res.path.stem if stems.count(res.path.stem) == 1 else f"{res.path.parent.name}_{res.path.stem}"
        md += [""] + section(res, out.parent if plots else None, label, f"{name}_tokens.png")
    out.write_text("\n".join(md) + "\n", encoding="utf-8")
    return out


def print_costs(engine, answer_tokens: int, segment_tokens: float) -> int:
    """``relaygen bench costs``: measure this machine's unit costs for the engine's two models, print
    what relaying would gain at various large-model shares."""
    from rich.console import Console
    from rich.table import Table

    from ..math_tasks import data_file, load_problems
    from .costs import measure, relay_what_if

    texts = [p["problem"] for p in load_problems(data_file("gsm8k"), 40)]
    tokens = engine.large.tokenize("\n\n".join(texts).encode("utf-8"))
    console = Console()
    console.print("measuring both models' cost per evaluation call (a few minutes on a 2-core CPU) ...")
    costs = measure({"large": engine.large, "small": engine.small}, tokens)
    t = Table(title="cost of one evaluation call (ms)")
    for col in ("model", "n=1 (decode)", "n=5", "n=16", "n=64", "n=256"):
        t.add_column(col)
    for role, c in costs.items():
        t.add_row(role, *(f"{1000 * c.call(n):.1f}" for n in (1, 5, 16, 64, 256)))
    console.print(t)
    w = Table(title=f"predicted relay speedup ({answer_tokens}-token answers, {segment_tokens:g}-token small sentences)")
    w.add_column("large-model share")
    w.add_column("predicted speedup")
    for share in (0.9, 0.8, 0.7, 0.6, 0.5):
        w.add_row(f"{share:.0%}", f"{relay_what_if(costs['large'], costs['small'], share, answer_tokens, segment_tokens):.2f}x")
    console.print(w)
    console.print(f"decode cost ratio small/large: {costs['small'].decode / costs['large'].decode:.2f} "
                  "(relaying can only pay when this is well below 1 and hand-offs are cheap)")
    for b in (engine.large, engine.small):
        b.close()
    return 0


