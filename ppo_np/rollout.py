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

Two collectors fill the same buffers with the same numbers. ``Collector`` steps any gymnasium vector
env from Python, one compiled act and one env step per vector step. ``CompiledCollector`` runs a
whole rollout of a compiled classic-control env (``classic_control.NumbaVectorEnv``) in one call of
``rollout_kernel``: the policy's draws taken from the generator up front (the same numbers in the same
order as T steps draw them), then act, env step, bookkeeping and normalisation T times with no Python
in between; it returns to Python only to draw more initial states ahead (``ResetQueue``).
``tests/test_rollout.py`` holds the two equal, bit for bit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from ppo_np.classic_control import NumbaVectorEnv, resets_short, vector_step
from ppo_np.heads import PolicyHead
from ppo_np.heads.base import act_step
from ppo_np.jit import jit, plain
from ppo_np.normalize import EPS, ObsNormalizer, RewardScaler, normalize_obs_kernel, scale_rewards_kernel


@dataclass
class RolloutBuffer:
    """One rollout of T steps of N envs. Arrays are (T, N, ...); rows are time, columns environments."""

    obs: np.ndarray          # (T, N, obs_dim) normalised observations the policy saw
    actions: np.ndarray      # (T, N, *action_shape) the samples as the head stores them (unclipped)
    logp: np.ndarray         # (T, N) log pi_old(a|s) of the tempered policy that acted
    dist_out: np.ndarray     # (T, N, dist_dim) the old policy's y (heads/base.py), for the exact KL
    values: np.ndarray       # (T, N) V(s_t)
    rewards: np.ndarray      # (T, N) rewards fed to the update (scaled if reward scaling is on)
    terminated: np.ndarray   # (T, N) bool
    truncated: np.ndarray    # (T, N) bool
    valid: np.ndarray        # (T, N) bool: False on the vector env's reset steps
    last_values: np.ndarray  # (N,) V(s_T) after the last row

    @classmethod
    def allocate(cls, T: int, N: int, obs_dim: int, head: PolicyHead, dtype) -> "RolloutBuffer":
        return cls(obs=np.zeros((T, N, obs_dim), dtype),
                   actions=np.zeros((T, N, *head.action_shape), head.action_dtype(dtype)),
                   logp=np.zeros((T, N), dtype), dist_out=np.zeros((T, N, head.dist_dim), dtype),
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
        obs, _ = envs.reset(seed=seed)
        self.obs = obs                                   # (N, obs_dim) raw observation
        reward_scaler.returns[:] = 0.0                   # every episode starts here, so does its return G
        self.resetting = np.zeros(envs.num_envs, bool)   # True: the next step is a reset step
        self.episode_return = np.zeros(envs.num_envs)    # raw (unscaled) running return
        self.episode_length = np.zeros(envs.num_envs, np.int64)
        self.finished: list[tuple[float, int]] = []      # (return, length) of episodes ended since last drain

    def collect(self, actor, critic, buf: RolloutBuffer, rng: np.random.Generator, temperature: float) -> None:
        """Fill ``buf`` with T vector steps of the current policy.

        Per step: the observation into its row, then one compiled call that acts and evaluates the
        critic into the rows of ``buf`` (the head's ``act``, whose references are ``Actor.act`` and
        ``Critic.__call__``: the same draws from ``rng``, the same actions), the env step, and one
        compiled call for the bookkeeping (``record_step_kernel``).
        """
        T, N = buf.obs.shape[:2]
        clock = time.perf_counter
        inference = env_step = storage = 0.0
        head, params, networks = actor.head, actor.head_params, plain((actor.mlp.network, critic.mlp.network))
        masked_rewards, done, finished = np.zeros(N), np.zeros(N, bool), np.zeros((N, 2))
        episodes = (self.resetting, self.episode_return, self.episode_length)       # an Episodes, plain
        for t in range(T):
            t0 = clock()
            buf.obs[t] = self.obs_norm(self.obs, update=True)           # (N, obs_dim), cast to the buffer's dtype
            rows = (buf.dist_out[t], buf.actions[t], buf.logp[t], buf.values[t].reshape(N, 1))  # an ActRows, plain
            env_actions = head.act(networks, params, buf.obs[t], rng, temperature, rows)
            t1 = clock()
            next_obs, rewards, terminated, truncated, _ = self.envs.step(env_actions)
            t2 = clock()

            n_finished = record_step_kernel((rewards, terminated, truncated), episodes,
                                            (masked_rewards, done, buf.terminated[t], buf.truncated[t], buf.valid[t]),
                                            finished)
            buf.rewards[t] = self.reward_scaler(masked_rewards, done, buf.valid[t], update=True)
            if n_finished:
                self.finished.extend((float(r), int(n)) for r, n in finished[:n_finished])
            self.obs = next_obs
            t3 = clock()
            inference += t1 - t0
            env_step += t2 - t1
            storage += t3 - t2
        t0 = clock()
        buf.last_values[:] = critic(self.obs_norm(self.obs, update=False))
        inference += clock() - t0
        for phase, seconds in (("inference", inference), ("env_step", env_step), ("storage", storage)):
            self.phase_times[phase] = self.phase_times.get(phase, 0.0) + seconds

    def drain_episodes(self) -> list[tuple[float, int]]:
        """The (return, length) of every episode finished since the last call."""
        finished, self.finished = self.finished, []
        return finished


class CompiledCollector(Collector):
    """``Collector`` for a ``NumbaVectorEnv``, a rollout per call of ``rollout_kernel`` (module docstring);
    its time goes to the phase "rollout"."""

    def __init__(self, envs: NumbaVectorEnv, seed: int, obs_norm: ObsNormalizer, reward_scaler: RewardScaler,
                 phase_times: dict[str, float] | None = None):
        if not isinstance(envs, NumbaVectorEnv):
            raise ValueError(f"the compiled rollout steps a classic_control.NumbaVectorEnv, got {type(envs).__name__}")
        super().__init__(envs, seed, obs_norm, reward_scaler, phase_times)

    def collect(self, actor, critic, buf: RolloutBuffer, rng: np.random.Generator, temperature: float) -> None:
        """Fill ``buf`` as ``Collector.collect`` does, the T steps in compiled code."""
        start = time.perf_counter()
        T, N = buf.obs.shape[:2]
        head = actor.head
        noise = head.noise(rng, T * N)                     # the draws of T calls of head.noise(rng, N), in order
        env_actions = head.env_action_buffer(N)
        obs_norm, scaler = self.obs_norm, self.reward_scaler
        acting = (head.compiled_policy(actor.head_params), plain((actor.mlp.network, critic.mlp.network)),
                  noise.reshape((T, N) + noise.shape[1:]), float(temperature), env_actions)
        rows = (buf.obs, buf.actions, buf.logp, buf.dist_out, buf.values, buf.rewards, buf.terminated,
                buf.truncated, buf.valid)
        finished = np.zeros((T * N, 2))
        episodes = (self.resetting, self.episode_return, self.episode_length, finished)
        scratch = (np.zeros(N), np.zeros(N, bool))
        t = n_finished = 0
        while True:
            obs_args = (obs_norm.enabled, obs_norm.rms.moments(), (obs_norm.clip, EPS))
            reward_args = (scaler.enabled, scaler.returns, scaler.rms.moments(), (scaler.gamma, scaler.clip, EPS))
            t, n_finished, obs_norm.rms.count, scaler.rms.count = rollout_kernel(
                t, self.envs.kernel_args(env_actions.dtype), acting, rows, (*episodes, n_finished), obs_args,
                reward_args, scratch)
            if t == T:
                break
            self.envs.refill_resets()                      # an env to reset has no initial state drawn ahead
        self.finished.extend((float(r), int(n)) for r, n in finished[:n_finished])
        self.obs = self.envs.observations()
        buf.last_values[:] = critic(self.obs_norm(self.obs, update=False))
        self.phase_times["rollout"] = self.phase_times.get("rollout", 0.0) + time.perf_counter() - start


@jit
def rollout_kernel(t_start, vector_env, acting, rows, episodes, obs_norm, reward_scaling, scratch):
    """Steps t_start .. T-1 of ``CompiledCollector.collect``: per step what ``Collector.collect`` does, in
    its order. Returns (the step it stopped before: T, or one with an env to reset and no initial state
    drawn ahead; the count of finished episodes; the two normalisers' counts).

    vector_env = ``NumbaVectorEnv.kernel_args``: (spec, env, queue), the current raw observations env[1];
    acting = (``compiled_policy``, (actor, critic) networks, noise (T, N, ...), tau, env_actions (N, ...));
    rows = the buffer's (obs, actions, logp, dist_out, values, rewards, terminated, truncated, valid);
    episodes = (resetting, episode_return, episode_length, finished (T N, 2), finished so far);
    obs_norm = (enabled, (mean, var, count), (clip, eps)); reward_scaling = (enabled, returns G,
    (mean, var, count), (gamma, clip, eps)); scratch = (masked rewards, done) (N,).
    Checked against ``Collector.collect`` by ``tests/test_rollout.py::test_the_compiled_rollout_is_the_python_one``.
    """
    spec, env, queue = vector_env
    policy, networks, noise, tau, env_actions = acting
    obs_rows, actions, logp, dist_out, values, rewards, terminated, truncated, valid = rows
    resetting, episode_return, episode_length, finished, n_finished = episodes
    normalize_obs, (obs_mean, obs_var, obs_count), obs_bounds = obs_norm
    scale_rewards, returns, (ret_mean, ret_var, ret_count), ret_bounds = reward_scaling
    masked_rewards, done = scratch
    raw_obs = env[1]
    T, N = values.shape
    for t in range(t_start, T):
        if resets_short(env, queue):
            return t, n_finished, obs_count, ret_count
        if normalize_obs:
            obs_count = normalize_obs_kernel(raw_obs, (obs_mean, obs_var, obs_count), obs_bounds, True, obs_rows[t])
        else:
            obs_rows[t, :, :] = raw_obs
        act_step(policy, obs_rows[t], networks, noise[t], tau,
                 (dist_out[t], actions[t], logp[t], values[t].reshape((N, 1))), env_actions)
        vector_step(spec, env, queue, env_actions)
        n_finished += record_step_kernel((env[2], env[3], env[4]), (resetting, episode_return, episode_length),
                                         (masked_rewards, done, terminated[t], truncated[t], valid[t]),
                                         finished[n_finished:])
        if scale_rewards:
            ret_count = scale_rewards_kernel((masked_rewards, done, valid[t]), returns, (ret_mean, ret_var, ret_count),
                                             ret_bounds, True, rewards[t])
        else:
            rewards[t, :] = masked_rewards
    return T, n_finished, obs_count, ret_count


# --- the compiled bookkeeping of ``Collector.collect`` ------------------------------------------------

class EnvStep(NamedTuple):
    """What one vector step returned, per env (N,): rewards, terminated, truncated."""

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class Episodes(NamedTuple):
    """What carries over between steps, per env (N,): whether the next step is a reset step, and the
    running episode's raw return and length."""

    resetting: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray


class StepRows(NamedTuple):
    """Where one step's bookkeeping goes, per env (N,): the rewards masked on reset steps, whether an
    episode ended, and the buffer's terminated, truncated and valid rows."""

    masked_rewards: np.ndarray
    done: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    valid: np.ndarray


def record_step_reference(step, episodes):
    """The specification of ``record_step_kernel``, in NumPy: returns (masked rewards, done, the buffer's
    terminated, truncated and valid rows, finished (return, length) pairs), updating ``episodes``
    (an ``Episodes``) in place."""
    rewards, terminated, truncated = step
    resetting, episode_return, episode_length = episodes
    valid = ~resetting
    done = (terminated | truncated) & valid
    masked = rewards * valid
    episode_return += masked
    episode_length += valid
    finished = [(float(episode_return[n]), int(episode_length[n])) for n in np.flatnonzero(done)]
    episode_return[done] = 0.0
    episode_length[done] = 0
    resetting[:] = done
    return masked, done, terminated | ~valid, truncated.copy(), valid, finished


@jit
def record_step_kernel(step, episodes, rows, finished):
    """The bookkeeping after one vector step (``record_step_reference``), env by env: an ``EnvStep``, the
    ``Episodes`` (updated in place), the ``StepRows`` to write, all plain.

    valid = not resetting (a reset step is no transition), done = (terminated or truncated) and valid;
    the masked reward r * valid goes to the return; a reset row is marked terminated so that GAE
    never chains across it. Finished episodes' (return, length) go to the first rows of ``finished``
    (N, 2), their count is returned; then resetting = done for the next step.
    Checked by ``tests/test_rollout.py::test_record_step_kernel_matches_its_reference``.
    """
    rewards, terminated, truncated = step
    resetting, episode_return, episode_length = episodes
    masked_rewards, done, buf_terminated, buf_truncated, buf_valid = rows
    n_finished = 0
    for n in range(rewards.shape[0]):
        valid = not resetting[n]
        done[n] = (terminated[n] or truncated[n]) and valid
        masked_rewards[n] = rewards[n] if valid else 0.0
        episode_return[n] += masked_rewards[n]
        episode_length[n] += valid
        buf_terminated[n] = terminated[n] or not valid
        buf_truncated[n] = truncated[n]
        buf_valid[n] = valid
        if done[n]:
            finished[n_finished, 0] = episode_return[n]
            finished[n_finished, 1] = episode_length[n]
            n_finished += 1
            episode_return[n] = 0.0
            episode_length[n] = 0
        resetting[n] = done[n]
    return n_finished
