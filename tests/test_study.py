"""The study of a run's gradients: its statistics, on a problem whose true gradient is known in closed
form, and the command on a tiny run."""
import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import PPO, PPOConfig
from ppo_np.cli import main
from ppo_np.gradients import networks_as
from ppo_np.losses import Minibatch
from ppo_np.study import ALPHAS, collect_blocks, concentration, cosine, flat_policy_gradient, monte_carlo_returns

REWARDS = np.array([0.0, 1.0, 3.0])


class Bandit(gym.Env):
    """One step an episode from a constant observation; action a pays REWARDS[a] on average, plus N(0, 10^2)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.5, -0.5], np.float32), {}

    def step(self, action):
        reward = REWARDS[int(action)] + 10.0 * self.np_random.standard_normal()
        return np.array([0.5, -0.5], np.float32), float(reward), True, False, {}


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**16), K=st.integers(2, 6), P=st.integers(1, 20))
def test_the_statistics_of_estimates(seed, K, P):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(P) + 0.1
    assert cosine(g, g) == pytest.approx(1.0) and cosine(g, -g) == pytest.approx(-1.0)
    same = concentration(np.tile(g, (K, 1)))
    assert same["mean_pairwise_cosine"] == pytest.approx(1.0) and same["variance"] == pytest.approx(0.0, abs=1e-24)
    noisy = g + rng.standard_normal((K, P))
    stats = concentration(noisy)
    assert stats["variance"] == pytest.approx(np.mean(np.sum((noisy - noisy.mean(0)) ** 2, axis=1)))
    assert -1.0 <= stats["mean_pairwise_cosine"] <= 1.0


def test_estimates_concentrate_on_the_closed_form_gradient_as_samples_grow():
    """On the bandit, at r = 1, the surrogate's true gradient is -sum_a pi(a) (E R(a) - V) grad log pi(a):
    the head's gradient of a three-row batch, one row per action, weighted so. Estimates from more
    samples point closer to it, and closer to each other."""
    agent = PPO(Bandit, PPOConfig(num_envs=4, num_steps=16, minibatch_size=64, hidden_sizes=(8,), norm_adv=False))
    actor, critic = networks_as(agent)
    coefs = agent.loss_coefs()
    obs = np.tile([0.5, -0.5], (3, 1))
    y = actor.forward(obs)[0]
    pi = np.exp(agent.head.log_prob(y, np.arange(3), 1.0))
    value = float(critic(obs[:1])[0])
    exact = Minibatch(obs=obs, actions=np.arange(3), logp_old=np.log(pi), advantages=3 * pi * (REWARDS - value),
                      returns=np.zeros(3), values_old=np.zeros(3), dist_old=y)
    true = flat_policy_gradient(actor, critic, exact, coefs, normalize=False)

    blocks = collect_blocks(agent, 8 * 64, seed=0)   # 32 samples each: every other row is a reset step
    grads = np.stack([flat_policy_gradient(actor, critic, b, coefs, normalize=False) for b in blocks])
    by_size = {}
    for m in (1, 8, 64):
        est = np.stack([grads[k * m:(k + 1) * m].mean(axis=0) for k in range(8)])
        by_size[m] = (np.mean([cosine(e, true) for e in est]), concentration(est)["mean_pairwise_cosine"])
    assert by_size[1][0] < by_size[8][0] < by_size[64][0] and by_size[64][0] > 0.95
    assert by_size[1][1] < by_size[8][1] < by_size[64][1] and by_size[64][1] > 0.9


def test_monte_carlo_returns_stop_at_each_episode_end_and_leave_out_cut_tails():
    rewards = np.ones((6, 1))
    terminated = np.array([[0], [1], [0], [0], [0], [0]], bool)
    truncated = np.array([[0], [0], [0], [0], [1], [0]], bool)
    G, usable = monte_carlo_returns(rewards, terminated, truncated, gamma=0.5)
    np.testing.assert_allclose(G[:, 0], [1.5, 1.0, 1.75, 1.5, 1.0, 1.0])
    # ended by termination: usable; within 1/(1 - gamma) = 2 steps of the truncation, or unfinished: not
    assert usable[:, 0].tolist() == [True, True, True, False, False, False]


def test_the_study_command_on_a_tiny_run_writes_every_field(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run), "--json", "--no-progress",
                 "--num-envs", "2", "--num-steps", "16", "--minibatch-size", "16", "--hidden-sizes", "8,8",
                 "--eval-episodes", "1"]) == 0
    capsys.readouterr()
    argv = ["study", str(run), "--max-samples", "64", "--estimates", "3", "--value-steps", "300",
            "--landscape-episodes", "2", "--value-states", "16", "--value-rollouts", "2", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"env_id", "global_step", "update", "seed", "batch_size", "estimates", "parameters",
                           "samples_collected", "true_gradient_norm", "concentration", "minibatch_alignment", "value",
                           "true_value", "landscape"}
    assert set(result["true_value"]) == {"states", "rollouts_per_state", "mse_over_var_true_value", "correlation",
                                         "advantage_variance_learned_baseline", "advantage_variance_true_baseline",
                                         "gradient_variance_learned_baseline", "gradient_variance_true_baseline"}
    assert result["true_value"]["states"] == 16
    assert [r["batches"] for r in result["concentration"]] == [1, 2]
    assert set(result["concentration"][0]) == {"samples", "batches", "mean_pairwise_cosine", "variance",
                                               "relative_variance", "true_gradient_cosine"}
    assert set(result["value"]) == {"states", "mse", "mse_over_var_returns", "explained_variance",
                                    "advantage_variance_ratio", "gradient_variance_learned_baseline",
                                    "gradient_variance_no_baseline", "gradient_variance_ratio"}
    assert len(result["minibatch_alignment"]["cosines"]) == 2
    land = result["landscape"]
    assert land["alphas"] == list(ALPHAS) and land["step_norm"] > 0
    for name in ("update_step", "random"):
        assert len(land[name]["surrogate"]) == len(land[name]["true_return"]) == len(ALPHAS)
    # at alpha = 0 the parameters are the run's own: the same surrogate along both directions
    zero = ALPHAS.index(0.0)
    assert land["update_step"]["surrogate"][zero] == land["random"]["surrogate"][zero]
    assert json.loads((run / "study.json").read_text()) == result
    for name in ("study_concentration.png", "study_minibatches.png", "study_value.png", "study_landscape.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == result   # seeded: the same numbers again


def test_the_update_step_raises_the_surrogate_it_was_taken_on():
    """The replayed update ascends the surrogate of its batch: higher at alpha = 1 than at 0, and the
    random direction of the same norm moves it less."""
    from ppo_np.study import landscape

    agent = PPO("CartPole-v1", PPOConfig(num_envs=4, num_steps=64, minibatch_size=64, update_epochs=4,
                                         hidden_sizes=(16, 16), learning_rate=1e-3))
    agent.learn(1024)
    land = landscape(agent, agent.collect_batch(seed=3), episodes=1, seed=0)
    one, zero = ALPHAS.index(1.0), ALPHAS.index(0.0)
    gain = land["update_step"]["surrogate"][one] - land["update_step"]["surrogate"][zero]
    assert gain > 0
    assert abs(land["random"]["surrogate"][one] - land["random"]["surrogate"][zero]) < gain


def test_the_true_value_of_a_known_state_is_found_by_its_continuations():
    """On the bandit every state is the same, one step from the end: V^pi = sum_a pi(a) E R(a), which
    the mean of 64 continuations finds to within the noise of the rewards (sd 10 / sqrt(64))."""
    from ppo_np.study import estimate_true_values

    agent = PPO(Bandit, PPOConfig(num_envs=4, num_steps=16, minibatch_size=64, hidden_sizes=(8,), norm_adv=False))
    obs, actions, G, v_true = estimate_true_values(agent, states=8, rollouts=64, rng=np.random.default_rng(1))
    pi = np.exp(agent.head.log_prob(agent.actor.forward(obs.astype(np.float32))[0][:1].repeat(3, 0), np.arange(3), 1.0))
    expected = float(pi @ REWARDS)
    assert obs.shape == (8, 2) and actions.shape == (8,) and G.shape == v_true.shape == (8,)
    assert np.all(np.abs(v_true - expected) < 4 * np.sqrt(10.0**2 + np.var(REWARDS)) / 8)
    assert abs(v_true.mean() - expected) < 4 * 10.0 / np.sqrt(8 * 64)


def test_a_trpo_runs_landscape_follows_its_natural_gradient_step():
    from ppo_np.study import landscape

    agent = PPO("CartPole-v1", PPOConfig(num_envs=4, num_steps=64, minibatch_size=64, hidden_sizes=(16, 16),
                                         algo="trpo"))
    agent.learn(512)
    batch = agent.collect_batch(seed=3)
    land = landscape(agent, batch, episodes=1, seed=0)
    one, zero = ALPHAS.index(1.0), ALPHAS.index(0.0)
    assert land["update_step"]["surrogate"][one] > land["update_step"]["surrogate"][zero] and land["step_norm"] > 0
    assert land["learning_rate"] is None   # a natural-gradient step has no learning rate
