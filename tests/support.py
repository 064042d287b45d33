"""Small agents and test points that several test files share (not a test file itself)."""
import numpy as np

from ppo_np.gradcheck_suite import trpo_test_point
from ppo_np.heads import Categorical, DiagGaussian
from ppo_np.losses import Minibatch
from ppo_np.policy import Actor, Critic


def head_of(discrete: bool, n: int = 2):
    """A categorical head over n actions, or a diagonal Gaussian one of n dimensions."""
    return Categorical(n) if discrete else DiagGaussian(n)


def actor_critic_batch(discrete, seed=0, B=16, tau=1.0, dtype="float64"):
    """A small actor and critic, and a minibatch sampled from the actor itself (so r = 1 exactly)."""
    rng = np.random.default_rng(seed)
    obs_dim, n = 4, (3 if discrete else 2)
    actor = Actor(obs_dim, head_of(discrete, n), (8, 8), rng=rng, dtype=dtype, log_std_init=-0.3)
    critic = Critic(obs_dim, (8, 8), rng=rng, dtype=dtype)
    obs = rng.standard_normal((B, obs_dim)).astype(dtype)
    actions, logp, out = actor.act(obs, rng, temperature=tau)
    mb = Minibatch(obs, actions, logp, rng.standard_normal(B).astype(dtype), rng.standard_normal(B).astype(dtype),
                   critic(obs), out)
    return actor, critic, mb, rng


def actor_point(seed: int, discrete: bool, activation: str = "tanh"):
    """(actor, obs, tau, rng): a float64 actor with O(1) outputs, states, tau away from 1."""
    rng = np.random.default_rng(seed)
    actor, obs, tau = trpo_test_point(rng, head_of(discrete), activation)
    return actor, obs, tau, rng


def direction(params, rng):
    """A random direction shaped like ``params``."""
    return {k: rng.standard_normal(p.shape) for k, p in params.items()}
