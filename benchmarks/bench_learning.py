"""How well, and how fast, ppo-np learns: final return over K seeds per environment and algorithm.

    python benchmarks/bench_learning.py                      # a markdown table (as in the README)
    python benchmarks/bench_learning.py --json               # one JSON object (machine, versions, results)
    python benchmarks/bench_learning.py --seeds 3 --envs CartPole-v1 --algos clip,penalty

For every environment (CartPole-v1 100k steps, Acrobot-v1 100k, Pendulum-v1 200k: ``DEFAULT_TOTAL_STEPS``),
every algorithm and seeds 0 .. K-1: train with the environment's preset
(``preset_for(env_id, continuous)``) with ``seed`` and ``algo`` replaced, then evaluate the final
policy over 20 episodes with deterministic actions (``evaluate(agent, episodes=20, seed=EVAL_SEED + seed)``).
Reported per (environment, algorithm): mean, std (over seeds, ddof=1), min and max of the final
evaluation return, and the training wall time (mean per seed and total; construction + ``learn``,
evaluation excluded). Each (environment, algorithm) first runs one warm-up update, so Numba's
compilation or cache loading is not charged to seed 0.

An algorithm is any value of ``PPOConfig.algo`` (its field's choices, e.g. clip and penalty): the run
config is ``preset.replace(algo=name)``. A new algorithm added to ``PPOConfig`` (e.g. trpo) needs
no change here, unless it wants its own hyperparameters: then add them to ``ALGO_OVERRIDES``.
Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from _common import add_output_options, load_average, machine_info, parse_list, print_saved_run, summary

import gymnasium as gym

from ppo_np import PPO, evaluate
from ppo_np.config import DEFAULT_TOTAL_STEPS, PPOConfig, preset_for

EVAL_EPISODES = 20
EVAL_SEED = 1000                 # evaluation episodes of seed s are seeded EVAL_SEED + s + i, i < 20
DEFAULT_ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1")

#: per-algorithm changes to the preset beyond ``algo=name`` (none needed for clip or penalty)
ALGO_OVERRIDES: dict[str, dict] = {}


def known_algos() -> tuple[str, ...]:
    """The values ``PPOConfig.algo`` accepts."""
    return next(f for f in dataclasses.fields(PPOConfig) if f.name == "algo").metadata["choices"]


def run_config(env_id: str, algo: str, seed: int) -> PPOConfig:
    """The environment's preset with ``algo``, its overrides and ``seed``."""
    continuous = isinstance(gym.make(env_id).action_space, gym.spaces.Box)
    return preset_for(env_id, continuous).replace(algo=algo, seed=seed, **ALGO_OVERRIDES.get(algo, {}))


def run_seed(env_id: str, config: PPOConfig, total_steps: int) -> dict:
    """Train one agent, evaluate it; the result row of that seed."""
    start = time.perf_counter()
    agent = PPO(env_id, config)
    agent.learn(total_steps)
    wall = time.perf_counter() - start
    start_eval = time.perf_counter()
    result = evaluate(agent, episodes=EVAL_EPISODES, seed=EVAL_SEED + config.seed, deterministic=True)
    eval_wall = time.perf_counter() - start_eval
    row = {"seed": config.seed, "final_return": round(result["mean_return"], 3),
           "final_return_std_over_episodes": round(result["std_return"], 3),
           "train_return_last_20": round(agent.mean_recent_return(), 3),
           "steps": agent.global_step, "wall_s": round(wall, 3), "steps_per_s": round(agent.global_step / wall, 1),
           "eval_wall_s": round(eval_wall, 3)}
    agent.close()
    return row


def bench(env_id: str, algo: str, seeds: int, total_steps: int, log=None) -> dict:
    """K seeds of (env_id, algo): per-seed rows and their summary."""
    config = run_config(env_id, algo, 0)
    start = time.perf_counter()
    warm = PPO(env_id, config)
    warm.learn(config.batch_size)                      # one update: compile or load the Numba kernels
    warm.close()
    warmup = time.perf_counter() - start
    runs = []
    for seed in range(seeds):
        runs.append(run_seed(env_id, config.replace(seed=seed), total_steps))
        if log:
            log(f"{env_id} {algo} seed {seed}: return {runs[-1]['final_return']:.1f} in {runs[-1]['wall_s']:.1f} s "
                f"(load {load_average()})")
    returns = summary([r["final_return"] for r in runs], 3)
    walls = [r["wall_s"] for r in runs]
    return {"env": env_id, "algo": algo, "total_steps": total_steps, "seeds": seeds,
            "final_return": returns, "wall_mean_s": round(sum(walls) / len(walls), 2),
            "wall_total_s": round(sum(walls), 2), "wall_std_s": summary(walls, 2)["std"],
            "warmup_s": round(warmup, 2), "config": dataclasses.asdict(config) | {"seed": "0 .. K-1"}, "runs": runs}


def markdown(report: dict) -> str:
    """The results as a markdown table with the machine under it."""
    lines = ["| env | algo | steps | seeds | final return mean ± std | min | max | wall / seed (s) | wall total (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        f = r["final_return"]
        lines.append(f"| {r['env']} | {r['algo']} | {r['total_steps'] // 1000}k | {r['seeds']} | "
                     f"{f['mean']:.1f} ± {f['std']:.1f} | {f['min']:.1f} | {f['max']:.1f} | "
                     f"{r['wall_mean_s']:.1f} | {r['wall_total_s']:.0f} |")
    m, v = report["machine"], report["versions"]
    lines.append("")
    lines.append(f"Final return: {EVAL_EPISODES} deterministic evaluation episodes per seed; std over seeds. "
                 f"{m['cpu']} ({m['logical_cpus']} logical CPUs, one BLAS thread), Python {m['python']}, "
                 + ", ".join(f"{k} {val}" for k, val in v.items() if val)
                 + f"; load average {m['load_average_start']} at start, {report['load_average_end']} at end.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a markdown table")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. K-1 per environment and algorithm")
    parser.add_argument("--envs", default=",".join(DEFAULT_ENVS), help="comma-separated gymnasium ids")
    parser.add_argument("--algos", default="clip", help=f"comma-separated, of: {', '.join(known_algos())}")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="steps per run for every env (default: 100k CartPole and Acrobot, 200k Pendulum)")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved_run(args.from_json, markdown)
    envs, algos = parse_list(args.envs), parse_list(args.algos)
    unknown = [a for a in algos if a not in known_algos()]
    if unknown:
        parser.error(f"unknown algo(s) {', '.join(unknown)}; PPOConfig.algo accepts {', '.join(known_algos())}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    missing = [e for e in envs if args.total_steps is None and e not in DEFAULT_TOTAL_STEPS]
    if missing:
        parser.error(f"no default step budget for {', '.join(missing)}; pass --total-steps")

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    report = machine_info()
    report.update(benchmark="learning", seeds=args.seeds,
                  evaluation={"episodes": EVAL_EPISODES, "deterministic": True,
                              "seed": f"{EVAL_SEED} + training seed"}, results=[])
    for env_id in envs:
        for algo in algos:
            steps = args.total_steps or DEFAULT_TOTAL_STEPS[env_id]
            report["results"].append(bench(env_id, algo, args.seeds, steps, log))
    report["load_average_end"] = load_average()
    print(json.dumps(report) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
