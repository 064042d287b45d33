"""What ``log_gradients`` costs: the same training runs with gradients.csv written and without.

    python benchmarks/bench_gradient_log.py            # a readable table
    python benchmarks/bench_gradient_log.py --json     # one JSON object (machine, versions, results)

For each preset (default: CartPole-v1 at 100k steps, Pendulum-v1 at 50k) and seed, the two sides run
in one process, alternating per seed and starting with the side the seed's parity picks, each into its
own run directory, after one warm-up run of each (Numba's compilation or cache loading). Reported:
the process CPU time of ``learn`` (one thread: its wall time, without the time other processes took
from it) per side and seed, and the overhead (on / off - 1) per seed with its median.
The trained weights of the two sides are compared too: logging must change none of them.
Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"          # before numba is imported (by ppo_np)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import add_output_options, load_average, machine_info, parse_list, print_saved_run  # noqa: E402

import numpy as np  # noqa: E402

from ppo_np import PPO, PPOConfig  # noqa: E402

STEPS = {"CartPole-v1": 100_000, "Pendulum-v1": 50_000}


def train(env_id: str, seed: int, steps: int, log: bool, run_dir: Path) -> tuple[float, dict]:
    agent = PPO(env_id, PPOConfig.for_env(env_id, seed=seed, log_gradients=log), run_dir=run_dir)
    start = time.process_time()  # CPU time of this process: less of the other processes' noise than wall time
    agent.learn(steps)
    wall = time.process_time() - start
    state = agent.state_arrays()
    agent.close()
    return wall, state


def run(envs: list[str], seeds: int, quiet: bool) -> dict:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in envs:
            for log in (False, True):  # warm-up: compilation, caches
                train(env_id, 0, 2_048, log, Path(tmp) / f"warm-{env_id}-{log}")
            rows = []
            for seed in range(seeds):
                walls, states = {}, {}
                for log in ((False, True) if seed % 2 == 0 else (True, False)):
                    walls[log], states[log] = train(env_id, seed, STEPS[env_id], log, Path(tmp) / f"{env_id}-{seed}-{log}")
                same = all(np.array_equal(states[True][k], v) for k, v in states[False].items() if k != "config")
                rows.append({"seed": seed, "wall_off_s": round(walls[False], 3), "wall_on_s": round(walls[True], 3),
                             "overhead": round(walls[True] / walls[False] - 1, 4), "same_weights": same})
                if not quiet:
                    print(f"{env_id} seed {seed}: off {walls[False]:.2f} s, on {walls[True]:.2f} s, "
                          f"overhead {rows[-1]['overhead']:+.1%}, same weights {same}", file=sys.stderr)
            results.append({"env": env_id, "steps": STEPS[env_id], "runs": rows,
                            "median_overhead": statistics.median(r["overhead"] for r in rows),
                            "same_weights": all(r["same_weights"] for r in rows)})
    return {**machine_info(), "benchmark": "gradient_log", "results": results, "load_average_end": load_average()}


def markdown(report: dict) -> str:
    lines = ["| env | steps | seeds | CPU off (median s) | CPU on (median s) | overhead (median) | same weights |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in report["results"]:
        off = statistics.median(x["wall_off_s"] for x in r["runs"])
        on = statistics.median(x["wall_on_s"] for x in r["runs"])
        lines.append(f"| {r['env']} | {r['steps'] // 1000}k | {len(r['runs'])} | {off:.2f} | {on:.2f} | "
                     f"{r['median_overhead']:+.1%} | {r['same_weights']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(STEPS), help=f"comma-separated, of: {', '.join(STEPS)}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. K-1 per environment")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_output_options(parser)
    args = parser.parse_args()
    if args.from_json:
        return print_saved_run(args.from_json, markdown)
    unknown = sorted(set(parse_list(args.envs)) - set(STEPS))
    if unknown:
        parser.error(f"unknown env(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    report = run(parse_list(args.envs), args.seeds, args.quiet)
    print(json.dumps(report) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
