"""``fused.FusedLoss`` against its specification ``losses.ppo_loss``, and its bad-input contract.

The law: for any networks, minibatch and coefficients, the fused step returns the loss, every
gradient and every diagnostic of ``ppo_loss`` (on advantages normalised by
``losses.normalize_advantages`` when asked to): to 1e-9 in float64; in float32, to 1e-3 of the
largest entry of the float64 reference on the same values (float32 rounding, amplified where the
per-sample terms cancel).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import fused as fused_module
from ppo_np.fused import INPUT_KERNEL_MAX_FAN_IN, INPUT_KERNEL_MAX_ROWS, FusedLoss
from ppo_np.heads import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from ppo_np.losses import STAT_KEYS, LossCoefs, Minibatch, ppo_loss
from ppo_np.optim import Adam
from ppo_np.policy import Actor, Critic
from ppo_np.surrogate import normalize_advantages

LAWS = settings(deadline=None, max_examples=60)


def _problem(discrete, dtype, activation, hidden, B, seed, old_policy=True, obs_dim=5, tau=1.0):
    """Perturbed networks, and a minibatch whose ratios spread well beyond the clip range."""
    rng = np.random.default_rng(seed)
    n = 4 if discrete else 3
    actor = Actor(obs_dim, Categorical(n) if discrete else DiagGaussian(n), hidden, activation, rng=rng, dtype=dtype,
                  log_std_init=-0.2)
    critic = Critic(obs_dim, hidden, activation, rng=rng, dtype=dtype)
    for p in (*actor.params.values(), *critic.params.values()):
        p += (0.3 * rng.standard_normal(p.shape)).astype(dtype)
    cast = lambda x: np.asarray(x, dtype=dtype)  # noqa: E731
    obs = cast(rng.standard_normal((B, obs_dim)))
    y = actor.forward(obs)[0]
    if discrete:
        actions = rng.integers(0, n, B)
    elif dtype == "float64":
        actions = cast(rng.standard_normal((B, n)))          # far from the means too: |log pi| in the thousands
    else:
        # float32: drawn from the policy, as a rollout stores them. Far from the means |log pi| reaches the
        # thousands, and its float32 rounding (|log pi| 2^-24, in both this loss and NumPy's) alone moves
        # the ratio, and with it every gradient, by more than the float32 tolerance of the checks below.
        actions = actor.head.sample(y, actor.head.noise(rng, B), tau)
    logp_old = actor.head.log_prob(y, actions, tau)   # r = exp(noise): e^{+-0.6} is typical
    values = critic(obs)
    mb = Minibatch(obs, actions, cast(logp_old + 0.3 * rng.standard_normal(B)), cast(2 * rng.standard_normal(B)),
                   cast(values + rng.standard_normal(B)), cast(values + 0.3 * rng.standard_normal(B)),
                   cast(y + 0.3 * rng.standard_normal(y.shape)) if old_policy else None)
    return actor, critic, mb


def _assert_matches(fused, loss, stats, ref, tol, B):
    scale = lambda x: tol * (1.0 + np.max(np.abs(x)))  # noqa: E731
    assert abs(loss - ref.loss) <= scale(ref.loss)
    for got, want in ((fused.actor_grads, ref.actor_grads), (fused.critic_grads, ref.critic_grads)):
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=scale(want[name]), err_msg=name)
    assert list(stats) == list(STAT_KEYS)
    for key in STAT_KEYS:
        if key == "clip_frac":  # a count: a ratio within rounding of 1 +- eps may land either side
            assert abs(stats[key] - ref.stats[key]) <= (0 if tol < 1e-6 else 2 / B), key
        elif math.isnan(ref.stats[key]):
            assert math.isnan(stats[key]), key
        else:
            assert abs(stats[key] - ref.stats[key]) <= scale(ref.stats[key]), key


@LAWS
@given(discrete=st.booleans(), dtype=st.sampled_from(["float64", "float32"]),
       activation=st.sampled_from(["tanh", "relu", "identity"]),
       hidden=st.sampled_from([(), (8,), (16, 16), (8, 16, 8)]), B=st.integers(1, INPUT_KERNEL_MAX_ROWS + 16),
       surrogate=st.sampled_from(["clip", "penalty"]), vf_clip=st.sampled_from([None, 0.05, 0.5]),
       tau=st.floats(0.3, 3.0), clip_eps=st.floats(0.01, 0.5), ent_coef=st.sampled_from([0.0, 0.01, 0.3]),
       normalize=st.booleans(), old_policy=st.booleans(), seed=st.integers(0, 2**16),
       obs_dim=st.sampled_from([1, 5, INPUT_KERNEL_MAX_FAN_IN + 1]), compiled_passes=st.booleans())
def test_fused_loss_equals_ppo_loss(discrete, dtype, activation, hidden, B, surrogate, vf_clip, tau, clip_eps,
                                    ent_coef, normalize, old_policy, seed, obs_dim, compiled_passes):
    """Every configuration, the first layer in the kernel (fan-in 1 and 5 on up to ``INPUT_KERNEL_MAX_ROWS``
    rows) and through BLAS (wider, or more rows), the networks' passes compiled and run as Python."""
    old_policy = old_policy or surrogate == "penalty"
    actor, critic, mb = _problem(discrete, dtype, activation, hidden, B, seed, old_policy, obs_dim, tau)
    coefs = LossCoefs(surrogate=surrogate, clip_eps=clip_eps, beta=0.7, vf_coef=0.5, vf_clip=vf_clip,
                      ent_coef=ent_coef, temperature=tau)
    fused = FusedLoss(actor, critic, max_rows=INPUT_KERNEL_MAX_ROWS + 16, compiled_passes=compiled_passes)
    loss, stats = fused(mb, coefs, normalize_advantages=normalize)
    if dtype == "float32":  # the reference in float64 on the same values: only the fused side's rounding is left
        actor, critic, mb = _float64_twin(actor, critic, mb, discrete, activation, hidden, obs_dim)
    ref = ppo_loss(actor, critic, mb._replace(advantages=normalize_advantages(mb.advantages)) if normalize else mb,
                   coefs)
    # float32: sums of B terms of either sign, each rounded to 2^-24, relative to the largest entry
    _assert_matches(fused, loss, stats, ref, 1e-9 if dtype == "float64" else 1e-3, B)


def _float64_twin(actor, critic, mb, discrete, activation, hidden, obs_dim):
    rng = np.random.default_rng(0)
    twin_actor = Actor(obs_dim, actor.head, hidden, activation, rng=rng, dtype="float64")
    twin_critic = Critic(obs_dim, hidden, activation, rng=rng, dtype="float64")
    for twin, net in ((twin_actor, actor), (twin_critic, critic)):
        for name, p in net.params.items():
            twin.params[name][...] = p
    up = lambda x: x if x is None or x.dtype.kind == "i" else x.astype(np.float64)  # noqa: E731
    return twin_actor, twin_critic, Minibatch(*(up(x) for x in mb))


def test_fused_loss_reuses_its_buffers_across_minibatch_sizes():
    """A short last minibatch, then a full one again: each call sees only its own rows."""
    actor, critic, _ = _problem(True, "float64", "tanh", (16, 16), 1, 0)
    fused = FusedLoss(actor, critic, max_rows=32)
    coefs = LossCoefs()
    for B, seed in ((32, 1), (7, 2), (32, 3)):
        mb = _problem(True, "float64", "tanh", (16, 16), B, seed)[2]
        loss, stats = fused(mb, coefs)
        ref = ppo_loss(actor, critic, mb, coefs)
        _assert_matches(fused, loss, stats, ref, 1e-9, B)


def test_step_flat_is_step():
    """Adam.step_flat on FusedLoss's gradient vector makes exactly the step Adam.step makes on the dict."""
    actor, critic, mb = _problem(False, "float32", "tanh", (16, 16), 24, 5)
    fused = FusedLoss(actor, critic, max_rows=24)
    fused(mb, LossCoefs())
    twin = {k: p.copy() for k, p in actor.params.items()}
    Adam(actor.params, lr=1e-2).step_flat(fused.actor_flat_grad)
    Adam(twin, lr=1e-2).step({k: g.copy() for k, g in fused.actor_grads.items()})
    for k in twin:
        np.testing.assert_array_equal(actor.params[k], twin[k], err_msg=k)
    n = fused.actor_flat_grad.size
    with pytest.raises(ValueError, match=rf"step_flat needs a gradient vector of shape \({n},\), got \({n - 1},\)"):
        Adam(twin).step_flat(fused.actor_flat_grad[:-1])


@pytest.mark.parametrize("change, message", [
    (lambda mb: mb._replace(obs=np.zeros((9, 5))), r"a minibatch of 9 rows; this FusedLoss takes 1 to 8"),
    (lambda mb: mb._replace(obs=np.zeros((0, 5))), r"a minibatch of 0 rows"),
    (lambda mb: mb._replace(obs=np.zeros((8, 4))), r"observations must have shape \(8, 5\), got \(8, 4\)"),
    (lambda mb: mb._replace(returns=np.zeros(7)), r"returns must have shape \(8,\), got \(7,\)"),
    (lambda mb: mb._replace(actions=np.full(8, 4)), r"actions must be 8 integers in \[0, 4\)"),
    (lambda mb: mb._replace(dist_old=None), r"'penalty' surrogate needs mb.dist_old"),
])
def test_bad_minibatches_are_named(change, message):
    actor, critic, mb = _problem(True, "float64", "tanh", (8,), 8, 0)
    with pytest.raises(ValueError, match=message):
        FusedLoss(actor, critic, max_rows=8)(change(mb), LossCoefs(surrogate="penalty"))


def test_bad_construction_is_named():
    actor, critic, mb = _problem(False, "float64", "tanh", (8,), 8, 0)
    with pytest.raises(ValueError, match="max_rows must be an integer >= 1, got 0"):
        FusedLoss(actor, critic, max_rows=0)
    with pytest.raises(ValueError, match="coefs must be a LossCoefs, got dict"):
        FusedLoss(actor, critic, max_rows=8)(mb, {"clip_eps": 0.2})
    with pytest.raises(ValueError, match=r"actions must have shape \(8, 3\), got \(8, 2\)"):
        FusedLoss(actor, critic, max_rows=8)(mb._replace(actions=np.zeros((8, 2))), LossCoefs())
    with pytest.raises(ValueError, match=r"dist_old must have shape \(8, 6\), got \(8, 3\)"):
        FusedLoss(actor, critic, max_rows=8)(mb._replace(dist_old=mb.dist_old[:, :3]), LossCoefs())


@settings(deadline=None, max_examples=40)
@given(head=st.sampled_from(["categorical", "gaussian", "bernoulli", "multicategorical"]),
       dtype=st.sampled_from(["float64", "float32"]), hidden=st.sampled_from([(), (8,), (16, 16)]),
       B=st.integers(1, INPUT_KERNEL_MAX_ROWS + 16), obs_dim=st.sampled_from([3, INPUT_KERNEL_MAX_FAN_IN + 1]),
       surrogate=st.sampled_from(["clip", "penalty"]), normalize=st.booleans(), seed=st.integers(0, 2**16))
def test_the_compiled_pass_is_the_python_one_bit_for_bit(head, dtype, hidden, B, obs_dim, surrogate, normalize, seed):
    """``COMPILED_LOSS_PASS`` and ``loss_pass`` run as Python are one source: the same loss, statistics and
    gradients to the last bit, for every head. Networks without hidden layers always take the Python pass."""
    rng = np.random.default_rng(seed)
    head = {"categorical": Categorical(3), "gaussian": DiagGaussian(2), "bernoulli": Bernoulli(2),
            "multicategorical": MultiCategorical([2, 3])}[head]
    actor = Actor(obs_dim, head, hidden, rng=rng, dtype=dtype)
    critic = Critic(obs_dim, hidden, rng=rng, dtype=dtype)
    obs = rng.standard_normal((B, obs_dim)).astype(dtype)
    actions, logp, y = actor.act(obs, rng, 1.0)
    values = critic(obs)
    noise = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    mb = Minibatch(obs, actions, logp + 0.3 * noise(B), noise(B), values + noise(B), values + 0.3 * noise(B),
                   y + 0.3 * noise(*y.shape))
    coefs = LossCoefs(surrogate=surrogate, beta=0.7, vf_clip=0.2, ent_coef=0.01)
    results = []
    for compiled in (True, False):
        fused = FusedLoss(actor, critic, max_rows=INPUT_KERNEL_MAX_ROWS + 16, compiled_passes=compiled)
        assert (fused._loss_pass is fused_module.COMPILED_LOSS_PASS) == (compiled and hidden != ())
        loss, stats = fused(mb, coefs, normalize_advantages=normalize)
        results.append((loss, stats, fused.actor_flat_grad.copy(), fused.critic_flat_grad.copy()))
    (loss, stats, actor_grad, critic_grad), (py_loss, py_stats, py_actor_grad, py_critic_grad) = results
    assert np.array_equal(loss, py_loss, equal_nan=True)
    assert all(np.array_equal(stats[k], py_stats[k], equal_nan=True) for k in stats), (stats, py_stats)
    np.testing.assert_array_equal(actor_grad, py_actor_grad)
    np.testing.assert_array_equal(critic_grad, py_critic_grad)


def test_the_passes_are_compiled_where_numba_can_call_blas(monkeypatch):
    """With SciPy (the test extra has it) the default compiles them; without, they run as Python, and asking
    for them compiled names the extra."""
    actor, critic, _ = _problem(False, "float64", "tanh", (8,), 8, 0)
    assert FusedLoss(actor, critic, max_rows=8).compiled_passes
    monkeypatch.setattr(fused_module, "numba_can_call_blas", lambda: False)
    assert not FusedLoss(actor, critic, max_rows=8).compiled_passes
    with pytest.raises(ValueError, match=r"compiled_passes=True needs SciPy.*pip install 'ppo-np\[fast\]'"):
        FusedLoss(actor, critic, max_rows=8, compiled_passes=True)
    with pytest.raises(ValueError, match="compiled_passes must be None .*, True or False, got 'yes'"):
        FusedLoss(actor, critic, max_rows=8, compiled_passes="yes")


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 5), hidden=st.sampled_from([(), (8,), (16, 16)]), B=st.integers(1, 40),
       surrogate=st.sampled_from(["clip", "penalty"]), tau=st.floats(0.3, 3.0), ent_coef=st.sampled_from([0.0, 0.3]),
       normalize=st.booleans(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("multi", [False, True], ids=["bernoulli", "multicategorical"])
def test_fused_loss_equals_ppo_loss_for_the_later_heads(multi, n, hidden, B, surrogate, tau, ent_coef, normalize,
                                                        seed):
    """Heads added after the fused step was written (MultiBinary, MultiDiscrete actions): the same loss,
    gradients and statistics as ``ppo_loss``, float64, with no change outside their own files."""
    rng = np.random.default_rng(seed)
    head = MultiCategorical([n, 1, n + 1]) if multi else Bernoulli(n)
    actor = Actor(5, head, hidden, rng=rng, dtype="float64")
    critic = Critic(5, hidden, rng=rng, dtype="float64")
    for p in (*actor.params.values(), *critic.params.values()):
        p += 0.5 * rng.standard_normal(p.shape)
    obs = rng.standard_normal((B, 5))
    actions, logp, y = actor.act(obs, rng, tau)
    values = critic(obs)
    mb = Minibatch(obs, actions, logp + 0.3 * rng.standard_normal(B), 2 * rng.standard_normal(B),
                   values + rng.standard_normal(B), values + 0.3 * rng.standard_normal(B),
                   y + 0.3 * rng.standard_normal(y.shape))
    coefs = LossCoefs(surrogate=surrogate, clip_eps=0.2, beta=0.7, vf_coef=0.5, vf_clip=0.5, ent_coef=ent_coef,
                      temperature=tau)
    fused = FusedLoss(actor, critic, max_rows=40)
    loss, stats = fused(mb, coefs, normalize_advantages=normalize)
    ref = ppo_loss(actor, critic, mb._replace(advantages=normalize_advantages(mb.advantages)) if normalize else mb,
                   coefs)
    _assert_matches(fused, loss, stats, ref, 1e-9, B)


@settings(deadline=None, max_examples=40)
@given(head=st.sampled_from(["categorical", "gaussian", "bernoulli", "multicategorical"]),
       dtype=st.sampled_from(["float64", "float32"]), hidden=st.sampled_from([(), (8,), (16, 16)]),
       n=st.integers(1, 3 * INPUT_KERNEL_MAX_ROWS), max_rows=st.sampled_from([7, INPUT_KERNEL_MAX_ROWS + 16]),
       obs_dim=st.sampled_from([3, INPUT_KERNEL_MAX_FAN_IN + 1]), tau=st.floats(0.3, 3.0), seed=st.integers(0, 2**16))
def test_mean_kl_is_the_heads_kl_over_the_rows(head, dtype, hidden, n, max_rows, obs_dim, tau, seed):
    """``FusedLoss.mean_kl`` is the mean of the head's ``kl(y_old, y, tau)`` (NumPy, float64) over the rows
    asked for, in chunks of max_rows or one; the compiled pass and the Python one give it to the bit."""
    rng = np.random.default_rng(seed)
    head = {"categorical": Categorical(3), "gaussian": DiagGaussian(2), "bernoulli": Bernoulli(2),
            "multicategorical": MultiCategorical([2, 3])}[head]
    actor = Actor(obs_dim, head, hidden, rng=rng, dtype=dtype)
    critic = Critic(obs_dim, hidden, rng=rng, dtype=dtype)
    obs = rng.standard_normal((n + 5, obs_dim)).astype(dtype)
    actions, logp, y = actor.act(obs, rng, tau)
    batch = Minibatch(obs, actions, logp, np.zeros(n + 5, dtype), np.zeros(n + 5, dtype), np.zeros(n + 5, dtype),
                      (y + 0.3 * rng.standard_normal(y.shape)).astype(dtype))
    rows = np.sort(rng.choice(n + 5, n, replace=False))
    want = np.mean(head.kl(batch.dist_old[rows].astype(np.float64), actor.forward(obs[rows])[0].astype(np.float64),
                           tau))
    got = [FusedLoss(actor, critic, max_rows, compiled_passes=compiled).mean_kl(batch, rows, tau)
           for compiled in (True, False)]
    assert got[0] == got[1]
    assert got[0] == pytest.approx(want, rel=1e-9 if dtype == "float64" else 1e-3, abs=1e-12 if dtype == "float64"
                                   else 1e-5)
    assert math.isnan(FusedLoss(actor, critic, max_rows).mean_kl(batch, rows[:0], tau))
    with pytest.raises(ValueError, match="the exact KL needs batch.dist_old"):
        FusedLoss(actor, critic, max_rows).mean_kl(batch._replace(dist_old=None), rows, tau)
