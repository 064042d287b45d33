"""Cold start: a fresh process's first training run, with Numba's cache empty and with it warm.

Each case runs in its own ``python`` process: import ppo-np (numba, gymnasium), build the cartpole-zoo agent
of ``bench_train.py`` (8 envs x 32 steps, minibatch 256, 20 epochs) and train it for its 100k steps. The
process's wall time and CPU time (user + sys, from the parent's ``getrusage`` of its children) are
measured from outside, and the child reports how long its imports took and how long construction plus
``learn`` took. Cases, per ``--env-backend``:

  cold   ``NUMBA_CACHE_DIR`` a new empty directory: every kernel is compiled in the run;
  warm   the same directory again: every kernel is loaded from the cache the cold run wrote.

The gap between the two is the one-off cost of the first run after an install (``ppo-np train`` says
"compiling the numba kernels, once" then). One thread (``NUMBA_NUM_THREADS`` and the BLAS pools at 1).
Prints one JSON object. Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info

BENCHMARKS = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, sys.argv[2])
import bench_train
from ppo_np import PPO
imported = time.perf_counter()
spec = bench_train.CONFIGS["cartpole-zoo"]
agent = PPO(spec["env_id"], bench_train.ppo_np_config(spec, 0, {"vectorization": "auto", "env_backend": sys.argv[1]}))
agent.learn(spec["total_steps"])
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "train_s": done - imported,
                  "mean_recent_return": agent.mean_recent_return(100)}))
"""

ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_case(backend: str, cache_dir: str) -> dict:
    """One fresh process training cartpole-zoo on ``backend`` with Numba's cache in ``cache_dir``."""
    env = {**os.environ, **ONE_THREAD, "NUMBA_CACHE_DIR": cache_dir}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, backend, str(BENCHMARKS)], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the {backend} run failed:\n{done.stderr[-2000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"process_wall_s": round(wall, 3), "process_cpu_s": round(cpu, 3),
            "import_s": round(child["import_s"], 3), "train_s": round(child["train_s"], 3),
            "mean_recent_return": round(child["mean_recent_return"], 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-backend", default="gymnasium,numba",
                        help="comma-separated, of: gymnasium, numba (default: both)")
    args = parser.parse_args(argv)
    backends = [b for b in args.env_backend.split(",") if b]
    unknown = sorted(set(backends) - {"gymnasium", "numba"})
    if unknown or not backends:
        parser.error(f"--env-backend takes gymnasium and/or numba, got {args.env_backend!r}")
    report = {"config": "cartpole-zoo", "steps": 100_000, "machine": machine_info(), "runs": {}}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
            cold = run_case(backend, cache_dir)
            warm = run_case(backend, cache_dir)
        report["runs"][backend] = {"cold": cold, "warm": warm,
                                   "compile_s": round(cold["process_wall_s"] - warm["process_wall_s"], 3)}
        print(f"{backend}: cold {cold['process_wall_s']:.1f} s, warm {warm['process_wall_s']:.1f} s", file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
