"""The actor and the critic (``ppo_np/policy.py``): one shared parameter set, acting, the chain through the head."""
import numpy as np
import pytest
from support import actor_critic_batch as _setup

from ppo_np.heads import Categorical
from ppo_np.losses import LossCoefs, ppo_loss
from ppo_np.policy import Actor
from ppo_np.optim import Adam
from ppo_np.params import assign_flat, flatten


def test_actor_parameters_are_one_shared_set():
    """actor.params holds the MLP's own arrays plus log_std; in-place updates (Adam, assign_flat) reach the
    network, and Adam steps on ppo_loss's gradients lower the loss on a fixed minibatch."""
    actor, critic, mb, _ = _setup(False, seed=5, B=32)
    assert list(actor.params) == ["W0", "b0", "W1", "b1", "W2", "b2", "log_std"]
    for k, v in actor.mlp.params.items():
        assert actor.params[k] is v
    theta = flatten(actor.params)
    assign_flat(actor.params, theta + 0.1)
    assert np.allclose(actor.params["log_std"], -0.2) and not np.allclose(actor.forward(mb.obs)[0], mb.dist_old)
    assign_flat(actor.params, theta)
    coefs = LossCoefs(surrogate="clip", vf_clip=None, ent_coef=0.0)
    opt_a, opt_c = Adam(actor.params, lr=1e-2), Adam(critic.params, lr=1e-2)
    first = ppo_loss(actor, critic, mb, coefs).loss
    for _ in range(20):
        res = ppo_loss(actor, critic, mb, coefs)
        opt_a.step(res.actor_grads)
        opt_c.step(res.critic_grads)
    assert ppo_loss(actor, critic, mb, coefs).loss < first - 0.05
    assert not np.allclose(actor.params["log_std"], -0.3)


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_act(discrete):
    """Shapes and dtypes; logp is log pi_tau of the returned action; deterministic = mode; one observation
    drops the batch axis; the same seed gives the same actions."""
    actor, _, _, rng = _setup(discrete)
    obs = rng.standard_normal((7, 4))
    a, logp, out = actor.act(obs, np.random.default_rng(1), temperature=2.0)
    a2, _, _ = actor.act(obs, np.random.default_rng(1), temperature=2.0)
    np.testing.assert_array_equal(a, a2)
    assert logp.shape == (7,)
    np.testing.assert_allclose(logp, actor.head.log_prob(out, a, 2.0))
    if discrete:
        assert a.shape == (7,) and a.dtype == np.int64
    else:
        assert a.shape == (7, 2)
    a_det, logp_det, out_det = actor.act(obs, None, temperature=2.0, deterministic=True)
    np.testing.assert_array_equal(a_det, Categorical.mode(out) if discrete else out[:, :2])
    np.testing.assert_allclose(logp_det, actor.head.log_prob(out, a_det, 2.0))
    a1, logp1, out1 = actor.act(obs[0], None, deterministic=True)
    assert np.shape(logp1) == () and out1.shape == out[0].shape
    np.testing.assert_allclose(a1, a_det[0], rtol=1e-12, atol=1e-15)  # one row vs a batch: BLAS may round differently


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="n_actions must be a positive integer, got 0"):
        Categorical(0)
    with pytest.raises(ValueError, match="head must be a policy head"):
        Actor(3, 2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="hidden sizes must be positive integers"):
        Actor(3, Categorical(2), (8, 0), rng=np.random.default_rng(0))
