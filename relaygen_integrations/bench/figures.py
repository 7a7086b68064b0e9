"""The benchmark report's plots: accuracy against speed and against the small model's share, and one
answer's tokens coloured by the model that wrote them."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from .summary import Results, summarise

COLOURS = {"large": "#1f77b4", "small": "#d62728", "forced": "#7f7f7f"}
NAMES = {"gsm8k": "GSM8K", "math500": "MATH-500", "aime2024": "AIME 2024", "aime2025": "AIME 2025", "amc23": "AMC 2023"}


def dataset_name(results: Results) -> str:
    d = results.settings["dataset"]
    return NAMES.get(d, Path(d).stem)


def run_labels(all_results: list[Results]) -> list[str]:
    """Each results file's data set, with its folder where two files hold the same data set (a report over
    an earlier run and a later one)."""
    names = [dataset_name(r) for r in all_results]
    return [f"{n} ({r.path.parent.name})" if names.count(n) > 1 else n for n, r in zip(names, all_results)]


def token_strip(results: Results, path: Path) -> tuple[Path, dict] | None:
    """A strip of the tokens of one relay answer, coloured by the model that wrote them."""
    relay = [s for s in results.samples if s["method"].startswith("relay") and s["switches"]]
    if not relay:
        return None
    first = sorted({s["index"] for s in results.samples})[:20]
    pick = max((s for s in relay if s["index"] in first), key=lambda s: (s["switches"], -s["index"]), default=None)
    if pick is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 100  # tokens per row
    total = sum(seg[2] for seg in pick["segments"])
    rows = max(1, -(-total // width))
    fig, ax = plt.subplots(figsize=(10, 0.35 * rows + 1.2))
    pos = 0
    for model, _stage, tokens, _chars in pick["segments"]:
        left = tokens
        while left > 0:
            row, col = divmod(pos, width)
            take = min(left, width - col)
            ax.barh(-row, take, left=col, height=0.8, color=COLOURS.get(model, "#7f7f7f"))
            pos, left = pos + take, left - take
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=COLOURS["large"], label="large model"), Patch(color=COLOURS["small"], label="small model"),
                       Patch(color=COLOURS["forced"], label="inserted marker")], fontsize=7, loc="lower right",
              bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False)
    ax.set_xlim(0, width)
    ax.set_ylim(-rows + 0.4, 0.6)
    ax.set_yticks([-i for i in range(rows)], [f"{i * width}" for i in range(rows)], fontsize=7)
    ax.set_xlabel("token within row (rows of 100 tokens)")
    share = pick["large_tokens"] / max(1, pick["tokens"])
    ax.set_title(f"{dataset_name(results)} {pick['id']}, {pick['method']}: {pick['tokens']} tokens, "
                 f"{share:.0%} by the large model, {pick['switches']} switches", fontsize=9, loc="left")
    save(fig, path)
    return path, pick


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight" keeps a legend placed outside the axes
    plt.close(fig)


def legend_beside(ax) -> None:
    """A legend right of the axes: with a dozen method x data-set entries, one inside hides the points."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)


def accuracy_vs_speedup_figure(all_results: list[Results]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    markers = "osD^v"
    cmap = plt.get_cmap("tab20")
    methods = list(dict.fromkeys(m for res in all_results for m in res.methods))
    labels = run_labels(all_results)
    for d, res in enumerate(all_results):
        for r in summarise(res):
            if r.speedup is None:
                continue
            colour = cmap(methods.index(r.method) % 20)
            xerr = None if r.speedup_ci is None or r.method == "large" else [[r.speedup - r.speedup_ci[0]], [r.speedup_ci[1] - r.speedup]]
            ax.errorbar(r.speedup, 100 * r.pass1, xerr=xerr, yerr=[[100 * (r.pass1 - r.ci[0])], [100 * (r.ci[1] - r.pass1)]],
                        fmt=markers[d % len(markers)], color=colour, capsize=3,
                        label=f"{short_method(r.method)} ({labels[d]})")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("speedup over the large model alone (ratio of total times)")
    ax.set_ylabel("pass@1 (%), 95% CI")
    legend_beside(ax)
    ax.set_title("Accuracy vs speed (this machine)")
    return fig


def on_common_problems(res: Results, within: set | None = None):
    """Every method's summary on the problems all of them answered (a sweep may cover fewer than the rest),
    and only those ``within`` where given (the problems that every run of this data set answered)."""
    common = _answered_by_every_method(res)
    if within is not None:
        common &= within
    return summarise(replace(res, samples=[s for s in res.samples if s["id"] in common]))


def _answered_by_every_method(res: Results) -> set:
    return set.intersection(*({s["id"] for s in res.samples if s["method"] == m} for m in res.methods))


def short_method(name: str) -> str:
    """A method as a plot's legend shows it: a profile given as a file by its name alone."""
    return re.sub(r"relay:(?:[^+]*/)?([^+/]+?)(?:\.json)?(?=\+|$)", r"relay:\1", name)


def accuracy_vs_small_share_figure(all_results: list[Results]):
    """The checked relay's frontier: pass@1 against the small model's share of the tokens, per method, on the
    problems every method of every run of the data set answered (a sweep may cover fewer); the calibrated cues' thresholds
    (``relay+tau=P``, ``relay+check``) joined in order of share, ``large`` at share 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    cmap = plt.get_cmap("tab20")
    methods = list(dict.fromkeys(m for res in all_results for m in res.methods))  # one colour per method
    labels = run_labels(all_results)
    common: dict[str, set] = {}  # runs of one data set (an earlier run and a later one) on the same problems
    for res in all_results:
        ids = _answered_by_every_method(res)
        name = dataset_name(res)
        common[name] = common[name] & ids if name in common else ids
    for d, res in enumerate(all_results):
        rows = on_common_problems(res, common[dataset_name(res)])
        for r in rows:
            share = 100 * (1 - r.large_share)
            ax.errorbar(share, 100 * r.pass1, yerr=[[100 * (r.pass1 - r.ci[0])], [100 * (r.ci[1] - r.pass1)]],
                        fmt="osD^v"[d % 5], color=cmap(methods.index(r.method) % 20), capsize=3,
                        label=f"{short_method(r.method)} ({labels[d]}, n={r.problems})")
        sweep = sorted((1 - r.large_share, r.pass1) for r in rows
                       if (r.method.startswith("relay+tau=") and r.method.count("+") == 1) or r.method == "relay+check")
        if len(sweep) > 1:
            ax.plot([100 * x for x, _ in sweep], [100 * y for _, y in sweep], color="grey", lw=0.8)
    ax.set_xlabel("small model's share of the tokens (%)")
    ax.set_ylabel("pass@1 (%), 95% CI")
    legend_beside(ax)
    ax.set_title("Accuracy vs the small model's share (checked relay frontier)")
    return fig
