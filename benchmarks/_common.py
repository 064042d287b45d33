"""Helpers shared by the benchmark scripts: machine and version info, load, summary statistics.

``machine_info`` extends ``bench_kernels.machine_info`` (CPU, OS, Python, numpy/numba/llvmlite, Numba
settings) with the libraries a training benchmark also depends on, and the load average, since
the numbers of a busy machine are only comparable with that beside them.
"""
from __future__ import annotations

import importlib
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script or imported: find bench_kernels

from bench_kernels import machine_info as _kernel_machine_info  # noqa: E402

#: scipy: with it, ``FusedLoss`` runs the networks' passes compiled (``fused.numba_can_call_blas``)
TRAIN_LIBRARIES = ("gymnasium", "threadpoolctl", "scipy")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(extra: tuple[str, ...] = ()) -> dict:
    """``bench_kernels.machine_info()`` plus the versions of gymnasium, threadpoolctl and ``extra``
    (a module that is not installed is reported as None), the thread settings and the load now."""
    info = _kernel_machine_info()
    for name in TRAIN_LIBRARIES + tuple(extra):
        try:
            info["versions"][name] = importlib.import_module(name).__version__
        except ImportError:
            info["versions"][name] = None
    info["machine"]["threads_env"] = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                                       "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    info["machine"]["load_average_start"] = load_average()
    info["machine"]["git_uncommitted"] = uncommitted_files()
    return info


def uncommitted_files() -> list[str] | None:
    """Files of the package that differ from the commit (the run measured the working tree), or None."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", ":/ppo_np", ":/setup.cfg"], capture_output=True,
                             text=True, cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line[3:] for line in out.stdout.splitlines()] if out.returncode == 0 else None


def summary(values: list[float], digits: int = 4) -> dict:
    """mean, std (sample, ddof=1; 0 for one value), min, max and median of ``values``."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    out = {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values),
           "median": statistics.median(values)}
    return {k: (round(v, digits) if math.isfinite(v) else v) for k, v in out.items()}


def parse_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``."""
    return [s.strip() for s in text.split(",") if s.strip()]


def add_output_options(parser) -> None:
    """The options every benchmark shares: --quiet and --from-json."""
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--from-json", metavar="FILE",
                        help="print the markdown of a saved --json run instead of running")


def print_saved_run(path: str, markdown) -> int:
    """Print ``markdown(the JSON saved at path)``; the exit status of --from-json."""
    import json

    with open(path) as f:
        print(markdown(json.load(f)))
    return 0


def learning_footer(report: dict, episodes: int, threads: str = "") -> str:
    """The line under a table of final returns: how they were measured, the machine, versions and load."""
    m, v = report["machine"], report["versions"]
    return (f"Final return: {episodes} deterministic evaluation episodes per seed; IQM and its percentile "
            f"bootstrap interval over seeds; std over seeds. {report['workers']} trials at a time. "
            f"{m['cpu']} ({m['logical_cpus']} logical CPUs{threads}), Python {m['python']}, "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val)
            + f"; load average {m['load_average_start']} at start, {report['load_average_end']} at end.")


def add_learning_options(parser, seeds: int, envs: tuple[str, ...], per: str, out: str) -> None:
    """The options of a benchmark of final returns: --json, --seeds, --envs, --total-steps, --workers, --out."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a markdown table")
    parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds 0 .. K-1 per environment and {per}")
    parser.add_argument("--envs", default=",".join(envs), help="comma-separated gymnasium ids")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="steps per run for every env (default: each env's budget, config.DEFAULT_TOTAL_STEPS)")
    parser.add_argument("--workers", type=int, default=None, help="trials at a time (default: one per CPU)")
    parser.add_argument("--out", help=f"keep every trial here, {out} (a re-run resumes them)")


def learning_envs(parser, args) -> list[str]:
    """``--envs`` as a list, once --seeds and every env's step budget are known to be usable."""
    from ppo_np.config import DEFAULT_TOTAL_STEPS

    envs = parse_list(args.envs)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    missing = [e for e in envs if args.total_steps is None and e not in DEFAULT_TOTAL_STEPS]
    if missing:
        parser.error(f"no default step budget for {', '.join(missing)}; pass --total-steps")
    return envs


def estimate_text(estimate: dict, digits: int = 1) -> str:
    """``{"value", "ci_low", "ci_high"}`` as "value [low, high]", or the value alone when one run gave no interval."""
    if estimate["ci_low"] is None:
        return f"{estimate['value']:.{digits}f}"
    return f"{estimate['value']:.{digits}f} [{estimate['ci_low']:.{digits}f}, {estimate['ci_high']:.{digits}f}]"
