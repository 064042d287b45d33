"""The agent end to end: determinism, tempered log-probabilities, save/load, resume, bad checkpoints."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from ppo_np import PPO, PPOConfig, agent_state, evaluate
from ppo_np.advantages import gae_reference
from ppo_np.checkpoint import CheckpointError
from ppo_np.gradients import replay_update
from ppo_np.losses import LossCoefs, Minibatch
from ppo_np.rundir import CHECKPOINT_NAME
from ppo_np.rollout import RolloutBuffer

TINY = dict(num_envs=2, num_steps=16, minibatch_size=8, update_epochs=2, hidden_sizes=(16, 16))


def tiny(env_id="CartPole-v1", **changes) -> PPO:
    return PPO(env_id, PPOConfig(**{**TINY, **changes}))


def metrics_of(agent: PPO, steps: int) -> list[dict]:
    rows = []
    agent.learn(steps, callback=lambda a, row: rows.append({k: v for k, v in row.items() if k not in ("wall_s", "steps_per_s")}))
    return rows


@pytest.mark.parametrize("env_id, changes", [
    ("CartPole-v1", {}),
    ("CartPole-v1", dict(algo="penalty", ent_schedule="auto", ent_coef=0.01, temperature=1.5, temperature_final=0.5)),
    ("Pendulum-v1", dict(normalize_obs=True, normalize_reward=True, vf_clip=0.2, dtype="float64")),
])
def test_same_config_and_seed_give_bit_identical_metrics_and_weights(env_id, changes):
    a, b = tiny(env_id, **changes), tiny(env_id, **changes)
    rows_a, rows_b = metrics_of(a, 160), metrics_of(b, 160)
    assert json.dumps(rows_a) == json.dumps(rows_b)  # NaN-safe, exact
    for name in a.actor.params:
        assert np.array_equal(a.actor.params[name], b.actor.params[name])
    other = PPO(env_id, PPOConfig(**{**TINY, **changes, "seed": 1}))
    assert json.dumps(metrics_of(other, 160)) != json.dumps(rows_a)


def test_stored_log_probabilities_are_those_of_the_tempered_policy():
    agent = tiny(temperature=2.5)
    agent.learn(32)  # opens the environments
    fresh = RolloutBuffer.allocate(4, 2, agent.obs_dim, agent.head, agent.actor.dtype)
    agent.collector.collect(agent.actor, agent.critic, fresh, np.random.default_rng(0), 2.5)
    # what the importance ratio's denominator will be: log pi_tau of the policy that acted
    logp = agent.head.log_prob(fresh.dist_out.reshape(8, -1), fresh.actions.reshape(8), 2.5)
    np.testing.assert_allclose(fresh.logp.reshape(8), logp, rtol=1e-6)
    untempered = agent.head.log_prob(fresh.dist_out.reshape(8, -1), fresh.actions.reshape(8), 1.0)
    assert not np.allclose(fresh.logp.reshape(8), untempered)


def test_save_load_round_trip_restores_predictions_and_optimiser_state(tmp_path):
    agent = tiny("Pendulum-v1", normalize_obs=True, normalize_reward=True, ent_schedule="auto", ent_coef=0.01)
    agent.learn(96)
    agent.save(tmp_path / "a.npz")
    loaded = PPO.load(tmp_path / "a.npz")
    obs = np.random.default_rng(0).normal(size=(5, agent.obs_dim))
    np.testing.assert_array_equal(agent.predict(obs), loaded.predict(obs))
    for opt_a, opt_b in ((agent.actor_opt, loaded.actor_opt), (agent.critic_opt, loaded.critic_opt)):
        sa, sb = opt_a.state_dict(), opt_b.state_dict()
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    np.testing.assert_array_equal(agent.obs_norm.rms.var, loaded.obs_norm.rms.var)
    assert loaded.ent_coef.value == agent.ent_coef.value
    assert (loaded.global_step, loaded.update_count) == (agent.global_step, agent.update_count)
    np.testing.assert_array_equal(agent.predict(obs, deterministic=False), loaded.predict(obs, deterministic=False))


def test_resume_continues_counters_schedules_and_metrics(tmp_path):
    cfg = PPOConfig(**TINY, lr_schedule="linear", clip_schedule="linear", algo="penalty")
    straight = PPO("CartPole-v1", cfg)
    full = metrics_of(straight, 192)

    first = PPO("CartPole-v1", cfg, run_dir=tmp_path)
    first.learn(192, callback=lambda a, row: a.global_step < 96)  # 3 of 6 updates, then "the process ends"
    resumed = PPO.load(tmp_path / CHECKPOINT_NAME, run_dir=tmp_path)
    assert (resumed.update_count, resumed.global_step, resumed.schedule_horizon) == (3, 96, 192)
    assert resumed.beta.beta == first.beta.beta != cfg.beta_init  # the controller's state, not its start
    rows = metrics_of(resumed, 192)
    assert [r["update"] for r in rows] == [4, 5, 6]
    assert [r["step"] for r in rows] == [128, 160, 192]
    # the schedules pick up where they stopped: the same learning rate and clip range as a straight run
    for key in ("learning_rate", "clip_range"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in full[3:]])
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["update"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_extending_a_run_keeps_its_schedules_unless_told_to_reschedule():
    """The horizon H of the schedules is the first learn's total: past it, the schedules hold their final
    values (p = 1); ``reschedule`` stretches them over the new total, p = steps / new total."""
    cfg = PPOConfig(**TINY, lr_schedule="linear", clip_schedule="linear", temperature=2.0, temperature_final=1.0)
    for reschedule, progress in ((False, [1.0, 1.0, 1.0]), (True, [96 / 192, 128 / 192, 160 / 192])):
        agent = PPO("CartPole-v1", cfg)
        agent.learn(96)
        assert agent.schedule_horizon == 96
        rows = []
        agent.learn(192, callback=lambda a, row: rows.append(row), reschedule=reschedule)
        assert agent.schedule_horizon == (192 if reschedule else 96)
        assert [r["learning_rate"] for r in rows] == pytest.approx([cfg.learning_rate * (1 - p) for p in progress],
                                                                     abs=1e-12)
        assert [r["temperature"] for r in rows] == pytest.approx([2.0 - p for p in progress])


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign", "garbage", "newer"])
def test_damaged_or_foreign_checkpoints_get_a_clear_error(tmp_path, damage):
    agent = tiny()
    path = agent.save(tmp_path / "a.npz")
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign":
        np.savez(path, weights=np.zeros(3))
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    else:
        arrays = dict(np.load(path))
        arrays["format_version"] = np.array(99)
        np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=str(path.name)):
        PPO.load(path)


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    path = tiny(hidden_sizes=(8,)).save(tmp_path / "a.npz")
    arrays = dict(np.load(path))
    arrays["actor/W0"] = np.zeros((4, 9), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="actor/W0.*shape"):
        PPO.load(path)


def test_evaluate_reports_mean_std_and_count():
    agent = tiny()
    result = evaluate(agent, episodes=3, seed=0)
    assert set(result) == {"mean_return", "std_return", "episodes", "mean_length", "capped_episodes",
                           "max_episode_steps"} and result["episodes"] == 3
    assert 8 <= result["mean_return"] <= 500
    with pytest.raises(ValueError, match="episodes"):
        evaluate(agent, episodes=0)


def test_bad_learn_and_predict_input_is_named():
    agent = tiny()
    with pytest.raises(ValueError, match="total_steps"):
        agent.learn(0)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        agent.predict(np.zeros(3))


def test_annealed_temperature_keeps_the_first_ratio_at_one():
    # one epoch of one minibatch: its statistics are taken before the step, at pi_new = pi_old,
    # so any mismatch between the acting tau and the update's tau would show as KL > 0
    agent = PPO("CartPole-v1", PPOConfig(**{**TINY, "update_epochs": 1, "minibatch_size": 32, "dtype": "float64"},
                                         temperature=2.0, temperature_final=0.2))
    rows = metrics_of(agent, 160)
    assert len({r["temperature"] for r in rows}) == len(rows)  # tau really changes every update
    for row in rows:
        assert abs(row["approx_kl_k1"]) < 1e-12 and row["clip_frac"] == 0.0


def test_every_schedule_of_an_update_reads_the_same_progress_from_before_its_rollout():
    cfg = PPOConfig(**TINY, learning_rate=1e-3, lr_schedule="linear", clip_schedule="linear",
                    temperature=1.0, temperature_final=0.5)
    rows = metrics_of(PPO("CartPole-v1", cfg), 160)  # 5 updates of 32 steps
    progress = [i / 5 for i in range(5)]
    assert [r["learning_rate"] for r in rows] == pytest.approx([1e-3 * (1 - p) for p in progress])
    assert [r["clip_range"] for r in rows] == pytest.approx([0.2 * (1 - p) for p in progress])
    assert [r["temperature"] for r in rows] == pytest.approx([1.0 - 0.5 * p for p in progress])
    assert rows[0]["learning_rate"] == 1e-3 and rows[-1]["learning_rate"] > 0  # the last rollout is learned from


def test_a_checkpoint_that_does_not_fit_names_its_file(tmp_path):
    path = tiny().save(tmp_path / "misfit.npz")
    arrays = dict(np.load(path))
    arrays["critic/b0"] = np.zeros(3, np.float32)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"misfit\.npz.*critic/b0.*shape"):
        PPO.load(path)


def replay_ppo_update(reference: PPO, cfg: PPOConfig, flat: Minibatch, valid: np.ndarray, coefs: LossCoefs,
                      update: int) -> list[float]:
    """``gradients.replay_update`` on ``reference``'s networks and optimisers, the valid rows of ``flat``."""
    batch = Minibatch(*(field[valid] for field in flat))
    return replay_update(reference.actor, reference.critic, reference.actor_opt, reference.critic_opt, cfg, batch,
                         coefs, update)


def assert_same_weights(agent: PPO, reference: PPO) -> None:
    for net, twin in ((agent.actor, reference.actor), (agent.critic, reference.critic)):
        for name, value in twin.params.items():
            np.testing.assert_allclose(net.params[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("clip_grad, epochs", [("joint", 1), ("separate", 1), ("joint", 3)])
def test_an_update_step_is_the_loss_gradient_clipped_then_adam(clip_grad, epochs):
    """Each minibatch of the update loop = ``ppo_loss``'s gradients, clipped to a global norm that bites
    (over both networks, or per network), then one Adam step per network (float64, to rounding).

    The one minibatch per epoch here holds every sample, so the loop gathers it once, unshuffled; the
    reference feeds ``ppo_loss`` each epoch's seeded permutation, as it would with smaller minibatches:
    the two agree to rounding, the shuffle only reordering the sums.
    """
    agent = tiny(num_envs=1, num_steps=16, minibatch_size=16, update_epochs=epochs, dtype="float64",
                 max_grad_norm=1e-3, clip_grad=clip_grad)
    rng = np.random.default_rng(0)
    B = 16
    mb = Minibatch(obs=rng.standard_normal((B, 4)), actions=rng.integers(0, 2, B), logp_old=-rng.random(B),
                   advantages=rng.standard_normal(B), returns=rng.standard_normal(B),
                   values_old=rng.standard_normal(B), dist_old=rng.standard_normal((B, 2)))
    cfg = agent.config
    coefs = agent.loss_coefs(0.0)
    assert coefs == LossCoefs(surrogate=cfg.algo, clip_eps=0.2, beta=agent.beta.beta, vf_coef=cfg.vf_coef,
                              vf_clip=cfg.vf_clip, ent_coef=agent.ent_coef.value, temperature=1.0)
    reference = tiny(num_envs=1, num_steps=16, minibatch_size=16, dtype="float64")   # the same seed: same weights
    norms = replay_ppo_update(reference, cfg, mb, np.arange(B), coefs, agent.update_count)
    assert all(norm > 10 * cfg.max_grad_norm for norm in norms)                # the clip bites

    row, epochs_run = agent._ppo_update(mb, np.arange(B), 0.0)
    assert epochs_run == epochs
    np.testing.assert_allclose(row["grad_norm"], np.mean(norms), rtol=1e-9)
    assert_same_weights(agent, reference)
    agent.close()
    reference.close()


@pytest.mark.parametrize("norm_adv", [True, False])
@pytest.mark.parametrize("algo", ["clip", "penalty"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_whole_update_replays_step_for_step_as_the_readable_reference(env_id, algo, norm_adv):
    """One whole update of the agent (advantages, then epochs of several shuffled minibatches through
    ``fused.FusedLoss``, the clip and Adam) leaves the weights that ``replay_ppo_update`` leaves, started
    from the same agent on the same rollout with GAE by ``gae_reference`` (float64, to rounding)."""
    changes = dict(algo=algo, norm_adv=norm_adv, dtype="float64", max_grad_norm=0.1, ent_coef=0.01)
    agent, reference = tiny(env_id, **changes), tiny(env_id, **changes)
    agent.learn(32)                    # one update first: Adam's moments and beta leave their start values
    cfg = agent.config
    buf = RolloutBuffer.allocate(cfg.num_steps, cfg.num_envs, agent.obs_dim, agent.head, agent.actor.dtype)
    agent.collector.collect(agent.actor, agent.critic, buf, agent.action_rng, cfg.temperature)
    agent_state.load_learner_state(reference, agent_state.learner_state(agent))

    B = cfg.batch_size
    adv, returns = gae_reference(buf.rewards, buf.values, buf.next_values(), buf.terminated, buf.truncated,
                                 cfg.gamma, cfg.gae_lambda)
    flat = Minibatch(obs=buf.obs.reshape(B, -1).copy(), actions=buf.actions.reshape(B, *buf.actions.shape[2:]).copy(),
                     logp_old=buf.logp.reshape(B).copy(), advantages=adv.reshape(B), returns=returns.reshape(B),
                     values_old=buf.values.reshape(B).copy(), dist_old=buf.dist_out.reshape(B, -1).copy())
    valid = np.flatnonzero(buf.valid)
    assert valid.size > 2 * cfg.minibatch_size                                 # several minibatches per epoch
    coefs = LossCoefs(surrogate=algo, clip_eps=cfg.clip_coef, beta=reference.beta.beta, vf_coef=cfg.vf_coef,
                      vf_clip=cfg.vf_clip, ent_coef=cfg.ent_coef, temperature=cfg.temperature)
    reference.actor_opt.lr = reference.critic_opt.lr = cfg.learning_rate
    norms = replay_ppo_update(reference, cfg, flat, valid, coefs, agent.update_count)
    assert any(norm > cfg.max_grad_norm for norm in norms)                     # the clip bites

    row = agent._update(buf, agent.collector.drain_episodes(), cfg.temperature, 0.0)
    assert row["epochs_run"] == cfg.update_epochs
    np.testing.assert_allclose(row["grad_norm"], np.mean(norms), rtol=1e-9)
    assert_same_weights(agent, reference)
    agent.close()
    reference.close()


def test_callbacks_that_predict_and_evaluate_leave_training_bit_identical():
    """Training, evaluation and prediction draw from separate generators."""
    def run(callback):
        agent = tiny("Pendulum-v1", algo="penalty")
        agent.learn(192, callback=callback)
        return agent

    def meddle(agent, row):
        agent.predict(np.zeros((4, agent.obs_dim)), deterministic=False)
        evaluate(agent, episodes=1, deterministic=False, max_episode_steps=5)

    plain, meddled = run(None), run(meddle)
    for key, value in plain.state_arrays().items():
        if key != "rng/predict":   # the predictions drew from their own generator, and only from it
            np.testing.assert_array_equal(meddled.state_arrays()[key], value, err_msg=key)
    assert plain.state_arrays()["rng/predict"] != meddled.state_arrays()["rng/predict"]


def test_predict_gives_actions_the_env_takes_and_the_raw_sample_on_request():
    agent = tiny("Pendulum-v1")
    agent.actor.params[f"b{agent.actor.mlp.n_layers - 1}"][...] = 5.0   # mean 5, outside the bounds [-2, 2]
    obs = np.zeros((3, agent.obs_dim))
    np.testing.assert_array_equal(agent.predict(obs), np.full((3, 1), 2.0, np.float32))
    assert np.all(agent.predict(obs, raw=True) > 4.9)
    assert agent.env_source.action_space.contains(agent.predict(obs[0], deterministic=False))


def test_change_config_takes_the_resumable_fields_records_them_and_refuses_the_rest(tmp_path):
    from ppo_np.config import RESUMABLE_FIELDS

    agent = tiny()
    agent.learn(64)
    agent.change_config(learning_rate=1e-4, target_kl=0.05, checkpoint_every=7)
    agent.change_config(checkpoint_every=7)        # no change: nothing recorded
    assert agent.config_changes == [{"update": 2, "field": "learning_rate", "old": agent.config_changes[0]["old"],
                                     "new": 1e-4},
                                    {"update": 2, "field": "target_kl", "old": None, "new": 0.05},
                                    {"update": 2, "field": "checkpoint_every", "old": 20, "new": 7}]
    with pytest.raises(ValueError, match=f"gamma cannot change during a run; the fields that can: "
                                         f"{', '.join(RESUMABLE_FIELDS)}"):
        agent.change_config(gamma=0.5)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        agent.change_config(learning_rate=-1.0)
    loaded = PPO.load(agent.save(tmp_path / "a.npz"))
    assert loaded.config_changes == agent.config_changes and loaded.config.learning_rate == 1e-4


def test_a_new_entropy_coefficient_takes_effect_at_the_next_update_and_the_tuned_one_is_refused():
    agent = tiny(ent_coef=0.01)
    agent.learn(64)
    agent.change_config(ent_coef=0.02)
    rows = []
    agent.learn(96, callback=lambda a, row: rows.append(row))
    assert rows[0]["ent_coef"] == 0.02 and agent.config_changes[-1]["field"] == "ent_coef"
    tuned = tiny(ent_schedule="auto", ent_coef=0.01)
    tuned.learn(32)
    with pytest.raises(ValueError, match="ent_coef is only the starting point of the auto-tuned"):
        tuned.change_config(ent_coef=0.05)


_BLAS_THREADS_DURING_LEARN = """
import json
from threadpoolctl import threadpool_info
from ppo_np import PPO, PPOConfig
blas = lambda: sorted((i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")
during = []
agent = PPO("CartPole-v1", PPOConfig(num_envs=2, num_steps=32, minibatch_size=64, update_epochs=1, seed=0))
agent.learn(128, callback=lambda agent, row: during.append(blas()))
print(json.dumps({"compiled_passes": agent._fused_loss.compiled_passes, "blas": during[-1]}))
"""


def test_every_blas_library_runs_one_thread_during_learn():
    """SciPy's BLAS too, which the compiled passes call: a fresh process, where it is loaded only by training
    (the limit reaches the libraries loaded when it is set)."""
    out = json.loads(subprocess.run([sys.executable, "-c", _BLAS_THREADS_DURING_LEARN], capture_output=True,
                                    text=True, check=True).stdout)
    assert out["compiled_passes"]  # the test extra installs SciPy
    assert len(out["blas"]) >= 2 and all(threads == 1 for _, threads in out["blas"]), out["blas"]
