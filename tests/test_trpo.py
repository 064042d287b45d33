"""TRPO: the Fisher-vector product, conjugate gradient, the trust-region step, and
the agent with ``algo="trpo"``.

Laws, in float64 (the tangent pass under F v is tested in ``test_tangents.py``): F is symmetric, PSD, and the Hessian of the mean KL at
pi = pi_old; CG solves F x = g like a dense solver; the step has the KL radius to second order; every
accepted step satisfies the constraint and improves the surrogate, every rejected one leaves the
parameters bit for bit. Then the agent: determinism, metrics, checkpoints, and a learning test.

Measured when written (this machine, 1 BLAS thread, CartPole-v1 preset with algo="trpo", 50k steps,
evaluation over 20 episodes): seeds 0, 1, 2, 4 -> 500.0, seed 3 -> 408.2; 5-8 s per run.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis import assume

from support import actor_point as point
from support import head_of

from ppo_np import PPO, PPOConfig, evaluate, trpo
from ppo_np.config import preset_for
from ppo_np.heads import Categorical
from ppo_np.losses import Minibatch
from ppo_np.params import assign_flat, flatten, unflatten
from ppo_np.rundir import CHECKPOINT_NAME, METRIC_FIELDS

LAW = settings(deadline=None, max_examples=25)
TOL = 1e-6
H = 1e-6

seeds = st.integers(0, 2**32 - 1)
policies = st.booleans()                     # discrete?
activations = st.sampled_from(["tanh", "relu"])


def rollout_batch(actor, obs, tau, rng, adv=None) -> Minibatch:
    """A batch as the old policy (the actor now) would have collected it at these states."""
    actions, logp, out = actor.act(obs, rng, temperature=tau)
    B = obs.shape[0]
    adv = rng.standard_normal(B) if adv is None else adv
    return Minibatch(obs, actions, logp, adv, np.zeros(B), np.zeros(B), out)


def fvp(actor, obs, tau, damping=0.0):
    p = trpo.fisher_point(actor, obs, tau)
    return lambda v: trpo.fisher_vector_product(actor, p, v, damping)


# --- forward mode --------------------------------------------------------------------------------------


# --- the Fisher-vector product -------------------------------------------------------------------------

@LAW
@given(seed=seeds, discrete=policies)
def test_fisher_is_symmetric_and_psd(seed, discrete):
    actor, obs, tau, rng = point(seed, discrete)
    F = fvp(actor, obs, tau)
    P = flatten(actor.params).size
    v, w = rng.standard_normal(P), rng.standard_normal(P)
    Fv, Fw = F(v), F(w)
    scale = np.linalg.norm(Fv) * np.linalg.norm(w) + np.linalg.norm(Fw) * np.linalg.norm(v)
    assert abs(w @ Fv - v @ Fw) <= 1e-12 * scale                                  # v^T F w = w^T F v
    assert v @ Fv >= -1e-12 * np.linalg.norm(Fv) * np.linalg.norm(v)            # v^T F v >= 0
    assert np.allclose(fvp(actor, obs, tau, damping=0.3)(v), Fv + 0.3 * v, rtol=1e-13, atol=1e-13)


@LAW
@given(seed=seeds, discrete=policies, activation=activations)
def test_fisher_is_the_kl_hessian(seed, discrete, activation):
    """F v = d/dt grad KLbar(theta_old + t v) at t = 0, the Hessian-vector product at pi = pi_old."""
    actor, obs, tau, rng = point(seed, discrete, activation)
    dist_old = actor.forward(obs)[0]
    theta = flatten(actor.params)
    v = rng.standard_normal(theta.size)
    Fv = fvp(actor, obs, tau)(v)

    def grad(t):
        assign_flat(actor.params, theta + t * v)
        return flatten(trpo.mean_kl_gradient(actor, obs, dist_old, tau))

    def relu_signs(t):
        assign_flat(actor.params, theta + t * v)
        h, signs = obs, []
        for layer in range(actor.mlp.n_layers - 1):
            h = h @ actor.mlp.params[f"W{layer}"] + actor.mlp.params[f"b{layer}"]
            signs.append(h > 0)
            h = np.maximum(h, 0.0)
        return signs

    if activation == "relu":  # the law is of a smooth KL: a unit whose sign flips within +-H v is a kink
        assume(all(np.array_equal(a, b) for t in (-H, H) for a, b in zip(relu_signs(t), relu_signs(0.0))))
    np.testing.assert_allclose(grad(0.0), 0.0, atol=1e-14)                     # KLbar is at its minimum
    hv = (grad(H) - grad(-H)) / (2 * H)
    assert np.linalg.norm(Fv - hv) < TOL * (np.linalg.norm(Fv) + np.linalg.norm(hv))


def test_gaussian_log_std_block_is_two():
    """F restricted to log_std is 2 I, with no coupling to the network weights."""
    actor, obs, tau, _ = point(3, discrete=False)
    F = fvp(actor, obs, tau)
    names = list(actor.params)
    D = actor.head.net_dim
    for d in range(D):
        e = {k: np.zeros_like(p) for k, p in actor.params.items()}
        e["log_std"][d] = 1.0
        col = unflatten(F(flatten(e)), actor.params)
        expected = np.zeros(D)
        expected[d] = 2.0
        np.testing.assert_allclose(col["log_std"], expected, atol=1e-14)
        assert all(np.all(col[k] == 0) for k in names if k != "log_std")


# --- conjugate gradient --------------------------------------------------------------------------------

def dense(matvec, P):
    return np.column_stack([matvec(e) for e in np.eye(P)])


@LAW
@given(seed=seeds, discrete=policies, damping=st.sampled_from([1e-2, 0.1, 1.0]))
def test_cg_solves_small_systems(seed, discrete, damping):
    """On a small actor, CG with P iterations solves (F + c I) x = g as np.linalg.solve does."""
    rng = np.random.default_rng(seed)
    from ppo_np.policy import Actor

    actor = Actor(2, head_of(discrete), (3,), rng=rng)
    for p in actor.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    obs = rng.standard_normal((6, 2))
    A = fvp(actor, obs, 1.7, damping)
    P = flatten(actor.params).size
    M = dense(A, P)
    np.testing.assert_allclose(M, M.T, atol=1e-13)
    g = rng.standard_normal(P)
    result = trpo.conjugate_gradient(A, g, iters=3 * P, tol=1e-24)
    x = np.linalg.solve(M, g)
    assert np.linalg.norm(result.x - x) <= 1e-6 * np.linalg.norm(x)
    assert result.residual <= 1e-6
    assert np.linalg.norm(g - M @ result.x) <= 1e-6 * np.linalg.norm(g)


@LAW
@given(seed=seeds, n=st.integers(1, 12))
def test_cg_on_spd_matrices(seed, n):
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((n, n))
    M = R @ R.T + 0.5 * np.eye(n)
    b = rng.standard_normal(n)
    result = trpo.conjugate_gradient(lambda v: M @ v, b, iters=4 * n, tol=1e-28)
    np.testing.assert_allclose(M @ result.x, b, atol=1e-8 * np.linalg.norm(b))
    # one iteration is steepest descent with the exact step: x = (b^T b / b^T M b) b
    one = trpo.conjugate_gradient(lambda v: M @ v, b, iters=1, tol=0.0)
    np.testing.assert_allclose(one.x, (b @ b) / (b @ M @ b) * b, rtol=1e-12)
    assert one.iterations == 1
    zero = trpo.conjugate_gradient(lambda v: M @ v, np.zeros(n), iters=5)
    assert zero.iterations == 0 and zero.residual == 0.0 and not zero.x.any()


# --- the trust-region step -----------------------------------------------------------------------------

@settings(deadline=None, max_examples=10)
@given(seed=seeds, discrete=policies)
def test_step_has_the_kl_radius_to_second_order(seed, discrete):
    """s = beta x with beta = sqrt(2 delta / x^T F x): the quadratic model (1/2) s^T F s is delta exactly,
    so the exact KL of a small step is delta (1 + O(|s|)), and L gains g^T s (1 + O(|s|)).

    At delta = 1e-12 the worst relative errors over 600 test points were 7e-4 (KL) and 3e-4 (L); at
    delta = 1e-8 they reach 9e-2, since |s| ~ sqrt(2 delta / curvature) is large along flat directions."""
    actor, obs, tau, rng = point(seed, discrete)
    batch = rollout_batch(actor, obs, tau, rng)
    delta = 1e-12
    L_old = trpo.surrogate_and_kl(actor, batch, tau)[0]
    g = trpo.surrogate_gradient(actor, batch, tau)[1]
    F = fvp(actor, obs, tau)
    x = trpo.conjugate_gradient(F, g, iters=10).x
    s = math.sqrt(2 * delta / (x @ F(x))) * x
    assert 0.5 * s @ F(s) == pytest.approx(delta, rel=1e-12)
    assign_flat(actor.params, flatten(actor.params) + s)
    L_new, kl = trpo.surrogate_and_kl(actor, batch, tau)
    assert kl == pytest.approx(delta, rel=1e-2)
    assert L_new - L_old == pytest.approx(g @ s, rel=1e-2)


@LAW
@given(seed=seeds, discrete=policies, max_kl=st.sampled_from([1e-4, 1e-2, 0.1, 1.0]),
       damping=st.sampled_from([0.0, 0.1]))
def test_accepted_steps_satisfy_the_constraint(seed, discrete, max_kl, damping):
    actor, obs, tau, rng = point(seed, discrete)
    batch = rollout_batch(actor, obs, tau, rng)
    before = {k: p.copy() for k, p in actor.params.items()}
    step = trpo.trpo_step(actor, batch, tau, max_kl=max_kl, damping=damping)
    surrogate, kl = trpo.surrogate_and_kl(actor, batch, tau)
    assert (surrogate, kl) == (step.surrogate_new, step.kl)                        # reported at the final params
    if step.accepted:
        assert kl <= max_kl and surrogate > step.surrogate_old
        assert 0 <= step.backtracks < 10 and step.step_norm > 0
    else:
        assert all(np.array_equal(actor.params[k], before[k]) for k in before)
        assert step.step_norm == 0.0


@pytest.mark.parametrize("discrete", [True, False])
def test_violating_step_is_rejected_bit_identically(discrete):
    actor, obs, tau, rng = point(11, discrete)
    objects = {k: id(p) for k, p in actor.params.items()}
    batch = rollout_batch(actor, obs, tau, rng)
    before = {k: p.copy() for k, p in actor.params.items()}
    g = trpo.surrogate_gradient(actor, batch, tau)[1]
    surrogate_old = trpo.surrogate_and_kl(actor, batch, tau)[0]
    # far outside the trust region at every candidate: 1e3 g, 5e2 g
    ls = trpo.line_search(actor, batch, tau, 1e3 * g / np.linalg.norm(g), surrogate_old, max_kl=1e-3, steps=2)
    assert not ls.accepted and ls.backtracks == 2 and ls.step_norm == 0.0
    assert all(np.array_equal(actor.params[k], before[k]) for k in before)
    assert {k: id(p) for k, p in actor.params.items()} == objects           # restored in place
    # inside the region but downhill: the surrogate does not improve
    ls = trpo.line_search(actor, batch, tau, -1e-3 * g / np.linalg.norm(g), surrogate_old, max_kl=1.0, steps=3)
    assert not ls.accepted
    assert all(np.array_equal(actor.params[k], before[k]) for k in before)
    # and a small uphill step is accepted at once
    ls = trpo.line_search(actor, batch, tau, 1e-3 * g / np.linalg.norm(g), surrogate_old, max_kl=1.0, steps=3)
    assert ls.accepted and ls.backtracks == 0 and ls.surrogate > surrogate_old


def test_trpo_step_keeps_float32_restores_exact():
    """With float32 parameters a rejected search still restores every bit."""
    from ppo_np.policy import Actor

    rng = np.random.default_rng(5)
    actor = Actor(4, Categorical(2), (8,), rng=rng, dtype="float32")
    obs = rng.standard_normal((32, 4)).astype(np.float32)
    batch = rollout_batch(actor, obs, 1.0, rng)
    before = {k: p.copy() for k, p in actor.params.items()}
    _, g = trpo.surrogate_gradient(actor, batch, 1.0)
    ls = trpo.line_search(actor, batch, 1.0, 1e4 * g, -np.inf, max_kl=1e-12, steps=3)
    assert not ls.accepted
    assert all(actor.params[k].dtype == np.float32 and np.array_equal(actor.params[k], before[k]) for k in before)


def test_zero_advantages_leave_the_policy_unchanged():
    actor, obs, tau, rng = point(2, True)
    batch = rollout_batch(actor, obs, tau, rng, adv=np.zeros(obs.shape[0]))
    before = flatten(actor.params)
    step = trpo.trpo_step(actor, batch, tau)
    assert not step.accepted and step.grad_norm == 0.0 and step.step_norm == 0.0
    assert np.array_equal(flatten(actor.params), before)


def test_bad_arguments_are_named():
    actor, obs, tau, rng = point(4, False)
    batch = rollout_batch(actor, obs, tau, rng)
    with pytest.raises(ValueError, match="max_kl"):
        trpo.trpo_step(actor, batch, tau, max_kl=0.0)
    with pytest.raises(ValueError, match="line_search_decay"):
        trpo.trpo_step(actor, batch, tau, line_search_decay=1.0)
    with pytest.raises(ValueError, match="dist_old"):
        trpo.trpo_step(actor, batch._replace(dist_old=None), tau)
    with pytest.raises(ValueError, match="cg iterations"):
        trpo.conjugate_gradient(lambda v: v, np.ones(2), iters=0)
    for name, value in (("trpo_max_kl", 0.0), ("cg_iters", 0), ("cg_tol", -1.0), ("cg_damping", -0.1),
                        ("line_search_steps", 0), ("line_search_decay", 1.0), ("line_search_decay", 0.0)):
        with pytest.raises(ValueError, match=name):
            PPOConfig(**{name: value})


# --- the agent -----------------------------------------------------------------------------------------

TINY = dict(num_envs=2, num_steps=16, minibatch_size=8, update_epochs=2, hidden_sizes=(16, 16), algo="trpo")


@pytest.mark.parametrize("env_id, changes", [("CartPole-v1", dict(temperature=1.5)),
                                             ("Pendulum-v1", dict(dtype="float64", vf_clip=0.2)),
                                             ("CartPole-v1", dict(trpo_max_kl=0.02, trpo_max_kl_final=0.002))])
def test_agent_is_deterministic_and_keeps_every_step_in_the_region(tmp_path, env_id, changes):
    cfg = PPOConfig(**TINY, **changes)
    rows_a, rows_b = [], []
    a = PPO(env_id, cfg, run_dir=tmp_path)
    a.learn(160, callback=lambda agent, row: rows_a.append(row))
    b = PPO(env_id, cfg)
    b.learn(160, callback=lambda agent, row: rows_b.append(row))
    strip = ("wall_s", "steps_per_s")
    assert json.dumps([{k: v for k, v in r.items() if k not in strip} for r in rows_a]) == \
        json.dumps([{k: v for k, v in r.items() if k not in strip} for r in rows_b])
    assert a.actor_opt.t == 0                                   # TRPO never steps the actor's Adam
    assert a.critic_opt.t >= len(rows_a) * cfg.update_epochs    # the critic's own Adam, every epoch
    final = cfg.trpo_max_kl if cfg.trpo_max_kl_final is None else cfg.trpo_max_kl_final
    for k, row in enumerate(rows_a):   # update k runs at progress k * batch / 160, delta annealed linearly
        assert math.isclose(row["max_kl"], cfg.trpo_max_kl + (final - cfg.trpo_max_kl) * k * cfg.batch_size / 160)
        assert row["exact_kl"] <= row["max_kl"]
        assert 0 <= row["line_search_backtracks"] <= cfg.line_search_steps
        assert row["step_size"] >= 0 and 0 <= row["cg_residual"] <= 1 and math.isnan(row["clip_frac"])
    with open(tmp_path / "metrics.csv") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == list(METRIC_FIELDS) and len(lines) == len(rows_a)
    assert all(float(r["line_search_backtracks"]) >= 0 for r in lines)


def test_ppo_rows_have_nan_trpo_columns():
    rows = []
    PPO("CartPole-v1", PPOConfig(**{**TINY, "algo": "clip"})).learn(32, callback=lambda a, r: rows.append(r))
    assert all(math.isnan(r[k]) for r in rows for k in ("max_kl", "step_size", "line_search_backtracks", "cg_residual"))


def test_trpo_save_load_and_resume(tmp_path):
    cfg = PPOConfig(**TINY, lr_schedule="linear")
    straight = []
    PPO("CartPole-v1", cfg).learn(192, callback=lambda a, r: straight.append(r))
    first = PPO("CartPole-v1", cfg, run_dir=tmp_path)
    first.learn(192, callback=lambda a, r: a.global_step < 96)  # stopped half-way
    loaded = PPO.load(tmp_path / CHECKPOINT_NAME, run_dir=tmp_path)
    assert loaded.config.algo == "trpo" and loaded.config.trpo_max_kl == cfg.trpo_max_kl
    obs = np.random.default_rng(0).normal(size=(5, loaded.obs_dim))
    np.testing.assert_array_equal(first.predict(obs), loaded.predict(obs))
    for k in first.actor.params:
        np.testing.assert_array_equal(first.actor.params[k], loaded.actor.params[k])
    resumed = []
    loaded.learn(192, callback=lambda a, r: resumed.append(r))
    assert [r["update"] for r in resumed] == [4, 5, 6]
    assert [r["learning_rate"] for r in resumed] == pytest.approx([r["learning_rate"] for r in straight[3:]])


def test_cli_trains_trpo(tmp_path, capsys):
    from ppo_np.cli import main

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--algo", "trpo", "--trpo-max-kl", "0.02", "--cg-iters", "5",
                 "--total-steps", "64", "--run-dir", str(run), "--json", "--num-envs", "2", "--num-steps", "16",
                 "--minibatch-size", "16",
                 "--eval-episodes", "1", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["algo"], config["trpo_max_kl"], config["cg_iters"]) == ("trpo", 0.02, 5)


@pytest.mark.slow
def test_trpo_learns_cartpole():
    """The CartPole-v1 preset with algo="trpo" (the TRPO defaults), seed 1, 50k steps: 500.0 when written."""
    agent = PPO("CartPole-v1", preset_for("CartPole-v1", continuous=False).replace(algo="trpo", seed=1))
    agent.learn(50_000)
    agent.close()
    assert evaluate(agent, episodes=20, seed=123)["mean_return"] >= 400


# --- CG's reported residual ----------------------------------------------------------------------------

def krylov_iterate(M, b, k):
    """The k-th CG iterate in exact arithmetic: the minimiser of the M-norm of the error over the Krylov space
    K_k = span(b, M b, ..., M^{k-1} b), densely: x_k = Q (Q^T M Q)^{-1} Q^T b, Q an orthonormal basis of K_k
    (Arnoldi, Gram-Schmidt twice)."""
    cols = [b / np.linalg.norm(b)]
    for _ in range(k - 1):
        v = M @ cols[-1]
        for _ in range(2):
            for q in cols:
                v = v - (q @ v) * q
        cols.append(v / np.linalg.norm(v))
    Q = np.column_stack(cols)
    return Q @ np.linalg.solve(Q.T @ M @ Q, Q.T @ b)


def relative_residual(M, b, x):
    return float(np.linalg.norm(b - M @ x) / np.linalg.norm(b))


@LAW
@given(seed=seeds, n=st.integers(2, 10), data=st.data())
def test_cg_residual_is_the_true_relative_residual_of_its_iterate(seed, n, data):
    """After k products (k <= n, truncated or not), ``conjugate_gradient`` returns the k-th CG iterate (the
    dense Krylov minimiser) and reports residual = ||b - A x|| / ||b|| of that x: the recursion's r agrees
    with the residual computed directly."""
    k = data.draw(st.integers(1, n), label="iters")
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((n, n))
    M = R @ R.T + 0.5 * np.eye(n)
    b = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3)              # ||b|| far from 1
    result = trpo.conjugate_gradient(lambda v: M @ v, b, iters=k, tol=0.0)
    assert result.iterations == k
    # at convergence the recursion's r and b - A x differ by rounding (1e-12 against 2e-16 seen)
    assert result.residual == pytest.approx(relative_residual(M, b, result.x), rel=1e-6, abs=1e-9)
    x_k = krylov_iterate(M, b, k)
    assert np.linalg.norm(result.x - x_k) <= 1e-6 * np.linalg.norm(x_k)


@settings(deadline=None, max_examples=15)
@given(seed=seeds, discrete=policies, cg_iters=st.integers(1, 4), stop_early=st.booleans())
def test_trpo_step_reports_the_residual_of_its_own_solve(seed, discrete, cg_iters, stop_early):
    """``trpo_step``'s cg_residual and cg_iterations are those of its solve of (F + c I) x = g: the k-th CG
    iterate, k = cg_iters, or fewer when cg_tol stops it (the first k with ||r_k||^2 <= cg_tol); and the
    step it reports (expected_improvement g^T s, the parameters' move when accepted) is s = beta x."""
    actor, obs, tau, rng = point(seed, discrete)
    batch = rollout_batch(actor, obs, tau, rng)
    damping, max_kl = 0.1, 0.01
    g = trpo.surrogate_gradient(actor, batch, tau)[1]
    M = dense(fvp(actor, obs, tau, damping), g.size)
    residuals = [1.0] + [relative_residual(M, g, krylov_iterate(M, g, k)) for k in (1, 2)]   # ||r_k|| / ||g||
    if stop_early:
        cg_tol = 1.01 * (residuals[2] * np.linalg.norm(g)) ** 2            # met at k = 2 at the latest
        k_stop = next(k for k, r in enumerate(residuals) if (r * np.linalg.norm(g)) ** 2 <= cg_tol)
        assume(all(abs((r * np.linalg.norm(g)) ** 2 / cg_tol - 1) > 5e-3 for r in residuals))
        cg_iters = 10
    else:
        cg_tol, k_stop = 0.0, cg_iters
    assume(k_stop >= 1)
    theta_old = flatten(actor.params)
    step = trpo.trpo_step(actor, batch, tau, max_kl=max_kl, cg_iters=cg_iters, cg_tol=cg_tol, damping=damping)
    x = krylov_iterate(M, g, k_stop)
    assert step.cg_iterations == k_stop
    assert step.cg_residual == pytest.approx(relative_residual(M, g, x), rel=1e-6, abs=1e-9)   # see above
    beta = math.sqrt(2 * max_kl / (x @ M @ x))
    assert step.expected_improvement == pytest.approx(beta * (g @ x), rel=1e-6)
    if step.accepted:
        s = flatten(actor.params) - theta_old
        expected = 0.5 ** step.backtracks * beta * x
        assert np.linalg.norm(s - expected) <= 1e-6 * np.linalg.norm(expected)
