"""Learning curves and diagnostics of a run directory, drawn from its ``metrics.csv`` to one PNG."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

PANELS = (("episode_return", "episode return"), ("entropy", "entropy"), ("approx_kl_k3", "approx KL (k3)"),
          ("exact_kl", "exact KL"), ("clip_frac", "clip fraction"), ("explained_variance", "explained variance"),
          ("value_loss", "value loss"), ("learning_rate", "learning rate"), ("beta", "KL penalty beta"))
# TRPO has no clip range and no beta: its step size and line-search backtracks take their panels
TRPO_PANELS = tuple(("step_size", "step size ||dtheta||") if key == "clip_frac"
                    else ("line_search_backtracks", "line-search backtracks") if key == "beta" else (key, title)
                    for key, title in PANELS)


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw every panel (``PANELS``, or ``TRPO_PANELS`` for a TRPO run) against environment steps.

    Returns the PNG's path.
    """
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise ValueError(f"{run_dir} has no metrics.csv; is it a ppo-np run directory?")
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics} has no rows yet")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("ppo-np plot needs matplotlib: pip install 'ppo-np[plot]' (or pip install matplotlib)") from None

    def column(name):
        return [float(r[name]) if r.get(name) not in (None, "") else math.nan for r in rows]

    steps = column("step")
    config = run_dir / "config.json"
    algo = json.loads(config.read_text()).get("algo") if config.is_file() else None
    panels = TRPO_PANELS if algo == "trpo" else PANELS
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(4 * cols, 2.8 * math.ceil(len(panels) / cols)))
    for ax, (key, title) in zip(axes.flat, panels):
        points = [(x, y) for x, y in zip(steps, column(key)) if not math.isnan(y)]  # updates with no episode end
        if points:
            ax.plot(*zip(*points), lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(str(run_dir), fontsize=10)
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
