r"""Collecting rollouts from gymnasium 1.x vector environments into preallocated (T, N) buffers.

Autoreset. gymnasium's vector envs (the native CartPole one included) reset an environment on the
step *after* its episode ended ("next-step" autoreset): the step that returned terminated or
truncated also returned the episode's *final* observation, and the next ``step`` ignores that
environment's action and returns the reset observation with reward 0. So, for env n:

    row t   (terminated_t or truncated_t):  s_{t+1} in the next row is the final observation, and
                                            V(s_{t+1}) is exactly the bootstrap value a truncated
                                            episode needs (a terminated one uses none);
    row t+1 (the reset step):               not a transition of the MDP. It is stored, marked
                                            ``valid = False``, and never trained on.

Hence next_values[t] = values[t + 1] for every row, and V(s_T) of the observation after the last row.
No value of a reset observation is ever used as a bootstrap, and no reset step is ever a sample.

Everything is batched over the N environments: one policy and one value forward per vector step,
no Python loop over environments.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from ppo_np.normalize import ObsNormalizer, RewardScaler

VECTORIZE_MODES = {"native": "vector_entry_point", "sync": "sync", "async": "async"}
# A native vector env pays a fixed cost per step that a sync one pays per env: measured on
# CartPole-v1, native 75 us at N = 1 and 80 us at N = 8, sync 28 us and 132 us. "auto" takes the
# native one from this many envs on.
NATIVE_MIN_ENVS = 4


def make_vector_env(env_id: str, num_envs: int, vectorization: str = "auto") -> gym.vector.VectorEnv:
    """``gymnasium.make_vec``; "auto" takes the native vectorised env where one exists and N >= 4.

    Raises a ValueError naming the env id (unknown id) or the space (unsupported spaces).
    """
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"unknown environment id {env_id!r}: {exc}") from None
    if vectorization == "auto":
        native = spec.vector_entry_point is not None and num_envs >= NATIVE_MIN_ENVS
        vectorization = "native" if native else "sync"
    if vectorization not in VECTORIZE_MODES:
        raise ValueError(f"vectorization must be auto, native, sync or async; got {vectorization!r}")
    if vectorization == "native" and spec.vector_entry_point is None:
        raise ValueError(f"{env_id} has no native vectorised implementation; use sync or async")
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=VECTORIZE_MODES[vectorization])
    try:
        check_spaces(env_id, envs.single_observation_space, envs.single_action_space)
        mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:  # the masking and bootstrapping below assume it
            raise ValueError(f"{env_id}: autoreset mode {mode} is not supported; ppo-np needs next-step autoreset")
    except ValueError:
        envs.close()
        raise
    return envs


def check_spaces(env_id: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Allowed: a 1-D Box of observations; Discrete or 1-D Box actions."""
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise ValueError(f"{env_id}: observation space {obs_space} is not supported; ppo-np needs a 1-D Box "
                         "(flatten images or dicts with a gymnasium wrapper first)")
    if isinstance(action_space, gym.spaces.Discrete):
        return
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return
    raise ValueError(f"{env_id}: action space {action_space} is not supported; ppo-np needs Discrete or a 1-D Box")


@dataclass
class RolloutBuffer:
    """One rollout of T steps of N envs. Arrays are (T, N, ...); rows are time, columns environments."""

    obs: np.ndarray          # (T, N, obs_dim) normalised observations the policy saw
    actions: np.ndarray      # (T, N) int64 or (T, N, act_dim) unclipped samples
    logp: np.ndarray         # (T, N) log pi_old(a|s) of the tempered policy that acted
    dist_out: np.ndarray     # (T, N, K or act_dim) the old policy's logits or means, for exact KL
    values: np.ndarray       # (T, N) V(s_t)
    rewards: np.ndarray      # (T, N) rewards fed to the update (scaled if reward scaling is on)
    terminated: np.ndarray   # (T, N) bool
    truncated: np.ndarray    # (T, N) bool
    valid: np.ndarray        # (T, N) bool: False on the vector env's reset steps
    last_values: np.ndarray  # (N,) V(s_T) after the last row

    @classmethod
    def allocate(cls, T: int, N: int, obs_dim: int, action_shape: tuple, dist_dim: int, dtype) -> "RolloutBuffer":
        action_dtype = np.int64 if action_shape == () else dtype
        return cls(obs=np.zeros((T, N, obs_dim), dtype), actions=np.zeros((T, N, *action_shape), action_dtype),
                   logp=np.zeros((T, N), dtype), dist_out=np.zeros((T, N, dist_dim), dtype),
                   values=np.zeros((T, N), dtype), rewards=np.zeros((T, N), dtype),
                   terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool),
                   valid=np.zeros((T, N), bool), last_values=np.zeros(N, dtype))

    def next_values(self) -> np.ndarray:
        """V(s_{t+1}) for every row: the next row's value, and ``last_values`` after the last row."""
        return np.concatenate([self.values[1:], self.last_values[None]], axis=0)  # (T, N)


class Collector:
    """Steps a vector env with the current policy; keeps what carries over between rollouts.

    Carried over: the current observation, which envs reset on the next step, running episode
    returns and lengths, and the normalisers (owned by the agent, passed in).
    """

    def __init__(self, envs: gym.vector.VectorEnv, seed: int, obs_norm: ObsNormalizer, reward_scaler: RewardScaler,
                 phase_times: dict[str, float] | None = None):
        self.envs = envs
        self.phase_times = phase_times if phase_times is not None else {}  # seconds per phase, accumulated
        self.obs_norm, self.reward_scaler = obs_norm, reward_scaler
        self.discrete = isinstance(envs.single_action_space, gym.spaces.Discrete)
        if not self.discrete:
            self.action_low = envs.single_action_space.low
            self.action_high = envs.single_action_space.high
        obs, _ = envs.reset(seed=seed)
        self.obs = obs                                   # (N, obs_dim) raw observation
        reward_scaler.returns[:] = 0.0                   # every episode starts here, so does its return G
        self.resetting = np.zeros(envs.num_envs, bool)   # True: the next step is a reset step
        self.episode_return = np.zeros(envs.num_envs)    # raw (unscaled) running return
        self.episode_length = np.zeros(envs.num_envs, np.int64)
        self.finished: list[tuple[float, int]] = []      # (return, length) of episodes ended since last drain

    def collect(self, actor, critic, buf: RolloutBuffer, rng: np.random.Generator, temperature: float) -> None:
        """Fill ``buf`` with T vector steps of the current policy."""
        T = buf.obs.shape[0]
        clock = time.perf_counter
        inference = env_step = storage = 0.0
        for t in range(T):
            t0 = clock()
            obs = self.obs_norm(self.obs, update=True).astype(buf.obs.dtype, copy=False)  # (N, obs_dim), cast once
            actions, logp, dist_out = actor.act(obs, rng, temperature=temperature)
            values = critic(obs)                                     # (N,)
            env_actions = actions if self.discrete else np.clip(actions, self.action_low, self.action_high)
            t1 = clock()
            next_obs, rewards, terminated, truncated, _ = self.envs.step(env_actions)
            t2 = clock()

            valid = ~self.resetting
            done = (terminated | truncated) & valid
            self.episode_return += rewards * valid
            self.episode_length += valid
            buf.obs[t] = obs
            buf.actions[t] = actions
            buf.logp[t] = logp
            buf.dist_out[t] = dist_out
            buf.values[t] = values
            buf.rewards[t] = self.reward_scaler(rewards * valid, done, valid, update=True)
            buf.terminated[t] = terminated | ~valid   # a reset row ends nothing real; keep it from chaining
            buf.truncated[t] = truncated
            buf.valid[t] = valid
            self._record_finished(done)
            self.obs, self.resetting = next_obs, done
            t3 = clock()
            inference += t1 - t0
            env_step += t2 - t1
            storage += t3 - t2
        t0 = clock()
        buf.last_values[:] = critic(self.obs_norm(self.obs, update=False))
        inference += clock() - t0
        for phase, seconds in (("inference", inference), ("env_step", env_step), ("storage", storage)):
            self.phase_times[phase] = self.phase_times.get(phase, 0.0) + seconds

    def _record_finished(self, done: np.ndarray) -> None:
        for n in np.flatnonzero(done):
            self.finished.append((float(self.episode_return[n]), int(self.episode_length[n])))
        self.episode_return[done] = 0.0
        self.episode_length[done] = 0

    def drain_episodes(self) -> list[tuple[float, int]]:
        """The (return, length) of every episode finished since the last call."""
        finished, self.finished = self.finished, []
        return finished
