"""The study behind ppo-np's generic defaults: each candidate against Stable-Baselines3's PPO defaults.

    python benchmarks/bench_defaults.py --seeds 3 --out runs/defaults --json > defaults.json
    python benchmarks/bench_defaults.py --from-json defaults.json            # the README's table
    python benchmarks/bench_defaults.py --candidates all --envs LunarLander-v3 --out runs/defaults

What ``ppo-np train ENV`` trains an environment without a preset with is ``config.PRESETS["discrete"]``
or ``["continuous"]``, by its action space: the generic defaults. They are judged on environments
they were not tuned for, against the defaults a user of Stable-Baselines3 gets from
``PPO("MlpPolicy", env)``. Per environment of ``--envs`` (default ``STUDY_ENVS``: classic control,
Box2D and MuJoCo, discrete and continuous), at its budget (``config.DEFAULT_TOTAL_STEPS``), seeds
0 .. K-1 on every side:

- ppo-np, each candidate of ``CANDIDATES`` for the env's action space (``--candidates generic``, the
  default, runs the shipped defaults alone; ``all`` adds those the study set aside): the candidate's
  fields over ``PPOConfig``'s own, the env's preset ignored; a sweep each (``ppo_np.sweep``, Ray tasks
  on every core);
- SB3 2.x: ``PPO("MlpPolicy", make_vec_env(env, n_envs=1, seed=seed), seed=seed, device="cpu")``,
  every hyperparameter its default (one env, n_steps 2048, batch 64, 10 epochs, lr 3e-4 constant,
  gamma 0.99, lambda 0.95, clip 0.2, no entropy bonus, no normalisation, separate 64-64 tanh
  networks), one torch thread and one BLAS thread, one process per core.

Both sides are evaluated alike: 20 deterministic episodes of ``ppo_np.evaluate``'s envs seeded
training seed + 10000 (SB3 acting by ``model.predict``, as in ``bench_train``). Reported per env:
the IQM of each side's final returns with its 95% bootstrap interval, mean ± std over seeds, min and
max, and P(candidate > SB3) with its interval (``stats.probability_of_improvement``: 0.5 is a tie).
With ``--out`` every trial stays (a re-run resumes: finished trials are read, never rerun). It needs
SB3 and torch beside ppo-np, and the box2d and mujoco extras for the default envs (see the README's
benchmark section). Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import (add_learning_options, add_output_options, estimate_text, learning_envs, learning_footer,
                     load_average, machine_info, parse_list, print_saved_run, summary)
from bench_learning import EVAL_EPISODES
from bench_train import evaluate_sb3, sb3_available

from ppo_np import stats
from ppo_np.checkpoint import write_text_atomic
from ppo_np.config import DEFAULT_TOTAL_STEPS, PRESETS, PPOConfig
from ppo_np.evaluation import EVAL_SEED_OFFSET
from ppo_np.sweep import RESULT_NAME, SweepSpec, plan, ray_instance, run_sweep, run_trial

#: classic control, Box2D and MuJoCo; three discrete, three continuous, at their budgets
STUDY_ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1", "MountainCarContinuous-v0", "Hopper-v5")

#: per action kind, the candidates of the study: "generic" is what ships (``config.PRESETS``), the
#: others what it was chosen over (the README says why each lost)
CANDIDATES: dict[str, dict[str, dict]] = {
    "discrete": {
        "generic": PRESETS["discrete"],
        # the previous generic defaults, after CleanRL's Atari settings: 16 gradient steps per 1k samples
        "cleanrl-atari": dict(num_envs=8, num_steps=128, minibatch_size=256, update_epochs=4, ent_coef=0.01,
                              lr_schedule="linear"),
        # SB3's batch of 2048 from 8 envs of 256 steps; then SB3's configuration with one change each
        "8-envs": dict(num_envs=8, num_steps=256, minibatch_size=64, update_epochs=10),
        "8-envs-linear-lr": dict(num_envs=8, num_steps=256, minibatch_size=64, update_epochs=10, lr_schedule="linear"),
        "linear-lr": dict(num_envs=1, num_steps=2048, minibatch_size=64, update_epochs=10, lr_schedule="linear"),
        "entropy-0.01": dict(num_envs=1, num_steps=2048, minibatch_size=64, update_epochs=10, ent_coef=0.01),
        # SB3's configuration alone (the generic without normalisation); then either normalisation alone
        "sb3-config": dict(PRESETS["discrete"], normalize_obs=False, normalize_reward=False),
        "reward-norm": dict(PRESETS["discrete"], normalize_obs=False),
        "obs-norm": dict(PRESETS["discrete"], normalize_reward=False),
    },
    "continuous": {"generic": PRESETS["continuous"]},
}

SB3_SIDE = "sb3-defaults"


def candidate_config(values: dict) -> dict:
    """Every field of the candidate's ``PPOConfig`` but the seed: an env's preset cannot show through."""
    fields = dataclasses.asdict(PPOConfig(**values))
    del fields["seed"]
    return fields


def action_kind(env_id: str) -> str:
    from ppo_np.envs import EnvSource
    from ppo_np.heads import head_for

    return "continuous" if head_for(EnvSource.of(env_id).action_space).continuous else "discrete"


def bench_candidate(env_id: str, name: str, values: dict, seeds: int, total_steps: int, out: Path) -> dict:
    """K seeds of one candidate on ``env_id``, as one sweep: each trial's final return."""
    spec = SweepSpec(env=env_id, seeds=tuple(range(seeds)), fixed=candidate_config(values),
                     total_steps=total_steps, eval_episodes=EVAL_EPISODES)
    start = time.perf_counter()
    config = run_sweep(spec, out)["configurations"][0]
    runs = [json.loads((out / "default" / f"seed-{seed}" / RESULT_NAME).read_text()) for seed in config["seeds"]]
    return side_report(name, [r["final_return"] for r in runs], [r["train_s_last_attempt"] for r in runs],
                       time.perf_counter() - start)


def sb3_trial(env_id: str, seed: int, total_steps: int, path: str) -> dict:
    """Train and evaluate SB3's default PPO once (single-threaded); its result, kept at ``path``."""
    if os.path.exists(path):
        return json.loads(Path(path).read_text())
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):
        start = time.perf_counter()
        model = SB3PPO("MlpPolicy", make_vec_env(env_id, n_envs=1, seed=seed), seed=seed, device="cpu")
        model.learn(total_steps)
        train_s = time.perf_counter() - start
    evaluation = evaluate_sb3(model, env_id, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)
    model.get_env().close()
    result = {"seed": seed, "final_return": evaluation["mean_return"], "evaluation": evaluation,
              "steps": int(model.num_timesteps), "train_s": round(train_s, 3)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), json.dumps(result, indent=2))
    return result


def bench_sb3(env_id: str, seeds: int, total_steps: int, out: Path, workers: int) -> dict:
    """K seeds of SB3's default PPO on ``env_id``, one process per worker."""
    start = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no Ray or Numba threads forked
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        runs = list(pool.map(sb3_trial, [env_id] * seeds, range(seeds), [total_steps] * seeds,
                             [str(out / f"seed-{seed}.json") for seed in range(seeds)]))
    return side_report(SB3_SIDE, [r["final_return"] for r in runs], [r["train_s"] for r in runs],
                       time.perf_counter() - start)


def side_report(name: str, final_returns: list[float], train_s: list[float], wall: float) -> dict:
    return {"side": name, "final_returns": [round(r, 3) for r in final_returns],
            "final_return": summary(final_returns, 3), **stats.interval_estimates(final_returns),
            "train_s_per_trial": summary(train_s, 2), "wall_s": round(wall, 2)}


def bench_env(env_id: str, names: list[str], seeds: int, steps: int, out: Path, workers: int, log) -> dict:
    """Every candidate and SB3's defaults on ``env_id``; each candidate's P(candidate > SB3)."""
    kind = action_kind(env_id)
    sides = []
    for name in names:
        sides.append(bench_candidate(env_id, name, CANDIDATES[kind][name], seeds, steps, out / env_id / name))
        log(env_id, sides[-1])
    sb3 = bench_sb3(env_id, seeds, steps, out / env_id / SB3_SIDE, workers)
    log(env_id, sb3)
    for side in sides:
        side["p_better_than_sb3"] = stats.probability_of_improvement(side["final_returns"], sb3["final_returns"])
    return {"env": env_id, "kind": kind, "total_steps": steps, "seeds": seeds, "sides": sides + [sb3]}


def markdown(report: dict) -> str:
    """One row per env and side; the candidates' rows say P(candidate > SB3) and whether its IQM is at least SB3's."""
    lines = ["| env | steps | seeds | side | IQM [95% CI] | mean ± std | min | max | P(> SB3) [95% CI] | "
             "IQM >= SB3's |", "|---|---:|---:|---|---:|---:|---:|---:|---:|:---:|"]
    for r in report["results"]:
        sb3 = next(s for s in r["sides"] if s["side"] == SB3_SIDE)
        for s in r["sides"]:
            f = s["final_return"]
            row = (f"| {r['env']} | {r['total_steps'] // 1000}k | {r['seeds']} | {s['side']} | {estimate_text(s['iqm'])} | "
                   f"{f['mean']:.1f} ± {f['std']:.1f} | {f['min']:.1f} | {f['max']:.1f} |")
            if s is sb3:
                lines.append(row + " | |")
            else:
                verdict = "yes" if s["iqm"]["value"] >= sb3["iqm"]["value"] else "**no**"
                lines.append(row + f" {estimate_text(s['p_better_than_sb3'], 2)} | {verdict} |")
    lines += ["", learning_footer(report, EVAL_EPISODES)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_learning_options(parser, seeds=3, envs=STUDY_ENVS, per="side", out="OUT/ENV/SIDE")
    parser.add_argument("--candidates", default="generic",
                        help="comma-separated names of CANDIDATES (a name missing for an action kind is left out "
                             "there), or all")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved_run(args.from_json, markdown)
    envs = learning_envs(parser, args)
    known = list(dict.fromkeys(name for kind in CANDIDATES.values() for name in kind))  # "generic" first
    names = known if args.candidates == "all" else parse_list(args.candidates)
    if not names or any(n not in known for n in names):
        parser.error(f"--candidates: got {args.candidates!r}; give all or names of: {', '.join(known)}")
    why_not = sb3_available()
    if why_not:
        parser.error(f"the study needs Stable-Baselines3: {why_not}")

    def log(env_id, side):
        if not args.quiet:
            print(f"{env_id} {side['side']}: IQM {estimate_text(side['iqm'])}, returns {side['final_returns']} "
                  f"in {side['wall_s']:.0f} s (load {load_average()})", file=sys.stderr, flush=True)

    report = machine_info(extra=("ray", "torch", "stable_baselines3"))
    report.update(benchmark="defaults", seeds=args.seeds, candidates=CANDIDATES,
                  evaluation={"episodes": EVAL_EPISODES, "deterministic": True,
                              "seed": f"training seed + {EVAL_SEED_OFFSET}"}, results=[])
    with tempfile.TemporaryDirectory() as scratch, ray_instance(workers=args.workers) as ray:
        workers = report["workers"] = int(ray.cluster_resources().get("CPU", 1))
        root = Path(args.out) if args.out else Path(scratch)
        warm_spec, warm = plan(SweepSpec(env=envs[0], seeds=(0,), total_steps=2048), Path(scratch) / "warm-up")
        run_trial(warm_spec.to_dict(), warm[0])  # Numba's kernels compiled or loaded once, before any seed
        for env_id in envs:
            kind_names = [n for n in names if n in CANDIDATES[action_kind(env_id)]]
            steps = args.total_steps or DEFAULT_TOTAL_STEPS[env_id]
            report["results"].append(bench_env(env_id, kind_names, args.seeds, steps, root, workers, log))
    report["load_average_end"] = load_average()
    print(json.dumps(report) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
