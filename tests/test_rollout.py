"""Rollout collection on a toy environment whose values are known: autoreset, truncation, termination.

The toy env counts: observation [t] at step t, reward 1 every step. Episodes end at step L either by
termination or by truncation. With a critic stub V(s) = 10 s, every bootstrap value is known, so the
advantages of the steps around an episode boundary can be written down exactly.
"""
import gymnasium as gym
import numpy as np
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.advantages import gae
from ppo_np.normalize import ObsNormalizer, RewardScaler
from ppo_np.policy import Actor, Critic
from ppo_np.heads import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from ppo_np import classic_control
from ppo_np.classic_control import NumbaVectorEnv
from ppo_np.heads import head_for
from ppo_np.heads.base import ActRows, act_step
from ppo_np.jit import plain
from ppo_np.rollout import (Collector, CompiledCollector, RolloutBuffer, record_step_kernel,
                            record_step_reference)


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


def fixed_networks():
    """A linear actor that always takes action 0 (logits (0, -1000)) and a linear critic V(s) = 10 s."""
    rng = np.random.default_rng(0)
    actor = Actor(1, Categorical(2), (), rng=rng, dtype="float64")
    actor.params["W0"][...] = 0.0
    actor.params["b0"][...] = [0.0, -1e3]
    critic = Critic(1, (), rng=rng, dtype="float64")
    critic.params["W0"][...] = 10.0
    return actor, critic


def collect(length: int, ending: str, T: int, N: int = 2) -> RolloutBuffer:
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(length, ending) for _ in range(N)])
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False),
                          reward_scaler=RewardScaler(N, 0.99, 10.0, False))
    buf = RolloutBuffer.allocate(T, N, 1, Categorical(2), np.float64)
    collector.collect(*fixed_networks(), buf, np.random.default_rng(0), 1.0)
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

    adv, _ = gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated, gamma, lam)
    bootstrap = 30.0 if ending == "truncated" else 0.0
    # the last step of the episode: delta = 1 + gamma * bootstrap - V(s=2)
    assert adv[2, 0] == pytest.approx(1.0 + gamma * bootstrap - 20.0)
    # one step earlier chains through it: delta_1 + gamma * lambda * A_2
    assert adv[1, 0] == pytest.approx(1.0 + gamma * 20.0 - 10.0 + gamma * lam * adv[2, 0])


def test_episode_statistics_count_only_real_steps():
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(3, "truncated") for _ in range(2)])
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False),
                          reward_scaler=RewardScaler(2, 0.99, 10.0, False))
    buf = RolloutBuffer.allocate(8, 2, 1, Categorical(2), np.float64)
    collector.collect(*fixed_networks(), buf, np.random.default_rng(0), 1.0)
    envs.close()
    assert collector.drain_episodes() == [(3.0, 3)] * 4
    assert collector.drain_episodes() == []


def test_reward_scaling_statistics_see_only_real_transitions():
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(3, "truncated") for _ in range(2)])
    scaler = RewardScaler(2, 0.99, 10.0, True)
    scaler.returns[:] = 5.0  # left over from a previous run: a fresh collector restarts every episode
    collector = Collector(envs, seed=0, obs_norm=ObsNormalizer((1,), 10.0, False), reward_scaler=scaler)
    assert np.all(scaler.returns == 0.0)
    buf = RolloutBuffer.allocate(8, 2, 1, Categorical(2), np.float64)
    collector.collect(*fixed_networks(), buf, np.random.default_rng(0), 1.0)
    envs.close()
    # 8 steps of 2 envs, of which 2 per env are reset steps: 12 real transitions entered Var[G]
    assert scaler.rms.count == pytest.approx(12 + 1e-4)
    g = np.array([1.0, 1.99, 1 + 0.99 * 1.99])  # G within an episode of three unit rewards
    np.testing.assert_allclose(scaler.rms.mean, np.tile(g, 4).mean(), rtol=1e-3)


@settings(deadline=None, max_examples=40)
@given(discrete=st.booleans(), dtype=st.sampled_from(["float32", "float64"]), N=st.integers(1, 40),
       hidden=st.sampled_from([(), (8,), (16, 16)]), activation=st.sampled_from(["tanh", "relu"]),
       tau=st.floats(0.2, 5.0), seed=st.integers(0, 2**16))
def test_act_kernels_match_actor_act_and_critic(discrete, dtype, N, hidden, activation, tau, seed):
    """The rollout's compiled act step draws what ``Actor.act`` draws and returns what it returns; a
    Gaussian one also gives the env its actions clipped to the bounds."""
    rng = np.random.default_rng(seed)
    low, high = np.float32(-0.5) - rng.random(4, np.float32), rng.random(4, np.float32)   # some samples outside
    head = Categorical(4) if discrete else DiagGaussian(4, low, high)
    actor = Actor(3, head, hidden, activation, rng=rng, dtype=dtype, log_std_init=-0.5)
    critic = Critic(3, hidden, activation, rng=rng, dtype=dtype)
    obs = rng.standard_normal((N, 3)).astype(dtype)
    want_actions, want_logp, want_out = actor.act(obs, np.random.default_rng(seed), tau)
    want_values = critic(obs)
    rows = ActRows(np.empty((N, head.dist_dim), dtype), np.empty((N, *head.action_shape), head.action_dtype(dtype)),
                   np.empty(N, dtype), np.empty((N, 1), dtype))
    env_actions = head.act(plain((actor.mlp.network, critic.mlp.network)), actor.head_params, obs,
                           np.random.default_rng(seed), tau, plain(rows))
    out, actions, logp, values = rows
    if discrete:
        np.testing.assert_array_equal(actions, want_actions)
        assert env_actions is actions
    else:
        np.testing.assert_allclose(actions, want_actions, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(env_actions, np.clip(actions, low, high).astype(np.float32))
        assert env_actions.dtype == np.float32
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(logp, want_logp, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(values[:, 0], want_values, rtol=tol, atol=tol)


@settings(deadline=None, max_examples=60)
@given(N=st.integers(1, 12), steps=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_record_step_kernel_matches_its_reference(N, steps, seed):
    """Random endings over many steps: the same rows, the same running statistics, the same finished episodes."""
    rng = np.random.default_rng(seed)
    state = [(np.zeros(N, bool), np.zeros(N), np.zeros(N, np.int64)) for _ in range(2)]
    for _ in range(steps):
        rewards = rng.standard_normal(N)
        terminated, truncated = rng.random(N) < 0.2, rng.random(N) < 0.1
        masked, done, finished = np.empty(N), np.empty(N, bool), np.empty((N, 2))
        rows = np.empty(N, bool), np.empty(N, bool), np.empty(N, bool)
        n = record_step_kernel((rewards, terminated, truncated), state[0], (masked, done, *rows), finished)
        want = record_step_reference((rewards, terminated, truncated), state[1])
        np.testing.assert_array_equal(masked, want[0])
        for got, expected in zip((done, *rows), want[1:5]):
            np.testing.assert_array_equal(got, expected)
        assert [(float(r), int(k)) for r, k in finished[:n]] == want[5]
        for a, b in zip(*state):
            np.testing.assert_array_equal(a, b)


@settings(deadline=None, max_examples=30)
@given(dtype=st.sampled_from(["float32", "float64"]), N=st.integers(1, 20),
       head=st.one_of(st.integers(1, 5).map(Bernoulli),
                      st.lists(st.integers(1, 4), min_size=1, max_size=3).map(MultiCategorical)),
       tau=st.floats(0.2, 5.0), seed=st.integers(0, 2**16))
def test_later_heads_act_kernels_match_actor_act_and_critic(dtype, N, head, tau, seed):
    """The compiled act steps of the heads added later (MultiBinary, MultiDiscrete) draw what ``Actor.act``
    draws and return what it returns; the env gets the head's ``env_actions`` of them."""
    rng = np.random.default_rng(seed)
    actor = Actor(3, head, (8,), rng=rng, dtype=dtype)
    for p in actor.params.values():
        p += (rng.standard_normal(p.shape)).astype(dtype)         # logits of O(1), not the init's ~0
    critic = Critic(3, (8,), rng=rng, dtype=dtype)
    obs = rng.standard_normal((N, 3)).astype(dtype)
    want_actions, want_logp, want_out = actor.act(obs, np.random.default_rng(seed), tau)
    rows = ActRows(np.empty((N, head.dist_dim), dtype), np.empty((N, *head.action_shape), np.int64),
                   np.empty(N, dtype), np.empty((N, 1), dtype))
    env_actions = head.act(plain((actor.mlp.network, critic.mlp.network)), actor.head_params, obs,
                           np.random.default_rng(seed), tau, plain(rows))
    out, actions, logp, values = rows
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
    np.testing.assert_array_equal(actions, want_actions)
    np.testing.assert_allclose(logp, want_logp, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(values[:, 0], critic(obs), rtol=tol, atol=tol)
    np.testing.assert_array_equal(env_actions, head.env_actions(actions))
    assert env_actions.dtype == head.env_actions(actions).dtype


@settings(deadline=None, max_examples=20)
@given(dtype=st.sampled_from(["float32", "float64"]), N=st.integers(1, 9), tau=st.floats(0.2, 5.0),
       seed=st.integers(0, 2**16),
       head=st.sampled_from([Categorical(3), DiagGaussian(2, low=-0.5, high=0.5), Bernoulli(2),
                             MultiCategorical([2, 3])]))
def test_every_heads_compiled_act_step_is_its_act(dtype, N, tau, seed, head):
    """``act_step`` (the compiled rollout's act, chosen by the class of ``compiled_policy``) writes the rows
    ``head.act`` writes, from the same draws, and gives the env what ``head.act`` returns."""
    rng = np.random.default_rng(seed)
    actor, critic = Actor(3, head, (8,), rng=rng, dtype=dtype), Critic(3, (8,), rng=rng, dtype=dtype)
    for p in actor.params.values():
        p += rng.standard_normal(p.shape).astype(dtype)
    obs = rng.standard_normal((N, 3)).astype(dtype)
    networks = plain((actor.mlp.network, critic.mlp.network))

    def rows():
        return ActRows(np.empty((N, head.dist_dim), dtype), np.empty((N, *head.action_shape), head.action_dtype(dtype)),
                       np.empty(N, dtype), np.empty((N, 1), dtype))
    want = rows()
    want_env = head.act(networks, actor.head_params, obs, np.random.default_rng(seed), tau, plain(want))
    got, got_env = rows(), head.env_action_buffer(N)
    act_step(head.compiled_policy(actor.head_params), obs, networks, head.noise(np.random.default_rng(seed), N), tau,
             plain(got), got_env)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got_env, want_env, strict=True)


@pytest.mark.parametrize("env_id, normalize, dtype", [("CartPole-v1", False, "float32"), ("CartPole-v1", True, "float64"),
                                                      ("Acrobot-v1", True, "float32"), ("Pendulum-v1", True, "float32"),
                                                      ("MountainCarContinuous-v0", False, "float64")])
def test_the_compiled_rollout_is_the_python_one(env_id, normalize, dtype, monkeypatch):
    """On the same ported env, ``CompiledCollector`` fills the buffers ``Collector`` fills, bit for bit, over
    rollouts that carry episodes across them (past every time limit) and run out of initial states drawn
    ahead mid-rollout (one at a time here); the finished episodes, the normalisers and the generator end
    the same too."""
    monkeypatch.setattr(classic_control, "RESETS_AHEAD", 1)
    N, T, rollouts = 3, 400, 3

    def run(collector_class):
        envs = NumbaVectorEnv(env_id, N)
        refills = []
        refill = envs.refill_resets
        envs.refill_resets = lambda: (refills.append(envs.observations()), refill())
        obs_dim = envs.single_observation_space.shape[0]
        obs_norm, scaler = ObsNormalizer((obs_dim,), 5.0, normalize), RewardScaler(N, 0.99, 10.0, normalize)
        collector = collector_class(envs, 4, obs_norm, scaler)
        rng = np.random.default_rng(1)
        head = head_for(envs.single_action_space)
        actor, critic = Actor(obs_dim, head, (16,), rng=rng, dtype=dtype), Critic(obs_dim, (16,), rng=rng, dtype=dtype)
        for p in actor.params.values():          # a policy far from uniform: long and short episodes both
            p += 0.5 * rng.standard_normal(p.shape).astype(dtype)
        buffers = []
        for _ in range(rollouts):
            buffers.append(RolloutBuffer.allocate(T, N, obs_dim, head, dtype))
            collector.collect(actor, critic, buffers[-1], rng, 1.3)
        state = (obs_norm.rms.mean, obs_norm.rms.var, obs_norm.rms.count, scaler.rms.var, scaler.returns,
                 collector.obs, collector.resetting, collector.episode_return, collector.episode_length)
        return buffers, collector.drain_episodes(), state, rng.random(), refills

    (want, want_episodes, want_state, want_draw, _), (got, got_episodes, got_state, got_draw, refills) = \
        run(Collector), run(CompiledCollector)
    for a, b in zip(got, want):
        for name in a.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name, strict=True)
    assert got_episodes == want_episodes and len(want_episodes) > 0
    for a, b in zip(got_state, want_state):
        np.testing.assert_array_equal(a, b)
    assert got_draw == want_draw
    assert refills, "no rollout ran out of initial states drawn ahead"


def test_the_compiled_collector_takes_only_a_compiled_env():
    envs = gym.vector.SyncVectorEnv([lambda: CountingEnv(5, "terminated")])
    with pytest.raises(ValueError, match="steps a classic_control.NumbaVectorEnv, got SyncVectorEnv"):
        CompiledCollector(envs, 0, ObsNormalizer((1,), 5.0, False), RewardScaler(1, 0.99, 10.0, False))
