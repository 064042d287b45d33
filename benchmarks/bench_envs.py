"""The environments alone: the compiled ports of classic control against gymnasium's, random actions.

    python benchmarks/bench_envs.py                         # one JSON object
    python benchmarks/bench_envs.py --steps 100000 --num-envs 8 --repeats 5

For every port (``classic_control.PORTS``): ``steps`` environment steps (``steps / num_envs`` vector
steps) of ``num_envs`` environments with random actions, drawn before the clock starts (200 batches
from the vector action space, cycled), on three vector envs:

    numba       ``NumbaVectorEnv`` (``env_backend="numba"``)
    sync        ppo-np's ``LeanSyncVectorEnv`` of ``gym.make`` environments (what "auto" gives but for
                CartPole at 8 or more envs)
    native      gymnasium's own vectorised implementation, where the id has one (CartPole-v1)

Reported: the best of ``repeats`` wall times per env and vector env, microseconds per vector step, and
gymnasium's best over the port's. Each vector env is stepped once before timing (the kernels are
compiled or loaded from Numba's cache then). Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from _common import load_average, machine_info

from ppo_np.classic_control import PORTS, NumbaVectorEnv
from ppo_np.envs import EnvSource

ACTION_BATCHES = 200


def time_steps(envs, vector_steps: int, repeats: int) -> float:
    """The best of ``repeats`` wall times of ``vector_steps`` steps with pre-drawn random actions."""
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(ACTION_BATCHES)]
    envs.reset(seed=0)
    envs.step(actions[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(vector_steps):
            envs.step(actions[i % ACTION_BATCHES])
        best = min(best, time.perf_counter() - start)
    envs.close()
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps per timing")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report = {"benchmark": "envs", "steps": args.steps, "num_envs": args.num_envs, "repeats": args.repeats,
              **machine_info(), "results": []}
    vector_steps = args.steps // args.num_envs
    for env_id in PORTS:
        source = EnvSource.of(env_id)
        makers = {"numba": lambda: NumbaVectorEnv(env_id, args.num_envs),
                  "sync": lambda: source.make_vector(args.num_envs, "sync")}
        if source.has_native_vector_env:
            makers["native"] = lambda: source.make_vector(args.num_envs, "native")
        walls = {name: time_steps(make(), vector_steps, args.repeats) for name, make in makers.items()}
        row = {"env": env_id, "wall_s": {k: round(v, 4) for k, v in walls.items()},
               "us_per_vector_step": {k: round(1e6 * v / vector_steps, 2) for k, v in walls.items()},
               "speedup_vs_best_gymnasium": round(min(v for k, v in walls.items() if k != "numba") / walls["numba"], 2)}
        report["results"].append(row)
        print(f"{env_id}: {row['wall_s']}", file=sys.stderr, flush=True)
    report["load_average_end"] = load_average()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
