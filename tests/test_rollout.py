"""Rollout collection on a toy environment whose values are known: autoreset, truncation, termination.

The toy env counts: observation [t] at step t, reward 1 every step. Episodes end at step L either by
termination or by truncation. With a critic stub V(s) = 10 s, every bootstrap value is known, so the
advantages of the steps around an episode boundary can be written down exactly.
"""
import gymnasium as gym
import numpy as np
import pytest

from ppo_np import kernels
from ppo_np.normalize import ObsNormalizer, RewardScaler
from ppo_np.rollout import Collector, RolloutBuffer, check_spaces, make_vector_env


class CountingEnv(gym.Env):
    """obs = [t]; reward 1; the episode ends after ``length`` steps, terminated or truncated."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int, ending: str):
        self.length, self.ending, self.t = length, ending, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.length
        return (np.array([self.t], np.float32), 1.0, end and self.ending == "terminated",
                end and self.ending == "truncated", {})


class FixedActor:
    """Always action 0 with log-probability log(1/2)."""

    def act(self, obs, rng, temperature=1.0):
        n = obs.shape[0]
        return np.zeros(n, np.int64), np.full(n, np.log(0.5)), np.zeros((n, 2))


class TenTimesCritic:
    """V(s) = 10 s."""

    def __call__(self, obs):
        return 10.0 * obs[:, 0]


def collect(length: int, ending: str, T: int, N: int = 2) -> RolloutBuffer:
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(length, ending) for _ in range(N)])
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False),
                          reward_scaler=RewardScaler(N, 0.99, 10.0, False))
    buf = RolloutBuffer.allocate(T, N, 1, (), 2, np.float64)
    collector.collect(FixedActor(), TenTimesCritic(), buf, np.random.default_rng(0), 1.0)
    envs.close()
    return buf


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_reset_step_is_masked_and_boundary_bootstraps_only_on_truncation(ending):
    L, T, gamma, lam = 3, 8, 0.9, 0.95
    buf = collect(L, ending, T)
    # steps 0..2 are the episode, step 3 is the reset step, steps 4..6 the next episode, 7 reset
    np.testing.assert_array_equal(buf.valid[:, 0], [True, True, True, False, True, True, True, False])
    np.testing.assert_array_equal(buf.obs[:, 0, 0], [0, 1, 2, 3, 0, 1, 2, 3])
    flag = buf.terminated if ending == "terminated" else buf.truncated
    assert flag[2, 0] and flag[6, 0]
    next_values = buf.next_values()
    assert next_values[2, 0] == 30.0  # V(final observation [3]), never V(reset observation [0])

    adv, _ = kernels.gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated, gamma, lam)
    bootstrap = 30.0 if ending == "truncated" else 0.0
    # the last step of the episode: delta = 1 + gamma * bootstrap - V(s=2)
    assert adv[2, 0] == pytest.approx(1.0 + gamma * bootstrap - 20.0)
    # one step earlier chains through it: delta_1 + gamma * lambda * A_2
    assert adv[1, 0] == pytest.approx(1.0 + gamma * 20.0 - 10.0 + gamma * lam * adv[2, 0])


def test_episode_statistics_count_only_real_steps():
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(3, "truncated") for _ in range(2)])
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False),
                          reward_scaler=RewardScaler(2, 0.99, 10.0, False))
    buf = RolloutBuffer.allocate(8, 2, 1, (), 2, np.float64)
    collector.collect(FixedActor(), TenTimesCritic(), buf, np.random.default_rng(0), 1.0)
    envs.close()
    assert collector.drain_episodes() == [(3.0, 3)] * 4
    assert collector.drain_episodes() == []


def test_unknown_env_and_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_vector_env("NoSuchEnv-v0", 1)
    with pytest.raises(ValueError, match="observation space"):
        check_spaces("X", gym.spaces.Discrete(3), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="action space"):
        check_spaces("X", gym.spaces.Box(-1, 1, (2,)), gym.spaces.MultiDiscrete([2, 2]))


def test_auto_vectorization_takes_native_from_four_envs_on():
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    for n, native in ((1, False), (3, False), (4, True), (8, True)):
        envs = make_vector_env("CartPole-v1", n)
        assert isinstance(envs.unwrapped, CartPoleVectorEnv) == native, n
        envs.close()
    assert isinstance(make_vector_env("CartPole-v1", 1, "native").unwrapped, CartPoleVectorEnv)
    with pytest.raises(ValueError, match="Pendulum-v1 has no native"):
        make_vector_env("Pendulum-v1", 2, "native")


def test_reward_scaling_statistics_see_only_real_transitions():
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(3, "truncated") for _ in range(2)])
    scaler = RewardScaler(2, 0.99, 10.0, True)
    scaler.returns[:] = 5.0  # left over from a previous run: a fresh collector restarts every episode
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False), reward_scaler=scaler)
    assert np.all(scaler.returns == 0.0)
    buf = RolloutBuffer.allocate(8, 2, 1, (), 2, np.float64)
    collector.collect(FixedActor(), TenTimesCritic(), buf, np.random.default_rng(0), 1.0)
    envs.close()
    # 8 steps of 2 envs, of which 2 per env are reset steps: 12 real transitions entered Var[G]
    assert scaler.rms.count == pytest.approx(12 + 1e-4)
    g = np.array([1.0, 1.99, 1 + 0.99 * 1.99])  # G within an episode of three unit rewards
    np.testing.assert_allclose(scaler.rms.mean, np.tile(g, 4).mean(), rtol=1e-3)
