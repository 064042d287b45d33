"""Learning curves and diagnostics of a run directory, drawn from its ``metrics.csv`` to one PNG, and its
gradients (``gradients.csv``, written with ``log_gradients``) to another."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ppo_np.rundir import GRADIENTS_NAME

# the panels of every algorithm, then each algorithm's own
COMMON_PANELS = (("episode_return", "episode return"), ("policy_loss", "policy loss"), ("value_loss", "value loss"),
                 ("entropy", "entropy"), ("exact_kl", "exact KL after the update"),
                 ("explained_variance", "explained variance"), ("grad_norm", "gradient norm (before the clip)"),
                 ("learning_rate", "learning rate"))
ALGO_PANELS = {"clip": (("clip_frac", "clip fraction"),),
               "penalty": (("beta", "KL penalty beta"),),
               "trpo": (("step_size", "step size ||dtheta||"), ("line_search_backtracks", "line-search backtracks"))}
#: the smoothing of every curve: an exponential moving average over about this share of the run's updates
SMOOTHING_SHARE = 0.05


def panels_for(algo: str | None) -> tuple:
    """The panels of a run of ``algo`` (PPO-clip's when the run does not say)."""
    return COMMON_PANELS + ALGO_PANELS.get(algo or "clip", ALGO_PANELS["clip"])


def smoothed(values: list[float], share: float = SMOOTHING_SHARE) -> list[float]:
    """An exponential moving average with a span of ``share`` of the points (at least 1), skipping NaNs
    (a NaN stays NaN), started at the first value so the curve does not rise from 0."""
    span = max(1.0, share * len(values))
    alpha = 2.0 / (span + 1.0)
    out, average = [], math.nan
    for v in values:
        if not math.isnan(v):
            average = v if math.isnan(average) else average + alpha * (v - average)
        out.append(average if not math.isnan(v) else math.nan)
    return out


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw the panels of the run's algorithm (``panels_for``) against environment steps: each metric
    faint as logged and smoothed over it (``smoothed``). Returns the PNG's path."""
    rows = _rows(run_dir / "metrics.csv", run_dir)
    plt = _pyplot()
    column = _columns(rows)
    steps = column("step")
    config = run_dir / "config.json"
    algo = json.loads(config.read_text()).get("algo") if config.is_file() else None
    panels = panels_for(algo)
    fig, axes = _grid(plt, len(panels))
    for ax, (key, title) in zip(axes.flat, panels):
        values = column(key)
        _line(ax, steps, values, alpha=0.3)
        _line(ax, steps, smoothed(values), color="C0")
        _label(ax, title)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    return _save(plt, fig, run_dir, out or run_dir / "curves.png")


def plot_gradients(run_dir: Path, out: Path | None = None) -> Path:
    """Draw gradients.csv: each parameter's gradient norm before the clip (actor, critic; log scale), the
    clip's scale per network, and the surrogate's outside share, against environment steps."""
    rows = _rows(run_dir / GRADIENTS_NAME, run_dir)
    plt = _pyplot()
    column = _columns(rows)
    steps = column("step")
    parameters = [name for name in rows[0] if "/" in name]
    fig, axes = _grid(plt, 4, cols=2)
    for ax, network in zip(axes.flat, ("actor", "critic")):
        for name in parameters:
            if name.startswith(network + "/"):
                _line(ax, steps, column(name), label=name.split("/", 1)[1])
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
        _label(ax, f"{network} gradient norm per parameter (before the clip)")
    ax = axes.flat[2]
    for key in ("clip_scale_actor", "clip_scale_critic"):
        _line(ax, steps, column(key), label=key.replace("clip_scale_", ""))
    ax.legend(fontsize=7)
    _label(ax, "clip scale min(1, max_norm / ||g||)")
    _line(axes.flat[3], steps, column("outside_share"))
    _label(axes.flat[3], "surrogate weight outside the clip range")
    return _save(plt, fig, run_dir, out or run_dir / "gradients.png")


def plot_sweep(curves: dict[str, list[Path]], out: Path, title: str, points: int = 100) -> Path:
    """Each configuration's training return against steps (``curves``: label -> its runs' directories): the
    IQM over runs with its 95% bootstrap band (``stats.curve_band``) at up to ``points`` steps. A run's
    ``episode_return`` carries its last value over updates in which no episode ended and is smoothed
    (``smoothed``); steps before every run has one, or past the shortest run, are left out."""
    import numpy as np

    from ppo_np import stats

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (label, run_dirs) in enumerate(curves.items()):
        if not run_dirs:
            continue
        runs = [_columns(_rows(d / "metrics.csv", d)) for d in run_dirs]
        length = min(len(run("step")) for run in runs)
        steps = np.array(runs[0]("step")[:length])
        returns = np.array([smoothed(_carried(run("episode_return")[:length])) for run in runs])
        shown = np.flatnonzero(np.isfinite(returns).all(axis=0))
        shown = shown[np.unique(np.linspace(0, len(shown) - 1, min(points, len(shown))).astype(int))] if len(shown) else shown
        if not len(shown):
            continue
        value, low, high = stats.curve_band(returns[:, shown])
        ax.plot(steps[shown], value, color=f"C{color}", lw=1.4, label=f"{label} ({len(run_dirs)} seeds)")
        if len(run_dirs) > 1:
            ax.fill_between(steps[shown], low, high, color=f"C{color}", alpha=0.2, lw=0)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training episode has ended in every run yet", ha="center", transform=ax.transAxes)
    _label(ax, f"{title}: training return, IQM over seeds and its 95% bootstrap band")
    return _save(plt, fig, out.parent, out)


def _carried(values: list[float]) -> list[float]:
    """NaNs (updates with no episode end) replaced by the last value before them."""
    out, last = [], math.nan
    for v in values:
        last = v if not math.isnan(v) else last
        out.append(last)
    return out


def _rows(path: Path, run_dir: Path) -> list[dict]:
    """The rows of a run's CSV; a ValueError naming the file when it is missing, unreadable, empty or not
    one that ppo-np wrote (a non-numeric ``update`` or ``step``)."""
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {path.name}; is it a ppo-np run directory"
                         + ("" if path.name == "metrics.csv" else " trained with log_gradients") + "?")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    for number, row in enumerate(rows, start=2):
        try:
            float(row.get("update") or "x"), float(row.get("step") or "x")
        except (TypeError, ValueError):
            raise ValueError(f"{path} line {number} is not a row ppo-np wrote (its update and step must be numbers): "
                             f"{', '.join(f'{k}={v}' for k, v in list(row.items())[:3])}") from None
    return rows


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("ppo-np plot needs matplotlib: pip install 'ppo-np[plot]' (or pip install matplotlib)") from None
    return plt


def _columns(rows: list[dict]):
    def column(name):
        return [_number(r.get(name)) for r in rows]
    return column


def _number(text) -> float:
    """A cell as a float: NaN for an empty or unreadable one (a value that does not apply, or a damaged cell)."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _grid(plt, n: int, cols: int = 3):
    rows = math.ceil(n / cols)
    return plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)


def _line(ax, steps, values, label=None, **style):
    points = [(x, y) for x, y in zip(steps, values) if not math.isnan(y)]  # updates with no episode end
    if points:
        ax.plot(*zip(*points), lw=1.2, label=label, **style)


def _label(ax, title: str):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("environment steps", fontsize=8)
    ax.grid(alpha=0.3)


def _save(plt, fig, run_dir: Path, out: Path) -> Path:
    fig.suptitle(str(run_dir), fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:  # a read-only run directory, an --out in a folder that does not exist
        raise ValueError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out
