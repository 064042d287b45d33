"""``fused_update.ppo_epochs`` (the update's loop compiled whole) against ``PPO._ppo_update``'s Python loop.

The law: the same rollouts give the same weights, optimiser states and logged statistics, bit for bit,
whatever the configuration (surrogate, clip, target_kl stops, shuffled minibatches or one of every row,
advantage normalisation, discrete or continuous actions); a non-finite loss stops the update before
its step, as the Python loop does.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import PPO, PPOConfig, agent_state
from ppo_np.fused import FusedLoss
from ppo_np.ppo import NonFiniteError
from ppo_np.rollout import RolloutBuffer


def trained(env_id: str, config: PPOConfig, updates: int, compiled: bool):
    """An agent after ``updates`` updates, with its update loop compiled or the Python one, and its rows."""
    agent = PPO(env_id, config)
    agent._fused_loss = FusedLoss(agent.actor, agent.critic, config.minibatch_size, compiled_passes=compiled)
    assert agent._fused_loss.compiled == compiled
    rows = []
    agent.learn(config.batch_size * updates, callback=lambda a, row: rows.append(row))
    state = agent_state.learner_state(agent)
    agent.close()
    return state, rows


@settings(deadline=None, max_examples=12)
@given(continuous=st.booleans(), algo=st.sampled_from(["clip", "penalty"]), clip_grad=st.sampled_from(["joint", "separate"]),
       minibatch_size=st.sampled_from([16, 24, 64]), target_kl=st.sampled_from([None, 1e-6]),
       norm_adv=st.booleans(), vf_clip=st.sampled_from([None, 0.2]), seed=st.integers(0, 2**16))
def test_the_compiled_update_is_the_python_loop_bit_for_bit(continuous, algo, clip_grad, minibatch_size, target_kl,
                                                            norm_adv, vf_clip, seed):
    config = PPOConfig(algo=algo, num_envs=2, num_steps=32, minibatch_size=minibatch_size, update_epochs=3,
                       hidden_sizes=(16, 16), clip_grad=clip_grad, target_kl=target_kl, norm_adv=norm_adv,
                       vf_clip=vf_clip, max_grad_norm=0.3, learning_rate=3e-3, seed=seed)
    env_id = "Pendulum-v1" if continuous else "CartPole-v1"
    compiled_state, compiled_rows = trained(env_id, config, 3, compiled=True)
    python_state, python_rows = trained(env_id, config, 3, compiled=False)
    assert compiled_state.keys() == python_state.keys()
    for name in compiled_state:
        np.testing.assert_array_equal(compiled_state[name], python_state[name], err_msg=name)
    for compiled_row, python_row in zip(compiled_rows, python_rows, strict=True):
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl_k3", "clip_frac", "grad_norm", "epochs_run",
                    "exact_kl", "explained_variance"):
            a, b = compiled_row[key], python_row[key]
            assert a == b or (math.isnan(a) and math.isnan(b)), (key, a, b)
    if target_kl is not None:  # the stop is exercised, not only allowed
        assert any(row["epochs_run"] < config.update_epochs for row in compiled_rows)


def test_a_non_finite_loss_stops_the_compiled_update_before_its_step():
    """A weight turned NaN after the rollout makes the first minibatch's loss NaN: the update raises
    NonFiniteError naming it before any Adam step (``_update`` itself: learn would then roll back)."""
    config = PPOConfig(num_envs=2, num_steps=32, minibatch_size=16, update_epochs=2, hidden_sizes=(16, 16))
    agent = PPO("CartPole-v1", config)
    agent.learn(64)
    assert agent._fused_loss.compiled
    buf = RolloutBuffer.allocate(config.num_steps, config.num_envs, agent.obs_dim, agent.head, agent.actor.dtype)
    agent.collector.collect(agent.actor, agent.critic, buf, agent.action_rng, 1.0)
    adam = {k: v.copy() for k, v in agent_state.learner_state(agent).items() if k.startswith("adam")}
    agent.critic.params["b1"][0] = math.nan
    with pytest.raises(NonFiniteError, match=r"non-finite loss at update 2"):
        agent._update(buf, [], 1.0, 0.0)
    after = {k: v for k, v in agent_state.learner_state(agent).items() if k.startswith("adam")}
    for name in adam:
        np.testing.assert_array_equal(after[name], adam[name], err_msg=name)
    agent.close()
