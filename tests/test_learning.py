"""Learning tests: fixed seeds, thresholds with margin. Each trains a real agent for a few seconds.

Measured when these were written (this machine, 1 BLAS thread): CartPole-v1 preset, seed 1, 100k
steps: evaluation 500.0 +- 0; the penalty variant, 50k steps: 500.0; Pendulum-v1 preset, 40,960
steps: evaluation -336 (a random policy scores about -1200).
"""
import pytest

from ppo_np import PPO, evaluate
from ppo_np.config import preset_for

pytestmark = pytest.mark.slow


def train(env_id: str, steps: int, **changes) -> PPO:
    agent = PPO(env_id, preset_for(env_id, continuous=env_id == "Pendulum-v1").replace(**changes))
    agent.learn(steps)
    agent.close()
    return agent


def test_cartpole_reaches_475_within_100k_steps():
    agent = train("CartPole-v1", 100_000, seed=1)
    assert evaluate(agent, episodes=20, seed=123)["mean_return"] >= 475


def test_ppo_penalty_learns_cartpole():
    agent = train("CartPole-v1", 50_000, seed=1, algo="penalty")
    assert evaluate(agent, episodes=20, seed=123)["mean_return"] >= 300


def test_pendulum_learns_measurably_in_a_short_run():
    agent = train("Pendulum-v1", 40_960, seed=0)
    assert evaluate(agent, episodes=10, seed=123)["mean_return"] >= -800
