"""How well, and how fast, ppo-np learns: final return over K seeds per environment and algorithm.

    python benchmarks/bench_learning.py                      # a markdown table (as in the README)
    python benchmarks/bench_learning.py --json               # one JSON object (machine, versions, results)
    python benchmarks/bench_learning.py --seeds 3 --envs CartPole-v1 --algos clip,penalty --out runs/bench

Each (environment, algorithm) is a sweep (``ppo_np.sweep``: the one multi-seed mechanism, Ray tasks on
every core) of seeds 0 .. K-1 at the environment's step budget (CartPole-v1 100k steps, Acrobot-v1 100k,
Pendulum-v1 200k: ``DEFAULT_TOTAL_STEPS``), each trial the environment's preset with ``algo`` (and
``ALGO_OVERRIDES``) and its seed, evaluated as ``ppo-np train`` ends: 20 episodes, deterministic
actions, seeded ``eval_seed`` (training seed + 10000). Reported per (environment, algorithm): the IQM
of the final returns with its 95% bootstrap interval (``stats.interval_estimates``), mean, std over
seeds (ddof=1), min and max, each trial's training seconds (two trials ran at once, one per core)
and the sweep's wall time. One Ray instance serves every sweep; one short warm-up trial first loads
or compiles the Numba kernels, so that no seed pays it. With ``--out`` the trials stay (and a re-run
resumes them); without, they go to a temporary directory. ``--figures DIR`` keeps each sweep's learning
curves (its ``curves.png``: the training return against steps, IQM over seeds). Beside each row, the
published PPO figure for the environment (``PUBLISHED``, its source and budget named).

An algorithm is any value of ``PPOConfig.algo``; a new one needs no change here, unless it wants its own
hyperparameters: then add them to ``ALGO_OVERRIDES``. Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (add_learning_options, add_output_options, estimate_text, learning_envs, learning_footer,
                     load_average, machine_info, parse_list, print_saved_run, summary)

from ppo_np.config import DEFAULT_TOTAL_STEPS, PPOConfig
from ppo_np.sweep import CURVES_NAME, RESULT_NAME, SweepSpec, plan, ray_instance, run_sweep, run_trial

EVAL_EPISODES = 20
DEFAULT_ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1")

#: per-algorithm changes to the preset beyond ``algo=name`` (none needed for clip, penalty or trpo)
ALGO_OVERRIDES: dict[str, dict] = {}

_ZOO = "RL Baselines3 Zoo benchmark.md, PPO"
#: published PPO results per environment, for the column beside ours: (return, where, at what budget and
#: version). One run each for the Zoo (its own note); CleanRL's is a mean over seeds.
PUBLISHED: dict[str, tuple[str, str]] = {
    "CartPole-v1": ("500.0 ± 0.0", f"{_ZOO}, 100k"),
    "Acrobot-v1": ("-73.5 ± 18.2", f"{_ZOO}, 1M"),
    "Pendulum-v1": ("-172.2 ± 104.2", f"{_ZOO} with gSDE, 100k"),
    "LunarLander-v3": ("242.1 ± 31.8", f"{_ZOO}, LunarLander-v2, 1M"),
    "MountainCar-v0": ("-110.4 ± 19.5", f"{_ZOO}, 1M"),
    "MountainCarContinuous-v0": ("88.3 ± 2.6", f"{_ZOO} with gSDE, 20k"),
    "Hopper-v5": ("2383 ± 272", "CleanRL ppo_continuous_action, Hopper-v4, 1M"),
    "HalfCheetah-v5": ("5819.1 ± 663.5", f"{_ZOO} (its own tuned settings), HalfCheetah-v3, 1M"),
}


def known_algos() -> tuple[str, ...]:
    """The values ``PPOConfig.algo`` accepts."""
    return next(f for f in dataclasses.fields(PPOConfig) if f.name == "algo").metadata["choices"]


def bench(env_id: str, algo: str, seeds: int, total_steps: int, out: Path, log=None) -> dict:
    """K seeds of (env_id, algo) as one sweep: its statistics and each trial's result."""
    spec = SweepSpec(env=env_id, seeds=tuple(range(seeds)), fixed={"algo": algo, **ALGO_OVERRIDES.get(algo, {})},
                     total_steps=total_steps, eval_episodes=EVAL_EPISODES)
    start = time.perf_counter()
    config = run_sweep(spec, out)["configurations"][0]
    wall = time.perf_counter() - start
    runs = [json.loads((out / "default" / f"seed-{seed}" / RESULT_NAME).read_text()) for seed in config["seeds"]]
    if log:
        log(f"{env_id} {algo}: IQM {estimate_text(config['iqm'])} in {wall:.0f} s (load {load_average()})")
    trains = [r["train_s_last_attempt"] for r in runs]
    return {"env": env_id, "algo": algo, "total_steps": total_steps, "seeds": seeds,
            "final_return": summary(config["final_returns"], 3),
            **{name: config[name] for name in ("iqm", "median", "mean")},
            "train_s_per_trial": summary(trains, 2), "sweep_wall_s": round(wall, 2),
            "failed": config["unfinished"],
            "runs": [{"seed": r["seed"], "final_return": r["final_return"], "train_s": r["train_s_last_attempt"],
                      "train_return_last20": r["train_return_last20"]} for r in runs]}


def markdown(report: dict) -> str:
    """The results as a markdown table with the machine under it."""
    lines = ["| env | algo | steps | seeds | IQM [95% CI] | mean ± std | min | max | published | train s / trial | "
             "sweep wall (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in report["results"]:
        f = r["final_return"]
        published = "{} ({})".format(*PUBLISHED[r["env"]]) if r["env"] in PUBLISHED else "-"
        lines.append(f"| {r['env']} | {r['algo']} | {r['total_steps'] // 1000}k | {r['seeds']} | "
                     f"{estimate_text(r['iqm'])} | {f['mean']:.1f} ± {f['std']:.1f} | {f['min']:.1f} | {f['max']:.1f} | "
                     f"{published} | {r['train_s_per_trial']['mean']:.1f} | {r['sweep_wall_s']:.0f} |")
    lines += ["", learning_footer(report, EVAL_EPISODES, ', one BLAS thread')]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_learning_options(parser, seeds=5, envs=DEFAULT_ENVS, per="algorithm", out="OUT/ENV/ALGO")
    parser.add_argument("--algos", default="clip", help=f"comma-separated, of: {', '.join(known_algos())}")
    parser.add_argument("--figures", metavar="DIR",
                        help="copy each sweep's learning curves (IQM over seeds) to DIR/learning_ENV_ALGO.png")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved_run(args.from_json, markdown)
    envs, algos = learning_envs(parser, args), parse_list(args.algos)
    unknown = [a for a in algos if a not in known_algos()]
    if unknown:
        parser.error(f"unknown algo(s) {', '.join(unknown)}; PPOConfig.algo accepts {', '.join(known_algos())}")

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    report = machine_info(extra=("ray",))
    report.update(benchmark="learning", seeds=args.seeds,
                  evaluation={"episodes": EVAL_EPISODES, "deterministic": True, "seed": "training seed + 10000"},
                  results=[])
    with tempfile.TemporaryDirectory() as scratch, ray_instance(workers=args.workers) as ray:
        report["workers"] = int(ray.cluster_resources().get("CPU", 1))
        root = Path(args.out) if args.out else Path(scratch)
        warm_spec, warm = plan(SweepSpec(env=envs[0], seeds=(0,), total_steps=2048), Path(scratch) / "warm-up")
        run_trial(warm_spec.to_dict(), warm[0])
        for env_id in envs:
            for algo in algos:
                steps = args.total_steps or DEFAULT_TOTAL_STEPS[env_id]
                report["results"].append(bench(env_id, algo, args.seeds, steps, root / env_id / algo, log))
                if args.figures:
                    Path(args.figures).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(root / env_id / algo / CURVES_NAME,
                                    Path(args.figures) / f"learning_{env_id}_{algo}.png")
    report["load_average_end"] = load_average()
    print(json.dumps(report) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
