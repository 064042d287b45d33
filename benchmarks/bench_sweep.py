"""Throughput of a sweep: the same trials on Ray with 1 and 2 workers, and as plain processes.

    python benchmarks/bench_sweep.py                          # 8 CartPole seeds of 100k steps (one JSON object)
    python benchmarks/bench_sweep.py --seeds 4 --total-steps 20000

Three ways to run the same trials (``sweep.run_trial``: train the preset to the total, evaluate 20
episodes, write result.json), each into a fresh directory, the wall time of the whole from the call
to the summary:

    ray-1       ``run_sweep(..., workers=1)``: an embedded Ray instance of one CPU, trials one after another
    ray-2       ``run_sweep(..., workers=2)``: one trial per core
    processes-2 a ``multiprocessing`` pool of two spawned processes (the threads set as Ray's workers
                have them), calling ``run_trial`` directly: what the trials cost without Ray

Reported: each wall, the speed-up of ray-2 over ray-1, and Ray's overhead, ray-2 against processes-2
(its start, scheduling and shutdown). The Numba cache is warmed first by one short trial, so that no
mode pays the compilation. Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import load_average, machine_info

from ppo_np.sweep import THREAD_ENV, SweepSpec, claim, plan, run_sweep, run_trial, summarize


def _single_threaded() -> None:
    os.environ.update(THREAD_ENV)  # as Ray's workers have it


def _in_process_pool(spec: SweepSpec, out: Path, workers: int) -> None:
    spec, trials = claim(spec, out)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_single_threaded) as pool:
        pool.starmap(run_trial, [(spec.to_dict(), trial) for trial in trials])
    summarize(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--modes", default="ray-1,ray-2,processes-2")
    args = parser.parse_args()
    info = machine_info(extra=("ray",))
    spec = SweepSpec(env=args.env, seeds=tuple(range(args.seeds)), total_steps=args.total_steps)
    walls = {}
    with tempfile.TemporaryDirectory() as scratch:
        warm_spec, warm_trials = plan(SweepSpec(env=args.env, seeds=(0,), total_steps=2048), Path(scratch) / "warm")
        run_trial(warm_spec.to_dict(), warm_trials[0])  # the Numba cache, loaded or compiled, before any timing
        for mode in args.modes.split(","):
            out = Path(scratch) / mode
            print(f"{mode} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            if mode.startswith("ray-"):
                summary = run_sweep(spec, out, workers=int(mode.split("-")[1]))
            else:
                _in_process_pool(spec, out, int(mode.split("-")[1]))
                summary = summarize(out, write=False)
            walls[mode] = round(time.perf_counter() - start, 2)
            iqm = summary["configurations"][0].get("iqm")
            print(f"{mode}: {walls[mode]} s, final return IQM {iqm}", file=sys.stderr, flush=True)
    result = {"benchmark": "sweep", "env": args.env, "seeds": args.seeds, "total_steps": args.total_steps,
              "wall_s": walls, **info, "load_average_end": load_average()}
    if "ray-1" in walls and "ray-2" in walls:
        result["speedup_ray_2_over_1"] = round(walls["ray-1"] / walls["ray-2"], 3)
    if "ray-2" in walls and "processes-2" in walls:
        result["ray_overhead_s"] = round(walls["ray-2"] - walls["processes-2"], 2)
        result["ray_overhead_share"] = round(walls["ray-2"] / walls["processes-2"] - 1, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
