"""The calibration figure: mean margin after each cue (with SEM error bars) against the overall mean."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .table import CueStats


def plot_cue_table(rows: list[CueStats], overall_mean: float, path: Path, title: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the calibration plot needs matplotlib: pip install 'relaygen-integrations[calibrate]'") from None
    shown = sorted((r for r in rows if r.tokens), key=lambda r: r.mean)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(shown) + 1.2)))
    ys = range(len(shown))
    colours = ["tab:orange" if r.selected else "tab:gray" for r in shown]
    errs = [0 if r.sem != r.sem else r.sem for r in shown]  # NaN (one token) -> no bar
    ax.barh(list(ys), [r.mean for r in shown], xerr=errs, color=colours, alpha=0.85, error_kw={"lw": 0.8})
    ax.axvline(overall_mean, color="black", ls="--", lw=1, label=f"overall mean {overall_mean:.3f}")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([f"{r.cue!r} (n={r.occurrences})" for r in shown], fontsize=7)
    ax.set_xlabel("mean probability margin of the small model after the cue (± SEM)")
    ax.set_title(title, fontsize=9)
    lo = min(r.mean - (r.sem if r.sem == r.sem else 0) for r in shown)
    ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:orange", label="selected"), Patch(color="tab:gray", label="not selected"),
                       ax.get_lines()[0]], fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
