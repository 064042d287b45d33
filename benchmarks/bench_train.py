"""Training speed of ppo-np vs Stable-Baselines3's PPO (same hyperparameters, env, steps); ppo-np's time by phase.

    python benchmarks/bench_train.py                          # ppo-np alone, a markdown table
    python benchmarks/bench_train.py --vs sb3 --seeds 3 --json --breakdown --plot wallclock.png
    python benchmarks/bench_train.py --vs sb3 --env-backend gymnasium,numba   # both backends, one SB3 run

Each config of ``CONFIGS`` (after RL Baselines3 Zoo and SB3's defaults) is trained with seeds
0 .. K-1 on both sides, the two sides alternating A/B per seed (ppo-np first on even seeds, SB3
first on odd ones, so a drift in the machine's load hits both), both single-threaded:
``NUMBA_NUM_THREADS=1`` and one BLAS thread (``learn`` limits it itself; the SB3 side runs under
the same ``threadpool_limits(1)``), and ``torch.set_num_threads(1)``. Both sides use separate actor
and critic MLPs 64-64 tanh with orthogonal init, Adam (eps 1e-5) with one global gradient-norm clip
over both networks, per-minibatch advantage normalisation, an unclipped value loss, ent_coef 0,
vf_coef 0.5, float32, no observation normalisation, no gSDE; "linear" anneals to 0 over the run
(SB3: a callable of progress_remaining). Before the timed seeds, each side runs one warm-up
update per config (Numba's compilation or cache loading, torch's first calls).

Reported per config and side: wall time (constructing agent and envs + ``learn``; evaluation
excluded), steps/s, and the mean return over 20 deterministic evaluation episodes per seed
(ppo-np: ``ppo_np.evaluate``; SB3: ``evaluate_sb3``, that same function over the same sync vector env with
the same seeds, acting by ``model.predict(obs, deterministic=True)``), each as mean/median over seeds;
and the wall-time ratio SB3 / ppo-np, per seed and its median (with --breakdown also two ceilings:
SB3's median wall over the time of ppo-np's env alone with random actions, the ratio a ppo-np whose
every other part cost nothing would reach; and over that time plus the minibatch phase's matmul
floor (below), the ratio if only the env and the matrix products of the update cost anything; the
floors are means over seeds).

Differences that remain (both are how each library runs, and both are in the wall time): ppo-np
steps the same ``gym.make(env_id)`` environments in its ``LeanSyncVectorEnv`` ("auto"; CartPole with
8 or more envs in gymnasium's native vectorised env), SB3 in a DummyVecEnv of single envs;
gymnasium's vector envs reset on the step after an episode ends, and ppo-np masks that reset step
out of the update (about one sample per episode fewer than SB3 trains on). ``--env-backend numba``
runs ppo-np on the compiled ports of classic control instead (``ppo_np.classic_control``: gymnasium's
dynamics bit for bit, a whole rollout in one compiled call); the breakdown's env-alone limit then
steps those. ``--env-backend gymnasium,numba`` runs ppo-np on each against the same SB3 runs, a row
each (the numba one labelled so).

Return against wall-clock (cartpole-zoo): after every update, the mean return of the last 100
finished training episodes (ppo-np: ``agent.mean_recent_return(100)`` from the ``learn`` callback;
SB3: the mean of ``ep_info_buffer``, also 100 episodes, at the start of each rollout and at the end),
against seconds since ``learn`` started. ``--plot`` draws it; the JSON keeps the seconds to reach a
100-episode mean of ``SOLVED`` (475) per seed; ``--curves FILE`` writes the whole curves as JSON.

``--breakdown`` (ppo-np): ``agent.phase_times`` (env_step, inference, storage, or with ``--env-backend numba``
rollout (the compiled rollout: all three in one call), advantages,
minibatch_fwd_bwd, optimizer (0 where the update loop runs compiled whole: its Adam passes are in
minibatch_fwd_bwd); "other" = learn wall - their sum), mean over seeds, set beside two
limits measured in the same run, right after each seed:
  rollout    env_step + inference + storage + rollout  vs  stepping the same vector env
             (``EnvSource.of(env_id).make_vector(N)``) with batched random actions
             (``envs.action_space.sample()``, drawn outside the timed ``step`` calls) for the
             same number of vector steps;
  minibatch  minibatch_fwd_bwd + optimizer  vs  the matmul FLOPs of the actor and critic MLPs
             (per sample and layer: 2 in out forward, 4 in out backward (dW and dX)) times the
             samples processed (epochs x batch size x updates: an upper bound by the ~1% reset steps
             that are masked out) at this machine's single-threaded float32 np.matmul rate, timed at
             exactly those shapes: (mb, in) @ (in, out), (in, mb) @ (mb, out), (mb, out) @ (out, in).
Each ratio is phase time / limit time: how far above its floor the phase runs. Beside the second
limit, the time of one ``FusedLoss`` call (the loss and both gradients of a full minibatch) measured
alone and warm (``loss_call_alone_us``) against its matrix products alone
(``matmul_floor_per_call_us``); times the calls the run made (updates x epochs x minibatches per
epoch of the whole batch: an upper bound by the ~1% masked reset steps, like ``samples_processed``,
which can leave one minibatch fewer or shorter), that gives a third ceiling: SB3's median wall over
the env with random actions plus those calls, the ratio ppo-np could reach if its act step, Adam
and every per-update cost were free.
Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"          # before numba is imported (by ppo_np)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from _common import (add_output_options, load_average, machine_info, parse_list, print_saved_run,  # noqa: E402
                     summary)
from bench_kernels import median_time  # noqa: E402
from bench_learning import EVAL_EPISODES  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ppo_np import PPO, PPOConfig, evaluate  # noqa: E402
from ppo_np.envs import EnvSource  # noqa: E402
from ppo_np.fused import FusedLoss  # noqa: E402
from ppo_np.heads import head_for  # noqa: E402
from ppo_np.losses import LossCoefs, Minibatch  # noqa: E402

#: name -> (env, num_envs, num_steps, minibatch, epochs, gamma, gae_lambda, lr, lr schedule, clip, clip schedule,
#: total steps); identical on both sides
CONFIGS: dict[str, dict] = {
    "cartpole-zoo": dict(env_id="CartPole-v1", num_envs=8, num_steps=32, minibatch_size=256, update_epochs=20,
                         gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, lr_schedule="linear",
                         clip_coef=0.2, clip_schedule="linear", total_steps=100_000),
    "cartpole-default": dict(env_id="CartPole-v1", num_envs=1, num_steps=2048, minibatch_size=64, update_epochs=10,
                             gamma=0.99, gae_lambda=0.95, learning_rate=3e-4, lr_schedule="constant",
                             clip_coef=0.2, clip_schedule="constant", total_steps=50_000),
    "acrobot": dict(env_id="Acrobot-v1", num_envs=16, num_steps=256, minibatch_size=64, update_epochs=4,
                    gamma=0.99, gae_lambda=0.94, learning_rate=3e-4, lr_schedule="constant",
                    clip_coef=0.2, clip_schedule="constant", total_steps=100_000),
    "pendulum": dict(env_id="Pendulum-v1", num_envs=4, num_steps=1024, minibatch_size=64, update_epochs=10,
                     gamma=0.9, gae_lambda=0.95, learning_rate=1e-3, lr_schedule="constant",
                     clip_coef=0.2, clip_schedule="constant", total_steps=100_000),
}
COMMON = dict(ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, normalize_obs=False, hidden_sizes=(64, 64),
              activation="tanh", dtype="float32")
#: both sides' evaluation episodes of seed s are seeded EVAL_SEED + s + i (the README's tables were measured so)
EVAL_SEED = 1000
CURVE_CONFIG = "cartpole-zoo"
CURVE_WINDOW = 100                              # episodes in the running mean of the curves (SB3's ep_info_buffer)
SOLVED = 475.0                                  # CartPole-v1's reward threshold
PHASES = ("env_step", "inference", "storage", "rollout", "advantages", "minibatch_fwd_bwd", "optimizer")


# --- ppo-np ------------------------------------------------------------------------------------

def ppo_np_config(spec: dict, seed: int, envs: dict) -> PPOConfig:
    """The ppo-np config of a CONFIGS entry, built explicitly (no preset), with ``envs``: the
    ``vectorization`` and ``env_backend`` of the command line."""
    values = {k: v for k, v in spec.items() if k not in ("env_id", "total_steps")}
    return PPOConfig(seed=seed, **envs, **values, **COMMON)


def run_ppo_np(spec: dict, seed: int, envs: dict, curve: bool) -> tuple[dict, PPO]:
    """Train and evaluate one ppo-np agent; its result row (and the agent, for the breakdown)."""
    points = []

    def record(agent, row):
        points.append((round(row["wall_s"], 4), agent.global_step, agent.mean_recent_return(CURVE_WINDOW)))

    start = time.perf_counter()
    agent = PPO(spec["env_id"], ppo_np_config(spec, seed, envs))
    learn_start, learn_cpu_start = time.perf_counter(), time.process_time()
    agent.learn(spec["total_steps"], callback=record if curve else None)
    end, learn_cpu = time.perf_counter(), time.process_time() - learn_cpu_start
    result = evaluate(agent, episodes=EVAL_EPISODES, seed=EVAL_SEED + seed, deterministic=True)
    agent.close()
    return side_row(seed, end - start, end - learn_start, learn_cpu, agent.global_step, result["mean_return"],
                    points), agent


def side_row(seed: int, wall: float, learn_wall: float, learn_cpu: float, steps: int, final_return: float,
             points: list) -> dict:
    """One run's row: wall_s from construction to the end of learn; learn_cpu_s the process's CPU time in learn
    (the JAX comparison's measure: equal to learn_wall_s on an idle core, above it where threads run)."""
    row = {"seed": seed, "wall_s": round(wall, 3), "learn_wall_s": round(learn_wall, 3),
           "learn_cpu_s": round(learn_cpu, 3), "steps": int(steps), "steps_per_s": round(steps / wall, 1),
           "final_return": round(final_return, 3)}
    if points:
        row["time_to_solved_s"] = next((t for t, _, r in points if r >= SOLVED), None)
        row["curve"] = points
    return row


# --- Stable-Baselines3 -------------------------------------------------------------------------

def sb3_available() -> str | None:
    """None if stable_baselines3 and torch import, else why not."""
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return (f"{exc}. Install them beside ppo-np (CPU torch first): pip install torch==2.13.0 && "
                "pip install stable-baselines3 torch==2.13.0")
    return None


def linear(initial: float):
    """SB3 schedule: ``initial`` at the start, 0 at the end (progress_remaining goes 1 -> 0)."""
    def value(progress_remaining: float) -> float:
        return initial * progress_remaining
    return value


def sb3_model(spec: dict, seed: int):
    """SB3's PPO with exactly the hyperparameters of ``spec`` (and ``COMMON``)."""
    import torch
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env

    envs = make_vec_env(spec["env_id"], n_envs=spec["num_envs"], seed=seed)     # DummyVecEnv of Monitor envs
    lr = linear(spec["learning_rate"]) if spec["lr_schedule"] == "linear" else spec["learning_rate"]
    clip = linear(spec["clip_coef"]) if spec["clip_schedule"] == "linear" else spec["clip_coef"]
    hidden = list(COMMON["hidden_sizes"])
    return SB3PPO("MlpPolicy", envs, n_steps=spec["num_steps"], batch_size=spec["minibatch_size"],
                  n_epochs=spec["update_epochs"], gamma=spec["gamma"], gae_lambda=spec["gae_lambda"],
                  learning_rate=lr, clip_range=clip, normalize_advantage=True, ent_coef=COMMON["ent_coef"],
                  vf_coef=COMMON["vf_coef"], max_grad_norm=COMMON["max_grad_norm"], use_sde=False,
                  policy_kwargs=dict(net_arch=dict(pi=hidden, vf=hidden), activation_fn=torch.nn.Tanh,
                                     ortho_init=True),
                  device="cpu", seed=seed, verbose=0)


def sb3_curve_callback(points: list):
    """A BaseCallback appending (seconds since learn started, steps, mean of ep_info_buffer) after each update."""
    from stable_baselines3.common.callbacks import BaseCallback

    class WallClock(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _record(self) -> None:
            buf = self.model.ep_info_buffer
            mean = float(np.mean([ep["r"] for ep in buf])) if buf else math.nan
            points.append((round(time.perf_counter() - self.start, 4), int(self.num_timesteps), mean))

        def _on_rollout_start(self) -> None:    # the previous rollout's update has just finished
            if self.num_timesteps > 0:
                self._record()

        def _on_training_end(self) -> None:     # ... and the last one
            self._record()

        def _on_step(self) -> bool:
            return True

    return WallClock()


class SB3Agent:
    """What ``ppo_np.evaluate`` asks of an agent (its env source, head and ``act``), answered by an SB3 model."""

    def __init__(self, model, env_id: str):
        self.model, self.env_source = model, EnvSource.of(env_id)
        self.head = head_for(self.env_source.action_space)

    def act(self, flat_obs: np.ndarray, deterministic: bool, rng: np.random.Generator) -> np.ndarray:
        return self.model.predict(flat_obs, deterministic=deterministic)[0]  # Box actions come back clipped


def evaluate_sb3(model, env_id: str, episodes: int = EVAL_EPISODES, seed: int = 0) -> dict:
    """``ppo_np.evaluate`` itself, SB3's predict acting: the same envs, seeds, shares of episodes and step cap."""
    return evaluate(SB3Agent(model, env_id), episodes=episodes, seed=seed, deterministic=True)


def run_sb3(spec: dict, seed: int, curve: bool) -> dict:
    """Train and evaluate one SB3 model, single-threaded; its result row."""
    points = []
    with threadpool_limits(limits=1, user_api="blas"):
        start = time.perf_counter()
        model = sb3_model(spec, seed)
        learn_start, learn_cpu_start = time.perf_counter(), time.process_time()
        model.learn(spec["total_steps"], callback=sb3_curve_callback(points) if curve else None)
        end, learn_cpu = time.perf_counter(), time.process_time() - learn_cpu_start
    result = evaluate_sb3(model, spec["env_id"], EVAL_EPISODES, EVAL_SEED + seed)
    steps = model.num_timesteps
    model.get_env().close()
    return side_row(seed, end - start, end - learn_start, learn_cpu, steps, result["mean_return"], points)


# --- the breakdown's limits ----------------------------------------------------------------------

def random_action_time(env_id: str, num_envs: int, vector_steps: int, seed: int, config: PPOConfig) -> float:
    """Seconds that ``EnvSource.of(env_id).make_vector(num_envs)`` (with ``config``'s vectorization and
    env backend, as the run had them) spends in ``step`` over ``vector_steps``
    steps with batched random actions (the rollout's floor: the environment alone). Drawing the actions
    (``action_space.sample()``: ~50 us for a batch of four Pendulum actions) is not timed."""
    envs = EnvSource.of(env_id).make_vector(num_envs, config.vectorization, backend=config.env_backend)
    clock = time.perf_counter
    try:
        envs.reset(seed=seed)
        envs.action_space.seed(seed)
        seconds = 0.0
        for _ in range(vector_steps):
            actions = envs.action_space.sample()
            start = clock()
            envs.step(actions)
            seconds += clock() - start
        return seconds
    finally:
        envs.close()


def mlp_layers(agent: PPO) -> list[tuple[int, int]]:
    """(in, out) of every linear layer of the actor and of the critic."""
    sizes = list(agent.config.hidden_sizes)
    actor = [agent.obs_dim, *sizes, agent.head.net_dim]
    critic = [agent.obs_dim, *sizes, 1]
    return [(a, b) for net in (actor, critic) for a, b in zip(net[:-1], net[1:])]


def matmul_limit(layers: list[tuple[int, int]], minibatch: int, dtype: str = "float32", repeats: int = 5) -> dict:
    """FLOPs per sample of forward + backward through ``layers``, and the single-threaded np.matmul time of one
    minibatch's worth of them, each matmul timed at its own shape."""
    rng = np.random.default_rng(0)
    seconds = 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        for n_in, n_out in layers:
            x = rng.standard_normal((minibatch, n_in)).astype(dtype)       # (mb, in) layer input
            w = rng.standard_normal((n_in, n_out)).astype(dtype)           # (in, out)
            dy = rng.standard_normal((minibatch, n_out)).astype(dtype)     # (mb, out) upstream gradient
            seconds += median_time(lambda: np.matmul(x, w), repeats)       # y = x W
            seconds += median_time(lambda: np.matmul(x.T, dy), repeats)    # dW = x^T dy
            seconds += median_time(lambda: np.matmul(dy, w.T), repeats)    # dx = dy W^T
    flops = sum(6 * n_in * n_out for n_in, n_out in layers)               # 2 in out forward + 4 in out backward
    return {"flops_per_sample": flops, "minibatch_matmul_s": seconds,
            "gflops_per_s": flops * minibatch / seconds / 1e9}


def loss_call_time(agent: PPO, minibatch: int, repeats: int = 5) -> float:
    """Median seconds of one ``FusedLoss`` call (the loss and both networks' gradients: all of the
    minibatch phase but the clip and Adam) of ``agent``'s networks on ``minibatch`` rows, measured
    alone and warm. The rows are the trained policy's own actions in states drawn around the origin;
    the time does not depend on their values."""
    rng = np.random.default_rng(0)
    cfg = agent.config
    obs = rng.standard_normal((minibatch, agent.obs_dim)).astype(cfg.dtype)
    actions, logp, dist = agent.actor.act(obs, rng)
    advantages, returns = rng.standard_normal((2, minibatch)).astype(cfg.dtype)
    mb = Minibatch(obs=obs, actions=actions, logp_old=logp, advantages=advantages, returns=returns,
                   values_old=agent.critic(obs), dist_old=dist)
    coefs = LossCoefs(surrogate="penalty" if cfg.algo == "penalty" else "clip", clip_eps=max(cfg.clip_coef, 1e-8),
                      vf_coef=cfg.vf_coef, vf_clip=cfg.vf_clip, ent_coef=cfg.ent_coef)
    loss = FusedLoss(agent.actor, agent.critic, minibatch)
    with threadpool_limits(limits=1, user_api="blas"):
        return median_time(lambda: loss(mb, coefs, normalize_advantages=cfg.norm_adv), repeats)


def breakdown_row(agent: PPO, spec: dict, learn_wall: float, seed: int, rate: dict) -> dict:
    """The phases of one seed, with the two limits measured now (and the loss calls at ``rate``'s speed)."""
    phases = getattr(agent, "phase_times", None)
    if not phases:
        return {"seed": seed, "phase_times": None}
    phases = {k: float(phases.get(k, 0.0)) for k in PHASES}
    phases["other"] = learn_wall - sum(phases.values())
    vector_steps = agent.global_step // spec["num_envs"]
    random_s = random_action_time(spec["env_id"], spec["num_envs"], vector_steps, seed, agent.config)
    samples = agent.update_count * spec["update_epochs"] * spec["num_envs"] * spec["num_steps"]
    rollout_s = phases["env_step"] + phases["inference"] + phases["storage"] + phases["rollout"]
    minibatch_s = phases["minibatch_fwd_bwd"] + phases["optimizer"]
    limit_s = samples * rate["flops_per_sample"] / (rate["gflops_per_s"] * 1e9)
    minibatches = math.ceil(spec["num_envs"] * spec["num_steps"] / spec["minibatch_size"])   # per epoch
    calls = agent.update_count * spec["update_epochs"] * minibatches
    return {"seed": seed, "learn_wall_s": learn_wall, "phase_times": phases,
            "rollout_s": rollout_s, "random_action_s": random_s, "rollout_ratio": rollout_s / random_s,
            "samples_processed": samples, "flops": samples * rate["flops_per_sample"],
            "minibatch_s": minibatch_s, "matmul_limit_s": limit_s, "minibatch_ratio": minibatch_s / limit_s,
            "loss_calls": calls, "loss_calls_alone_s": calls * rate["loss_call_s"]}


def summarise_breakdown(rows: list[dict], rate: dict) -> dict:
    """Means over seeds of the per-seed breakdowns (medians for the ratios)."""
    rows = [r for r in rows if r["phase_times"] is not None]
    if not rows:
        return {"phase_times": None, "note": "this ppo-np has no agent.phase_times"}
    mean = statistics.fmean
    wall = mean(r["learn_wall_s"] for r in rows)
    phases = {k: round(mean(r["phase_times"][k] for r in rows), 3) for k in (*PHASES, "other")}
    return {"learn_wall_s": round(wall, 3), "phase_times_s": phases,
            "phase_fractions": {k: round(v / wall, 3) for k, v in phases.items()},
            "rollout": {"phase_s": round(mean(r["rollout_s"] for r in rows), 3),
                        "random_action_s": round(mean(r["random_action_s"] for r in rows), 3),
                        "ratio": round(statistics.median(r["rollout_ratio"] for r in rows), 2)},
            "minibatch": {"phase_s": round(mean(r["minibatch_s"] for r in rows), 3),
                          "samples_processed": rows[0]["samples_processed"],
                          "gflop": round(rows[0]["flops"] / 1e9, 2),
                          "flops_per_sample": rate["flops_per_sample"],
                          "matmul_gflops_per_s": round(rate["gflops_per_s"], 3),
                          "limit_s": round(mean(r["matmul_limit_s"] for r in rows), 3),
                          "ratio": round(statistics.median(r["minibatch_ratio"] for r in rows), 2),
                          "loss_calls": rows[0]["loss_calls"],
                          "loss_call_alone_us": round(rate["loss_call_s"] * 1e6, 1),
                          "matmul_floor_per_call_us": round(rate["minibatch_matmul_s"] * 1e6, 1),
                          "loss_calls_alone_s": round(mean(r["loss_calls_alone_s"] for r in rows), 3)},
            "seeds": len(rows)}


# --- the benchmark -------------------------------------------------------------------------------

def warm_up(spec: dict, envs: dict, sb3: bool) -> dict:
    """One update per side, untimed in the results: Numba compilation / cache loading, torch's first calls."""
    times = {}
    start = time.perf_counter()
    PPO(spec["env_id"], ppo_np_config(spec, 0, envs)).learn(spec["num_envs"] * spec["num_steps"]).close()
    times["ppo_np_s"] = round(time.perf_counter() - start, 3)
    if sb3:
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            model = sb3_model(spec, 0)
            model.learn(spec["num_envs"] * spec["num_steps"])
            model.get_env().close()
        times["sb3_s"] = round(time.perf_counter() - start, 3)
    return times


def side_summary(runs: list[dict]) -> dict:
    out = {"wall_s": summary([r["wall_s"] for r in runs], 3),
           "learn_cpu_s": summary([r["learn_cpu_s"] for r in runs], 3),
           "steps_per_s": summary([r["steps_per_s"] for r in runs], 1),
           "final_return": summary([r["final_return"] for r in runs], 2)}
    if "time_to_solved_s" in runs[0]:
        out["time_to_solved_s"] = [r["time_to_solved_s"] for r in runs]
    out["runs"] = [{k: v for k, v in r.items() if k != "curve"} for r in runs]
    return out


def bench_config(name: str, seeds: int, vs_sb3: bool, envs: list[dict], breakdown: bool, log,
                 total_steps: int | None = None) -> tuple[list[dict], dict]:
    """Every seed of one config on both sides, ppo-np once per entry of ``envs`` (its vectorization and
    env backend) against the same SB3 runs; (the config's report per entry of ``envs``, the curves of
    the first)."""
    spec = CONFIGS[name] | ({"total_steps": total_steps} if total_steps else {})
    curve = name == CURVE_CONFIG
    reports = [{"name": name, "env": spec["env_id"], "total_steps": spec["total_steps"],
                "hyperparameters": {k: v for k, v in spec.items() if k not in ("env_id", "total_steps")} | COMMON,
                "ppo_np_envs": e, "warmup": warm_up(spec, e, vs_sb3 and i == 0)} for i, e in enumerate(envs)]
    ours, theirs, parts = [[] for _ in envs], [], [[] for _ in envs]
    rates = [None for _ in envs]
    for seed in range(seeds):
        sides = [("ppo_np", i) for i in range(len(envs))] + ([("sb3", None)] if vs_sb3 else [])
        for side, i in (sides if seed % 2 == 0 else sides[::-1]):
            if side == "sb3":
                theirs.append(run_sb3(spec, seed, curve))
                row = theirs[-1]
            else:
                row, agent = run_ppo_np(spec, seed, envs[i], curve and i == 0)
                ours[i].append(row)
                if breakdown:
                    if rates[i] is None:
                        rates[i] = matmul_limit(mlp_layers(agent), spec["minibatch_size"], agent.config.dtype)
                        rates[i]["loss_call_s"] = loss_call_time(agent, spec["minibatch_size"])
                    parts[i].append(breakdown_row(agent, spec, row["learn_wall_s"], seed, rates[i]))
                side = f"ppo_np {envs[i]['env_backend']}"
            log(f"{name} seed {seed} {side}: {row['wall_s']:.1f} s, {row['steps_per_s']:.0f} steps/s, "
                f"return {row['final_return']:.1f} (load {load_average()})")
    for report, runs, config_parts, rate in zip(reports, ours, parts, rates):
        report["ppo_np"] = side_summary(runs)
        if vs_sb3:
            report["sb3"] = side_summary(theirs)
            ratios = [t["wall_s"] / o["wall_s"] for o, t in zip(runs, theirs)]
            report["wall_ratio_sb3_over_ppo_np"] = {"per_seed": [round(r, 2) for r in ratios],
                                                    "median": round(statistics.median(ratios), 2)}
        if breakdown:
            report["breakdown"] = summarise_breakdown(config_parts, rate)
            rollout = report["breakdown"].get("rollout")
            if vs_sb3 and rollout and rollout["random_action_s"] > 0:
                # the best ratios ppo-np could reach if all but stepping its env (random actions) cost
                # nothing; if all but that and its minibatch phase's matrix products cost nothing; and if
                # all but that env and its loss calls, each as fast as measured alone, cost nothing
                sb3_wall = report["sb3"]["wall_s"]["median"]
                ratio = report["wall_ratio_sb3_over_ppo_np"]
                minibatch = report["breakdown"]["minibatch"]
                ratio["ceiling_env_only"] = round(sb3_wall / rollout["random_action_s"], 1)
                ratio["ceiling_env_and_matmul"] = round(sb3_wall / (rollout["random_action_s"] + minibatch["limit_s"]), 1)
                ratio["ceiling_env_and_loss_calls"] = round(
                    sb3_wall / (rollout["random_action_s"] + minibatch["loss_calls_alone_s"]), 1)
    curves = {"ppo_np": [r.get("curve") for r in ours[0]]}
    if vs_sb3:
        curves["sb3"] = [r.get("curve") for r in theirs]
    return reports, (curves if curve else {})


def label(config: dict) -> str:
    """A config's name in the tables, with the env backend when it is not gymnasium's."""
    backend = config.get("ppo_np_envs", {}).get("env_backend", "gymnasium")
    return config["name"] if backend == "gymnasium" else f"{config['name']} ({backend})"


def plot(curves: dict, path: str) -> None:
    """Return (running mean of 100 episodes) against wall-clock seconds, one line per seed and side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for side, color, label in (("ppo_np", "tab:blue", "ppo-np"), ("sb3", "tab:orange", "SB3")):
        for i, points in enumerate(curves.get(side) or []):
            pts = [(t, r) for t, _, r in points or [] if math.isfinite(r)]
            if pts:
                ax.plot(*zip(*pts), color=color, alpha=0.8, lw=1.2, label=label if i == 0 else None)
    ax.axhline(SOLVED, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("wall-clock seconds since learn() started (1 thread)")
    ax.set_ylabel(f"mean return, last {CURVE_WINDOW} training episodes")
    ax.set_title(f"{CURVE_CONFIG}: CartPole-v1, same hyperparameters, one line per seed")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(report: dict) -> str:
    """Results (and the breakdown) as markdown tables, the machine under them."""
    vs = report["vs"] == "sb3"
    head = "| config | env | steps | ppo-np wall (s) | ppo-np steps/s | ppo-np return |"
    rule = "|---|---|---:|---:|---:|---:|"
    if vs:
        head += " SB3 wall (s) | SB3 steps/s | SB3 return | SB3 / ppo-np wall |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for c in report["configs"]:
        o = c["ppo_np"]
        line = (f"| {label(c)} | {c['env']} | {c['total_steps'] // 1000}k | {o['wall_s']['median']:.1f} | "
                f"{o['steps_per_s']['median']:,.0f} | "
                f"{o['final_return']['mean']:.1f} ± {o['final_return']['std']:.1f} |")
        if vs:
            s = c["sb3"]
            ratio = c["wall_ratio_sb3_over_ppo_np"]
            ceilings = [f"{label} {ratio[key]:.1f}x" for key, label in (("ceiling_env_only", "env"),
                                                                       ("ceiling_env_and_matmul", "env + matmul"),
                                                                       ("ceiling_env_and_loss_calls", "env + loss"))
                        if key in ratio]
            ceiling = f" (ceilings: {', '.join(ceilings)})" if ceilings else ""
            line += (f" {s['wall_s']['median']:.1f} | {s['steps_per_s']['median']:,.0f} | "
                     f"{s['final_return']['mean']:.1f} ± {s['final_return']['std']:.1f} | "
                     f"{c['wall_ratio_sb3_over_ppo_np']['median']:.1f}x{ceiling} |")
        lines.append(line)
    parts = [c for c in report["configs"] if c.get("breakdown", {}).get("phase_times_s")]
    if parts:
        lines += ["", "| config | " + " | ".join(PHASES) + " | other | rollout / random-action env | "
                  "minibatch / matmul floor | loss call alone / its matmul floor |",
                  "|---|" + "---:|" * (len(PHASES) + 4)]
        for c in parts:
            b = c["breakdown"]
            mb = b["minibatch"]
            cells = (f"{b['phase_times_s'][k]:.2f} s ({b['phase_fractions'][k]:.0%})" for k in (*PHASES, "other"))
            loss_call = (f"{mb['loss_call_alone_us']:.0f} / {mb['matmul_floor_per_call_us']:.0f} us"
                         if "loss_call_alone_us" in mb else "not measured")     # runs saved before it was
            lines.append(f"| {label(c)} | " + " | ".join(cells)
                         + f" | {b['rollout']['ratio']:.1f}x | {mb['ratio']:.1f}x | {loss_call} |")
    m, v = report["machine"], report["versions"]
    lines += ["", f"Wall time and steps/s: median over {report['seeds']} seeds; return: {EVAL_EPISODES} deterministic "
              f"evaluation episodes per seed, mean ± std over seeds. One thread per side. {m['cpu']} "
              f"({m['logical_cpus']} logical CPUs), Python {m['python']}, "
              + ", ".join(f"{k} {val}" for k, val in v.items() if val)
              + f"; load average {m['load_average_start']} at start, {report['load_average_end']} at end."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. K-1 per config and side")
    parser.add_argument("--vs", choices=("none", "sb3"), default="none", help="also train Stable-Baselines3's PPO")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of markdown tables")
    parser.add_argument("--plot", metavar="PNG", help=f"plot return against wall-clock time of {CURVE_CONFIG}")
    parser.add_argument("--curves", metavar="FILE", help=f"write the {CURVE_CONFIG} curves as JSON")
    parser.add_argument("--breakdown", action="store_true",
                        help="ppo-np's time per phase, against two limits, and one loss call timed alone")
    parser.add_argument("--vectorization", default="auto", choices=("auto", "native", "sync", "async"),
                        help="ppo-np's vector env (auto: gymnasium's native one where it exists)")
    parser.add_argument("--env-backend", default="gymnasium",
                        help="ppo-np's environments, comma-separated: gymnasium's, and/or numba: the compiled "
                        "ports of classic control (every config's env has one), each against the same SB3 runs")
    parser.add_argument("--total-steps", type=int, default=None,
                        help="steps per run for every config, for a quick check (default: each config's own)")
    add_output_options(parser)
    args = parser.parse_args(argv)
    if args.from_json:
        return print_saved_run(args.from_json, markdown)
    names = parse_list(args.configs)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    backends = parse_list(args.env_backend)
    if not backends or any(b not in ("gymnasium", "numba") for b in backends):
        parser.error(f"--env-backend takes gymnasium and/or numba, got {args.env_backend!r}")

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    vs = args.vs
    skipped = None
    if vs == "sb3":
        skipped = sb3_available()
        if skipped:
            log(f"skipping the SB3 side: {skipped}")
            vs = "none"
        else:
            import torch
            torch.set_num_threads(1)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass
    report = machine_info(extra=("torch", "stable_baselines3"))
    report.update(benchmark="train", vs=vs, seeds=args.seeds,
                  evaluation={"episodes": EVAL_EPISODES, "deterministic": True,
                              "seed": f"{EVAL_SEED} + training seed, same on both sides"},
                  threads={"numba": os.environ["NUMBA_NUM_THREADS"], "blas": 1,
                           "torch": __import__("torch").get_num_threads() if vs == "sb3" else None},
                  configs=[])
    if skipped:
        report["sb3_skipped"] = skipped
    all_curves = {}
    for name in names:
        envs = [{"vectorization": args.vectorization, "env_backend": backend} for backend in backends]
        config_reports, curves = bench_config(name, args.seeds, vs == "sb3", envs, args.breakdown, log,
                                              args.total_steps)
        report["configs"].extend(config_reports)
        all_curves.update(curves)
    report["load_average_end"] = load_average()
    if args.plot:
        if all_curves:
            plot(all_curves, args.plot)
            log(f"wrote {args.plot}")
        else:
            log(f"no plot: {CURVE_CONFIG} was not run")
    if args.curves and all_curves:
        with open(args.curves, "w") as f:
            json.dump({"config": CURVE_CONFIG, "columns": ["wall_s", "step", f"mean_return_last_{CURVE_WINDOW}"],
                       **all_curves}, f)
    print(json.dumps(report) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
