"""Learning tests: fixed seeds, thresholds with margin. Each trains a real agent for a few seconds.

Measured when these were written (this machine, 1 BLAS thread): CartPole-v1 preset, seed 1, 100k
steps: evaluation 500.0 +- 0; the penalty variant, 50k steps: 500.0; Pendulum-v1 preset, 40,960
steps: evaluation -336 (a random policy scores about -1200).
"""
import gymnasium as gym
import numpy as np
import pytest

from custom_envs import CueDict
from ppo_np import PPO, PPOConfig, evaluate
from ppo_np.config import preset_for
from ppo_np.heads import Bernoulli, MultiCategorical

pytestmark = pytest.mark.slow


def train(env_id: str, steps: int, **changes) -> PPO:
    agent = PPO(env_id, preset_for(env_id, continuous=env_id == "Pendulum-v1").replace(**changes))
    agent.learn(steps)
    agent.close()
    return agent


def test_cartpole_reaches_475_within_100k_steps():
    agent = train("CartPole-v1", 100_000, seed=1)
    assert evaluate(agent, episodes=20, seed=123)["mean_return"] >= 475


def test_cartpole_on_the_compiled_port_reaches_475_within_100k_steps():
    agent = train("CartPole-v1", 100_000, seed=1, env_backend="numba")
    assert evaluate(agent, episodes=20, seed=123)["mean_return"] >= 475  # evaluated on gymnasium's own CartPole


def test_ppo_penalty_learns_cartpole():
    """The median of three seeds: at 50k steps about one seed in six is still below 350 (seeds 0-5 gave
    500 but for one at 233 or 345, the one moving with the last bits of the gradients), so one seed's
    return would test the seed."""
    returns = [evaluate(train("CartPole-v1", 50_000, seed=seed, algo="penalty"), episodes=20, seed=123)["mean_return"]
               for seed in (0, 1, 2)]
    assert np.median(returns) >= 300, returns


def test_pendulum_learns_measurably_in_a_short_run():
    agent = train("Pendulum-v1", 40_960, seed=0)
    assert evaluate(agent, episodes=10, seed=123)["mean_return"] >= -800


class SignsEnv(gym.Env):
    """A known optimum: each step shows signs in {-1, 1}, and the reward is the number of action
    dimensions equal to ``best(signs)``; 8 steps an episode."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.np_random.choice([-1.0, 1.0], size=self.observation_space.shape).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        reward = float(np.sum(np.asarray(action) == self.best(self.obs)))
        self.t += 1
        self.obs = self.np_random.choice([-1.0, 1.0], size=self.observation_space.shape).astype(np.float32)
        return self.obs, reward, False, self.t >= 8, {}


class MatchBits(SignsEnv):
    """MultiBinary(3): the best bit d is 1 exactly where sign d is positive; optimum 24, random 12."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def best(self, signs):
        return signs > 0


class PickValues(SignsEnv):
    """MultiDiscrete([3, 3]): the best value is 2 where the sign is positive, 0 where it is negative (1 is
    never best); optimum 16, random 16 / 3."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([3, 3])

    def best(self, signs):
        return np.where(signs > 0, 2, 0)


@pytest.mark.parametrize("env_class, head_class, threshold", [(MatchBits, Bernoulli, 23),
                                                              (PickValues, MultiCategorical, 15)])
def test_the_later_heads_learn_a_known_optimum(env_class, head_class, threshold):
    """15k steps reach the optimum (24, and 16) on every seed measured (0, 1, 2: +- 0 over 10 episodes);
    the threshold leaves one wrong dimension per episode."""
    agent = PPO(env_class, PPOConfig(seed=0, num_envs=4, num_steps=64, minibatch_size=64, update_epochs=4,
                                     learning_rate=3e-3, ent_coef=0.0))
    agent.learn(15_000)
    assert isinstance(agent.head, head_class)
    assert evaluate(agent, episodes=10, seed=123)["mean_return"] >= threshold


@pytest.mark.parametrize("env, env_kwargs, optimum", [(CueDict, None, 8.0),
                                                      ("Line-v0", {"length": 5, "discrete_obs": True}, -5.0)])
def test_dict_and_discrete_observations_learn_a_known_optimum(env, env_kwargs, optimum):
    """Dict observations (the cue a Discrete part, one-hot) and Discrete ones (the position, one-hot)
    reach the optimum in 10k steps at learning rate 1e-3, without advantage normalisation.

    With it, the line's seed 0 found the optimum, then lost it for good (-50, walking left until the
    time limit): at 3e-3 on an AMD EPYC, at 1e-3 on an Intel Xeon (whose float rounding differs), where
    seeds 1-3 and every seed 0-3 without it keep it. Once the policy is optimal the advantages are all
    ~0, and normalising them to unit variance turns their noise into full-size policy steps; what is
    tested here is the observation spaces, so the test leaves that out."""
    agent = PPO(env, PPOConfig(seed=0, num_envs=4, num_steps=64, minibatch_size=64, update_epochs=4,
                               learning_rate=1e-3, ent_coef=0.0, norm_adv=False), env_kwargs=env_kwargs)
    agent.learn(10_000)
    assert evaluate(agent, episodes=10, seed=123)["mean_return"] >= optimum - 0.5
