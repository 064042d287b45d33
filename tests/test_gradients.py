"""The gradient lab: the loss's terms sum to the whole, the clip range splits the surrogate where the law
says, and a real agent's gradients come from a real batch without touching the agent."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import PPO, PPOConfig
from ppo_np.gradcheck_suite import one_of_each_head, ppo_loss_test_point
from ppo_np.gradients import TERMS, agent_gradients, collect_batch, loss_terms, term_losses
from ppo_np.losses import ppo_loss

TINY = dict(num_envs=2, num_steps=32, minibatch_size=32, update_epochs=2, hidden_sizes=(8, 8))


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16), surrogate=st.sampled_from(["clip", "penalty"]), vf_clip=st.sampled_from([None, 0.2]))
def test_the_terms_sum_to_the_whole_loss_and_gradient(seed, surrogate, vf_clip):
    rng = np.random.default_rng(seed)
    for head in one_of_each_head(rng):
        actor, critic, mb, coefs = ppo_loss_test_point(rng, head, surrogate, vf_clip=vf_clip)
        terms = loss_terms(actor, critic, mb, coefs)
        whole = ppo_loss(actor, critic, mb, coefs)
        assert terms.loss == pytest.approx(whole.loss, rel=1e-12, abs=1e-12)
        expected = {**{f"actor/{k}": g for k, g in whole.actor_grads.items()},
                    **{f"critic/{k}": g for k, g in whole.critic_grads.items()}}
        assert set(terms.total) == set(expected)
        for name, g in expected.items():
            np.testing.assert_allclose(terms.total[name], g, rtol=1e-12, atol=1e-12)
            summed = sum(terms.gradients[term][name] for term in TERMS)
            np.testing.assert_array_equal(terms.total[name], summed)
        if surrogate == "clip":
            assert terms.losses["kl_penalty"] == 0 and all(not g.any() for g in terms.gradients["kl_penalty"].values())


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**16))
def test_outside_the_clip_range_the_surrogate_gradient_vanishes_exactly_where_the_clipped_branch_wins(seed):
    """Sample by sample: a one-sample batch outside [1 - eps, 1 + eps] has a zero surrogate gradient iff
    A > 0 and r > 1 + eps or A < 0 and r < 1 - eps; inside, the outside term is zero."""
    rng = np.random.default_rng(seed)
    head = one_of_each_head(rng)[int(rng.integers(4))]
    actor, critic, mb, coefs = ppo_loss_test_point(rng, head, "clip")
    ratio = np.exp(head.log_prob(actor.forward(mb.obs)[0], mb.actions, coefs.temperature) - mb.logp_old)
    for t in range(len(ratio)):
        one = type(mb)(*(x[t:t + 1] for x in mb))
        terms = loss_terms(actor, critic, one, coefs)
        outside = np.concatenate([g.ravel() for g in terms.gradients["surrogate_outside_clip"].values()])
        inside = np.concatenate([g.ravel() for g in terms.gradients["surrogate_inside_clip"].values()])
        flat = (mb.advantages[t] > 0 and ratio[t] > 1 + coefs.clip_eps) or \
               (mb.advantages[t] < 0 and ratio[t] < 1 - coefs.clip_eps)
        if abs(ratio[t] - 1) <= coefs.clip_eps:
            assert not outside.any() and inside.any()
        else:
            assert not inside.any() and outside.any() != flat


def test_the_term_losses_are_what_the_gradients_differentiate():
    """Central differences of ``term_losses`` (the set I fixed) against each term's gradient."""
    from ppo_np.gradcheck import numerical_gradient, relative_error

    rng = np.random.default_rng(3)
    for head in one_of_each_head(rng):
        actor, critic, mb, coefs = ppo_loss_test_point(rng, head, "penalty")
        terms = loss_terms(actor, critic, mb, coefs)
        params = {**{f"actor/{k}": p for k, p in actor.params.items()},
                  **{f"critic/{k}": p for k, p in critic.params.items()}}
        for name, p in params.items():
            numerical = numerical_gradient(lambda: term_losses(actor, critic, mb, coefs, terms.inside), p)
            for i, term in enumerate(TERMS):
                assert relative_error(terms.gradients[term][name], numerical[i]) < 1e-6, (head.name, name, term)


def test_a_real_batch_leaves_the_agent_as_it_was_and_is_reproducible():
    agent = PPO("CartPole-v1", PPOConfig(**TINY, normalize_obs=True, normalize_reward=True))
    agent.learn(128)
    before = {k: v.copy() for k, v in agent.state_arrays().items()}
    batch = collect_batch(agent, seed=5)
    after = agent.state_arrays()
    assert before.keys() == after.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    assert 32 * 2 - 2 <= len(batch.obs) <= 32 * 2   # the reset steps are left out
    again = collect_batch(agent, seed=5)
    for x, y in zip(batch, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(collect_batch(agent, seed=6).obs, batch.obs)


@pytest.mark.parametrize("algo", ["clip", "penalty", "trpo"])
def test_the_gradients_of_a_float32_agent_are_studied_in_float64(algo):
    agent = PPO("Pendulum-v1", PPOConfig(**TINY, algo=algo, ent_coef=0.01))
    agent.learn(128)
    batch = collect_batch(agent, seed=1)
    fresh = agent_gradients(agent, batch)
    assert agent.actor.dtype == np.float32
    assert all(g.dtype == np.float64 for grads in fresh.gradients.values() for g in grads.values())
    assert set(fresh.total) == {*(f"actor/{k}" for k in agent.actor.params), *(f"critic/{k}" for k in agent.critic.params)}
    assert fresh.stats["clip_frac"] == 0.0   # the current policy's own batch: r = 1 up to float32 rounding
    assert fresh.losses["entropy"] < 0 and fresh.losses["value"] > 0
    agent.learn(256)                         # the policy moves away from the one that collected the batch
    moved = agent_gradients(agent, batch)
    assert (moved.losses["kl_penalty"] > 0) == (algo == "penalty")  # beta = 0 for TRPO's surrogate
    assert moved.losses["surrogate_inside_clip"] != fresh.losses["surrogate_inside_clip"]


def test_the_run_check_passes_on_a_real_agent_and_fails_on_a_wrong_backward(monkeypatch):
    from ppo_np.gradcheck_suite import check_agent
    from ppo_np.heads import DiagGaussian

    agent = PPO("Pendulum-v1", PPOConfig(**TINY, algo="penalty", ent_coef=0.01))
    agent.learn(128)
    batch = agent.collect_batch(seed=2)
    checks = check_agent(agent, batch, samples=16)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    rows = {(c.component, c.param) for c in checks}
    assert ("run-kl_penalty", "actor/log_std") in rows and ("run-value", "critic/W0") in rows
    assert ("run-value", "actor/W0") not in rows  # a term's rows are the parameters it reaches

    real = DiagGaussian.kl_backward
    monkeypatch.setattr(DiagGaussian, "kl_backward",
                        lambda self, *args: tuple(1.01 * g for g in real(self, *args)))
    broken = {(c.component, c.param): c.ok for c in check_agent(agent, batch, samples=16)}
    assert not broken[("run-kl_penalty", "actor/log_std")] and broken[("run-value", "critic/W0")]


def test_logging_the_gradients_changes_no_trained_weight_and_writes_one_row_per_update(tmp_path):
    runs = {}
    for log in (False, True):
        agent = PPO("CartPole-v1", PPOConfig(**TINY, log_gradients=log, algo="penalty"), run_dir=tmp_path / str(log))
        agent.learn(256)
        runs[log] = agent
    for key, value in runs[False].state_arrays().items():
        if key != "config":
            np.testing.assert_array_equal(runs[True].state_arrays()[key], value, err_msg=key)
    assert not (tmp_path / "False" / "gradients.csv").exists()
    import csv

    with open(tmp_path / "True" / "gradients.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    agent = runs[True]
    assert list(rows[0])[6:] == [f"actor/{k}" for k in agent.actor.params] + [f"critic/{k}" for k in agent.critic.params]
    for r in rows:
        assert 0 < float(r["clip_scale_actor"]) <= 1 and 0 <= float(r["outside_share"]) <= 1
        assert all(float(r[name]) > 0 for name in list(r)[6:])
    # a resumed run continues the file from its checkpoint (here: update 4), each update once
    (tmp_path / "True" / "gradients.csv").open("a").write("5,1280,1,1,1,0" + ",1" * 12 + "\n")  # past it
    resumed = PPO.load(tmp_path / "True" / "checkpoint.npz", run_dir=tmp_path / "True")
    resumed.learn(384)
    with open(tmp_path / "True" / "gradients.csv", newline="") as f:
        assert [int(r["update"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_the_monitor_averages_each_parameters_norm_and_the_clip_over_the_minibatches():
    from ppo_np.gradients import GradientMonitor
    from ppo_np.params import views_of

    actor = {"W0": np.zeros((2, 3)), "b0": np.zeros(3)}
    critic = {"W0": np.zeros((2, 1)), "b0": np.zeros(1)}
    actor_flat, critic_flat = np.zeros(9), np.zeros(3)
    monitor = GradientMonitor(actor_flat, actor, critic_flat, critic)
    views = views_of(actor_flat, actor)
    for value, scale in ((3.0, 0.5), (1.0, 1.0)):
        views["W0"][...] = value        # norm: value * sqrt(6)
        views["b0"][...] = 2 * value    # norm: 2 value sqrt(3)
        critic_flat[:] = -value
        monitor.observe(scale, 1.0, 0.25 * value)
    row = monitor.row()
    assert row["actor/W0"] == pytest.approx(2 * np.sqrt(6)) and row["actor/b0"] == pytest.approx(4 * np.sqrt(3))
    assert row["critic/W0"] == pytest.approx(2 * np.sqrt(2)) and row["critic/b0"] == pytest.approx(2.0)
    assert row["clip_scale_actor"] == 0.75 and row["clip_scale_critic"] == 1.0 and row["outside_share"] == 0.5
    assert np.isnan(monitor.row()["actor/W0"])  # it starts over: no minibatch since
