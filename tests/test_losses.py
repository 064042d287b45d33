"""Laws of the PPO objectives (``ppo_np/losses.py``) and of the actor/critic chain (``ppo_np/policy.py``).

Gradient checks in float64 away from kinks (relative error < 1e-6), hypothesis properties of the
surrogates, the value losses and the importance ratio, exact importance-sampling identities on discrete
distributions, and the bad-input contract.
"""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from support import actor_critic_batch as _setup
from support import head_of

from ppo_np.gradcheck import check_gradients
from ppo_np.gradcheck_suite import _check_surrogates, _check_value_losses, check_ppo_loss
from ppo_np.heads import Categorical
from ppo_np.ratios import importance_ratios
from ppo_np.losses import (STAT_KEYS, LossCoefs, clipped_value_loss, entropy_bonus, explained_variance, ppo_loss,
                           value_loss)
from ppo_np.surrogate import clipped_objective, clipped_surrogate, kl_penalty_surrogate
from ppo_np.fused import FusedLoss
from ppo_np.surrogate import normalize_advantages

LAWS = settings(deadline=None, max_examples=60)


def _assert_ok(checks):
    bad = [c for c in checks if not c.ok]
    assert checks and not bad, bad


def vectors(n_min=1, n_max=16, lo=-5.0, hi=5.0):
    return st.integers(n_min, n_max).flatmap(lambda n: arrays(np.float64, n, elements=st.floats(lo, hi)))


def paired(n_arrays, lo=-5.0, hi=5.0, n_max=16):
    """``n_arrays`` float64 vectors of one common random length."""
    return st.integers(1, n_max).flatmap(
        lambda n: st.tuples(*[arrays(np.float64, n, elements=st.floats(lo, hi)) for _ in range(n_arrays)]))


# --- gradient checks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_surrogate_gradients(seed):
    """dL/dlogp of L^CLIP and dL/dlogp, dL/dKL of L^KLPEN, away from the clip kinks."""
    _assert_ok(_check_surrogates(np.random.default_rng(seed)))


@pytest.mark.parametrize("seed", range(4))
def test_value_loss_gradients(seed):
    """dL/dV of the plain and the clipped value loss (away from kinks), and of the entropy bonus."""
    _assert_ok(_check_value_losses(np.random.default_rng(seed)))


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
@pytest.mark.parametrize("surrogate", ["clip", "penalty"])
@pytest.mark.parametrize("vf_clip", [None, 0.2], ids=["vf", "vf_clip"])
@pytest.mark.parametrize("fused", [False, True], ids=["ppo_loss", "fused"])
def test_ppo_loss_gradients(discrete, surrogate, vf_clip, fused):
    """The full chain L = L_pi + c_v L^V - c_e H w.r.t. every actor (log_std included) and critic parameter,
    at tau = 0.6 and tau = 1.8: ``ppo_loss``, and the kernels of ``fused.FusedLoss`` directly (float64)."""
    rng = np.random.default_rng(sum(map(ord, f"{discrete}-{surrogate}-{vf_clip}")))
    for tau in (0.6, 1.8):
        _assert_ok(check_ppo_loss(rng, head_of(discrete, int(rng.integers(2, 4))), surrogate, temperature=tau, vf_clip=vf_clip, fused=fused))


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_penalty_gradient_through_the_distribution(discrete):
    """L^KLPEN as a function of the new distribution's parameters y (logits, or mean and log_std): the
    surrogate's (dlogp, dkl) chained through log_prob_backward and kl_backward (q side)."""
    rng = np.random.default_rng(1)
    B, n, tau, beta = 5, 3, 1.4, 0.8
    head = head_of(discrete, n)
    logp_old, adv = rng.uniform(-3, -0.5, B), rng.standard_normal(B)
    x = {"y": rng.standard_normal((B, head.dist_dim))}
    old = rng.standard_normal((B, head.dist_dim))
    a = head.sample(old, head.noise(rng, B), tau)

    def loss():
        return kl_penalty_surrogate(head.log_prob(x["y"], a, tau), logp_old, adv, head.kl(old, x["y"], tau), beta)

    def backward(dy):
        _, (dlogp, dkl), _ = loss()
        return {"y": dy * (head.log_prob_backward(dlogp, x["y"], a, tau) + head.kl_backward(dkl, old, x["y"], tau)[1])}

    _assert_ok(check_gradients("penalty-through-dist", lambda: loss()[0], backward, x, rng))


# --- the clipped surrogate ---------------------------------------------------------------------------

@LAWS
@given(paired(2, lo=-10.0, hi=10.0), st.floats(0.01, 0.5))
def test_pessimism(ratio_and_adv, eps):
    """min(r A, clip(r, 1-eps, 1+eps) A) <= r A for every sample: L^CLIP is a lower bound of the
    unclipped surrogate (as objectives to maximise)."""
    log_r, adv = ratio_and_adv
    ratio = np.exp(log_r / 3.0)                      # r in [e^-3.3, e^3.3]
    objective = clipped_objective(ratio, adv, eps)
    assert np.all(objective <= ratio * adv)
    # and it is exactly Spinning Up's case-by-case form min(r A, g(eps, A)), g = (1 + eps A/|A|) A,
    # written independently of np.clip: the bound is tight where r stays inside the range
    g = np.where(adv >= 0, (1 + eps) * adv, (1 - eps) * adv)
    np.testing.assert_allclose(objective, np.minimum(ratio * adv, g), rtol=1e-12, atol=1e-12)
    inside = (ratio >= 1 - eps) & (ratio <= 1 + eps)
    np.testing.assert_array_equal(objective[inside], (ratio * adv)[inside])


def _flat(ratio, adv, eps):
    return ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))


@LAWS
@given(paired(3, lo=-1.0, hi=1.0), st.floats(0.05, 0.4))
def test_clipped_gradient_is_zero_exactly_where_flat(arrs, eps):
    """dL^CLIP/dlogp is exactly 0 where (A > 0 and r > 1+eps) or (A < 0 and r < 1-eps), and exactly
    -r A / B everywhere else."""
    delta, logp_old, adv = arrs
    logp = logp_old + delta
    _, dlogp, _ = clipped_surrogate(logp, logp_old, adv, eps)
    ratio = importance_ratios(logp, logp_old, eps)[0]
    flat = _flat(ratio, adv, eps)
    assert np.all(dlogp[flat] == 0.0)
    np.testing.assert_array_equal(dlogp[~flat], (-ratio * adv / len(adv))[~flat])


@LAWS
@given(paired(3, lo=-1.0, hi=1.0), st.floats(0.05, 0.4))
def test_the_outside_share_is_the_weight_of_samples_the_min_lets_through(arrs, eps):
    """In [0, 1]; 0 unless some sample outside the clip range is not flat (A > 0 with r < 1 - eps, or
    A < 0 with r > 1 + eps), since flat samples weigh nothing; 1 when every sample with weight is outside."""
    delta, logp_old, adv = arrs
    logp = logp_old + delta
    _, dlogp, stats = clipped_surrogate(logp, logp_old, adv, eps)
    ratio = importance_ratios(logp, logp_old, eps)[0]
    outside = np.abs(ratio - 1.0) > eps
    assert not np.any(dlogp[outside & _flat(ratio, adv, eps)])    # the flat ones weigh nothing
    let_through = outside & (dlogp != 0)                          # (a subnormal r A / B rounds to 0 too)
    assert 0.0 <= stats["outside_share"] <= 1.0
    assert (stats["outside_share"] > 0) == bool(let_through.any())
    if let_through.any() and not np.any((dlogp != 0) & ~outside):
        assert stats["outside_share"] == 1.0


def test_clipped_gradient_boundary_convention():
    """At r = 1 +- eps exactly the unclipped derivative -r A / B is used: zero only strictly outside.

    eps is set from the ratio the kernel actually computes, so that r == 1 + eps (or 1 - eps) holds
    exactly in floating point (r - 1 and 1 - r are exact for r in [0.5, 2])."""
    logp_old = np.array([-1.0, -1.0])
    for log_r, adv, side in ((math.log(1.25), 2.0, +1), (math.log(0.75), -2.0, -1)):
        logp = logp_old + np.array([log_r, log_r + side * 1e-3])   # on the boundary, just outside it
        r = importance_ratios(logp, logp_old, 0.1)[0]
        eps = side * (r[0] - 1.0)
        assert 1.0 + side * eps == r[0]
        _, dlogp, _ = clipped_surrogate(logp, logp_old, np.array([adv, adv]), eps)
        assert dlogp[0] == -r[0] * adv / 2 and dlogp[0] != 0.0
        assert dlogp[1] == 0.0


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_clipped_gradient_at_r_one(discrete):
    """At r = 1 (logp_old = logp), the PPO-clip gradient is the plain policy gradient
    -(1/B) sum_b A_b grad_theta log pi(a_b | s_b), computed here one sample at a time."""
    actor, critic, mb, _ = _setup(discrete, seed=3, B=6, tau=1.3)
    coefs = LossCoefs(surrogate="clip", clip_eps=0.2, vf_coef=0.0, ent_coef=0.0, temperature=1.3)
    grads = ppo_loss(actor, critic, mb, coefs).actor_grads
    expected = {k: np.zeros_like(v) for k, v in actor.params.items()}
    for b in range(len(mb.obs)):
        y, cache = actor.forward(mb.obs[b:b + 1])
        g = actor.backward(actor.head.log_prob_backward(np.ones(1), y, mb.actions[b:b + 1], 1.3), cache)
        for k in expected:
            expected[k] -= mb.advantages[b] * g[k] / len(mb.obs)
    for k in expected:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-10, atol=1e-14)


def test_clip_and_penalty_agree_at_r_one_without_kl():
    """At r = 1 with beta = 0, L^CLIP and L^KLPEN have the same value and gradient (nothing is clipped)."""
    actor, critic, mb, _ = _setup(True, seed=4)
    clip = ppo_loss(actor, critic, mb, LossCoefs(surrogate="clip", ent_coef=0.01))
    pen = ppo_loss(actor, critic, mb, LossCoefs(surrogate="penalty", beta=0.0, ent_coef=0.01))
    assert clip.loss == pytest.approx(pen.loss, abs=1e-15)
    for k in clip.actor_grads:
        np.testing.assert_allclose(clip.actor_grads[k], pen.actor_grads[k], atol=1e-15)


# --- value loss ---------------------------------------------------------------------------------------

@LAWS
@given(paired(3), st.floats(0.01, 2.0))
def test_clipped_value_gradient_is_zero_where_clipped_wins(arrs, eps_v):
    """The clipped term can win only where |V - V_old| > eps_v (inside, V^clip = V) and strictly exceeds
    the unclipped one; there the gradient is exactly 0, everywhere else exactly (V - R)/B (in particular
    for every sample inside the clip range, whatever the rounding of V_old + (V - V_old)). The loss is
    never below the unclipped one."""
    values, returns, values_old = arrs
    loss, dv, stats = clipped_value_loss(values, returns, values_old, eps_v)
    v_clip = values_old + np.clip(values - values_old, -eps_v, eps_v)
    outside = np.abs(values - values_old) > eps_v
    clipped_wins = outside & ((v_clip - returns) ** 2 > (values - returns) ** 2)
    assert np.all(dv[clipped_wins] == 0.0)
    assert np.all(dv[~outside] == ((values - returns) / len(values))[~outside])
    np.testing.assert_array_equal(dv[~clipped_wins], ((values - returns) / len(values))[~clipped_wins])
    assert loss >= value_loss(values, returns)[0] - 1e-12
    assert stats["vf_clip_frac"] == pytest.approx(clipped_wins.mean())


def test_value_loss_closed_form():
    loss, dv, _ = value_loss(np.array([1.0, 2.0]), np.array([0.0, 4.0]))
    assert loss == 0.5 * (1 + 4) / 2 and np.array_equal(dv, [0.5, -1.0])
    bonus, dH, stats = entropy_bonus(np.array([1.0, 2.0, 3.0, 6.0]))
    assert bonus == 3.0 and np.all(dH == 0.25) and stats == {"entropy": 3.0}


# --- diagnostics --------------------------------------------------------------------------------------

def test_explained_variance():
    """1 for perfect predictions, 0 for predicting the mean of R, negative when worse, NaN when Var[R] = 0."""
    rng = np.random.default_rng(0)
    R = rng.standard_normal(100)
    assert explained_variance(R, R) == 1.0
    assert explained_variance(np.full(100, R.mean()), R) == pytest.approx(0.0, abs=1e-12)
    assert explained_variance(-R, R) < 0
    V = R + 0.3 * rng.standard_normal(100)
    assert explained_variance(V, R) == pytest.approx(1 - np.var(R - V) / np.var(R), rel=1e-12)
    assert math.isnan(explained_variance(np.zeros(5), np.full(5, 2.0)))
    for c in (0.1, 1e-3, 123.456):  # constants that rounding leaves a ~1e-34 "variance" behind
        assert math.isnan(explained_variance(R[:7], np.full(7, c)))
    assert explained_variance(R * 1e-6, R * 1e-6) == 1.0  # small but real variance is still variance


@LAWS
@given(st.floats(1e-6, 1e6))
def test_k3_is_nonnegative_per_sample(r):
    """(r - 1) - log r >= 0 for every r > 0 (log r <= r - 1), with equality only at r = 1."""
    log_r = math.log(r)
    _, _, k1, k3 = importance_ratios(np.array([log_r]), np.array([0.0]), 0.2)
    assert k3 >= 0.0
    assert k1 == -log_r


@LAWS
@given(paired(2, lo=-3.0, hi=3.0))
def test_ratio_diagnostics(arrs):
    """k3 >= 0 on any batch; k1 = mean(logp_old - logp); clip_frac = mean(|r - 1| > eps)."""
    logp, logp_old = arrs
    _, _, stats = clipped_surrogate(logp, logp_old, np.ones_like(logp), 0.2)
    r = np.exp(logp - logp_old)
    assert stats["approx_kl_k3"] >= 0.0
    assert stats["approx_kl_k1"] == pytest.approx(np.mean(logp_old - logp), abs=1e-12)
    assert stats["clip_frac"] == pytest.approx(np.mean(np.abs(r - 1) > 0.2))


# --- importance sampling, exactly ------------------------------------------------------------------

def _dist(logits):
    return Categorical.probs(logits[None, :])[0]


dist_pairs = st.integers(2, 8).flatmap(lambda k: st.tuples(*[arrays(np.float64, k, elements=st.floats(-4, 4))
                                                             for _ in range(3)]))


@LAWS
@given(dist_pairs)
def test_importance_sampling_identities(zs):
    """For p, q with full support and any f, computed as exact sums over the K outcomes:
        E_q[f p/q] = E_p[f]                                  (unbiased),
        Var_q[f p/q] = E_q[(f p/q)^2] - E_p[f]^2 = E_p[f^2 p/q] - E_p[f]^2."""
    zp, zq, f = zs
    p, q = _dist(zp), _dist(zq)
    w = p / q                                                   # the importance ratio r
    e_p = np.sum(p * f)
    assert np.sum(q * f * w) == pytest.approx(e_p, rel=1e-10, abs=1e-12)
    var_q = np.sum(q * (f * w - e_p) ** 2)                      # the variance, by definition
    assert var_q == pytest.approx(np.sum(p * f * f * w) - e_p ** 2, rel=1e-8, abs=1e-10)


@LAWS
@given(dist_pairs)
def test_importance_variance_grows_as_q_moves_away_from_p(zs):
    """Along the mixture path q_t = (1 - t) p + t u (u uniform, t in [0, 1]):

    * with f = 1 the weights' variance is Var_{q_t}[p/q_t] = sum_k p_k^2 / q_t,k - 1 = chi^2(p || q_t).
      t -> chi^2(p || q_t) is convex (1/q is convex and q_t is affine in t) with minimum 0 at t = 0,
      hence non-decreasing on [0, 1], and strictly increasing when p != u (a convex g with g(0) = 0 <
      g(t) satisfies g(s) <= (s/t) g(t) < g(t) for 0 < s < t).
    * For a general f, V(t) = Var_{q_t}[f p/q_t] = sum_k f_k^2 p_k^2 / q_t,k - E_p[f]^2 is still convex,
      with V'(0) = E_p[f^2] - E_u[f^2]; so V is non-decreasing on [0, 1] whenever E_p[f^2] >= E_u[f^2]
      (e.g. f = 1), and this is the statement tested (it is false without that condition).
    """
    zp, _, f = zs
    p = _dist(zp)
    u = np.full_like(p, 1.0 / len(p))
    ts = np.linspace(0.0, 1.0, 21)
    chi2 = np.array([np.sum(p * p / ((1 - t) * p + t * u)) - 1.0 for t in ts])
    assert chi2[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(chi2) >= -1e-12 * (1 + chi2[1:]))
    if np.max(np.abs(p - u)) > 1e-3:
        assert np.all(np.diff(chi2) > 0)
    assume(np.sum(p * f * f) >= np.sum(u * f * f))
    e_p = np.sum(p * f)
    var = np.array([np.sum(f * f * p * p / ((1 - t) * p + t * u)) - e_p ** 2 for t in ts])
    assert np.all(np.diff(var) >= -1e-10 * (1 + np.abs(var[1:])))


# --- ppo_loss: results, the actor's parameter set, acting -------------------------------------------

@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_ppo_loss_results_at_the_start_of_an_update(discrete):
    """Sampled from the current policy: r = 1, so k1 = k3 = exact KL = clip fraction = 0; every parameter
    gets a gradient of its own shape; the stats are the documented keys.

    Zero to rounding: ``Actor.act`` computes the logits in ``infer_kernel``'s loop nest, ``ppo_loss`` through
    BLAS, and the two sum in different orders (exact_kl was -4.6e-18 on an AVX-512 machine).
    """
    actor, critic, mb, _ = _setup(discrete, tau=0.7)
    res = ppo_loss(actor, critic, mb, LossCoefs(vf_clip=0.2, ent_coef=0.01, temperature=0.7))
    assert tuple(res.stats) == STAT_KEYS
    assert res.stats["clip_frac"] == 0.0
    for key in ("exact_kl", "approx_kl_k1", "approx_kl_k3"):
        assert abs(res.stats[key]) < 1e-15, key
    assert res.actor_grads.keys() == actor.params.keys() and res.critic_grads.keys() == critic.params.keys()
    for grads, params in ((res.actor_grads, actor.params), (res.critic_grads, critic.params)):
        for k in params:
            assert grads[k].shape == params[k].shape and grads[k].dtype == params[k].dtype
    H = actor.head.entropy(mb.dist_old, 0.7).mean()
    assert res.stats["entropy"] == pytest.approx(H)
    assert res.loss == pytest.approx(res.stats["policy_loss"] + 0.5 * res.stats["value_loss"] - 0.01 * H)


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_actor_kl(discrete):
    """The head's KL(old || new) of the actor's y is the tempered distributions' analytic KL; 0 against
    itself; ppo_loss's exact_kl is its mean over the minibatch."""
    actor, critic, mb, _ = _setup(discrete, tau=0.8)
    head, new = actor.head, actor.forward(mb.obs)[0]
    np.testing.assert_allclose(head.kl(mb.dist_old, new, 0.8), 0.0, atol=1e-15)
    shift = np.array([0.1, 0.0, -0.1] if discrete else [0.1, 0.1, -0.1, -0.1])   # a Gaussian's: means, then l
    got = head.kl(mb.dist_old, new + shift, 0.8)
    assert np.all(got > 0)
    if not discrete:   # against the closed form in (mu, sigma) written out here
        sp, sq = 0.8 * np.exp(mb.dist_old[:, 2:]), 0.8 * np.exp(new[:, 2:] - 0.1)
        closed = (np.log(sq / sp) + (sp ** 2 + (mb.dist_old[:, :2] - new[:, :2] - 0.1) ** 2) / (2 * sq ** 2) - 0.5)
        np.testing.assert_allclose(got, closed.sum(axis=1), rtol=1e-12)
    shifted = mb._replace(dist_old=mb.dist_old - shift)
    res = ppo_loss(actor, critic, shifted, LossCoefs(temperature=0.8))
    assert res.stats["exact_kl"] == pytest.approx(np.mean(head.kl(shifted.dist_old, new, 0.8)))


def test_float32_networks():
    """float32 actor and critic: float32 gradients, finite, close to the float64 ones."""
    for discrete in (True, False):
        a32, c32, mb32, _ = _setup(discrete, seed=8, dtype="float32")
        a64, c64, mb64, _ = _setup(discrete, seed=8, dtype="float64")
        coefs = LossCoefs(surrogate="penalty", vf_clip=0.5, ent_coef=0.01)
        r32, r64 = ppo_loss(a32, c32, mb32, coefs), ppo_loss(a64, c64, mb64, coefs)
        for k, g in r32.actor_grads.items():
            assert g.dtype == np.float32
            np.testing.assert_allclose(g, r64.actor_grads[k], rtol=1e-3, atol=1e-5)
        assert r32.loss == pytest.approx(r64.loss, rel=1e-4, abs=1e-6)


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("surrogate", "trpo"), ("clip_eps", 0.0), ("clip_eps", -0.1),
                                          ("beta", -1.0), ("vf_coef", float("nan")), ("vf_clip", 0.0),
                                          ("ent_coef", -0.01), ("temperature", 0.0), ("temperature", -2.0)])
def test_bad_coefs_are_named(field, value):
    with pytest.raises(ValueError, match=field) as info:
        LossCoefs(**{field: value})
    assert repr(value) in str(info.value)


def test_bad_minibatches_are_named():
    actor, critic, mb, _ = _setup(True, B=8)
    with pytest.raises(ValueError, match=r"advantages must have shape \(8,\), got \(7,\)"):
        ppo_loss(actor, critic, mb._replace(advantages=mb.advantages[:7]), LossCoefs())
    with pytest.raises(ValueError, match=r"returns must have shape \(8,\)"):
        ppo_loss(actor, critic, mb._replace(returns=np.zeros((8, 1))), LossCoefs())
    with pytest.raises(ValueError, match=r"observations must have shape \(B, 4\), got \(8, 3\)"):
        ppo_loss(actor, critic, mb._replace(obs=mb.obs[:, :3]), LossCoefs())
    with pytest.raises(ValueError, match="dist_old"):
        ppo_loss(actor, critic, mb._replace(dist_old=None), LossCoefs(surrogate="penalty"))
    with pytest.raises(ValueError, match="LossCoefs"):
        ppo_loss(actor, critic, mb, {"surrogate": "clip"})
    with pytest.raises(ValueError, match="temperature"):
        ppo_loss(actor, critic, mb, dataclasses.replace(LossCoefs(), temperature=-1.0))
    g_actor, g_critic, g_mb, _ = _setup(False, B=8)
    with pytest.raises(ValueError, match=r"dist_old must have shape \(8, 4\) \(the old policy's y\), got \(8, 2\)"):
        ppo_loss(g_actor, g_critic, g_mb._replace(dist_old=g_mb.dist_old[:, :2]), LossCoefs())



# --- pins from a mutation run of the math -------------------------------------------------------------

@LAWS
@given(vectors(n_min=2, n_max=64, lo=-1e3, hi=1e3), st.sampled_from([np.float64, np.float32]))
def test_normalized_advantages_have_mean_zero_and_population_std_one(adv, dtype):
    """(A - mean A) / (std A + 1e-8) over the samples: mean 0 and population std 1, up to the rounding of
    the mean (relative to the spread) and the 1e-8 guard (which scales the std by s / (s + 1e-8)); the
    dtype and the shape are kept."""
    adv = adv.astype(dtype)
    a64 = adv.astype(np.float64)
    s = float(np.std(a64))
    assume(s > 1e-2 and s > 1e-2 * np.max(np.abs(a64)))       # a real spread, not a constant's rounding
    z = normalize_advantages(adv)
    assert z.dtype == dtype and z.shape == adv.shape
    z64 = z.astype(np.float64)
    tol = 8 * len(adv) * np.finfo(dtype).eps * (1 + np.max(np.abs(a64)) / s)
    assert abs(z64.mean()) <= tol
    assert abs(np.std(z64) - 1.0) <= tol + 1e-8 / s


@LAWS
@given(st.floats(-1e3, 1e3), st.integers(1, 64))
def test_constant_advantages_normalize_to_zeros(c, n):
    """A constant A has std 0: the 1e-8 guard keeps the result finite and equal to 0, up to the rounding of
    mean(A) (a few ulps of c) divided by 1e-8; exactly 0 when the mean is exact (a dyadic c), in float32
    as in float64."""
    for dtype in (np.float64, np.float32):   # float32 too: its mean taken in float32 was off by an ulp of c
        z = normalize_advantages(np.full(n, c, dtype=dtype))
        assert z.dtype == dtype and np.all(np.isfinite(z)) and np.all(z == z[0])
        assert abs(z[0]) <= 8 * np.spacing(abs(c)) / 1e-8
    dyadic = round(c * 8) / 8                                  # k / 8, |k| <= 8000: every partial sum is exact
    for dtype in (np.float64, np.float32):
        z = normalize_advantages(np.full(n, dyadic, dtype=dtype))
        assert z.dtype == dtype and np.all(z == 0.0)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**16), discrete=st.booleans(), clipped=st.booleans())
def test_clip_and_penalty_differ_exactly_by_what_the_clip_removes(seed, discrete, clipped):
    """With logp_old != logp (r != 1) and beta = 0, inside ``ppo_loss``:
        L^CLIP - L^KLPEN = mean(r A) - mean(min(r A, clip(r, 1 - eps, 1 + eps) A)),
    the value and entropy terms being shared. So the two differ (L^CLIP strictly larger) as soon as one
    sample is on the flat side of the clip, and agree, in value and gradient, when every r is inside."""
    tau, eps, B = 0.9, 0.2, 8
    actor, critic, mb, rng = _setup(discrete, seed=seed, B=B, tau=tau)
    logp = actor.head.log_prob(actor.forward(mb.obs)[0], mb.actions, tau)     # log pi_theta of the actions
    A = np.where(rng.random(B) < 0.5, -1.0, 1.0) * rng.uniform(0.1, 2.0, B)
    log_r = rng.uniform(-0.15, 0.15, B)                                 # r in [0.86, 1.17]: inside
    if clipped:
        k = rng.integers(B)
        log_r[k] = np.sign(A[k]) * rng.uniform(0.3, 1.0)                 # A > 0: r > 1.34; A < 0: r < 0.75
    mb = mb._replace(logp_old=logp - log_r, advantages=A)
    r = np.exp(logp - mb.logp_old)
    objective = np.where(A >= 0, np.minimum(r, 1 + eps), np.maximum(r, 1 - eps)) * A   # case by case
    common = dict(clip_eps=eps, vf_coef=0.5, ent_coef=0.01, temperature=tau)
    clip = ppo_loss(actor, critic, mb, LossCoefs(surrogate="clip", **common))
    pen = ppo_loss(actor, critic, mb, LossCoefs(surrogate="penalty", beta=0.0, **common))
    assert clip.stats["policy_loss"] == pytest.approx(-objective.mean(), rel=1e-12, abs=1e-14)
    assert pen.stats["policy_loss"] == pytest.approx(-(r * A).mean(), rel=1e-12, abs=1e-14)
    assert clip.loss - pen.loss == pytest.approx((r * A).mean() - objective.mean(), rel=1e-9, abs=1e-14)
    for k in clip.critic_grads:
        np.testing.assert_array_equal(clip.critic_grads[k], pen.critic_grads[k])
    if clipped:
        assert clip.loss - pen.loss > 1e-4          # >= 0.1 * (1 - 0.2 - e^-0.3) / 8 = 7.4e-4 by construction
        assert any(not np.allclose(clip.actor_grads[k], pen.actor_grads[k], rtol=1e-6, atol=1e-9)
                   for k in clip.actor_grads)
    else:
        assert clip.loss == pytest.approx(pen.loss, abs=1e-14)
        for k in clip.actor_grads:
            np.testing.assert_allclose(clip.actor_grads[k], pen.actor_grads[k], rtol=1e-12, atol=1e-15)


def test_explained_variance_of_all_zero_returns_is_nan():
    """Var[R] = 0 with R = 0 exactly (the threshold 1e-24 mean(R^2) is 0 too): NaN, whatever V is."""
    assert math.isnan(explained_variance(np.zeros(6), np.zeros(6)))
    assert math.isnan(explained_variance(np.random.default_rng(0).standard_normal(6), np.zeros(6)))
    assert math.isnan(explained_variance(np.zeros(1), np.zeros(1)))


@LAWS
@given(paired(2, lo=-1.0, hi=1.0, n_max=32), st.integers(-100, 100))
def test_explained_variance_is_scale_invariant(arrs, k):
    """EV(c V, c R) = EV(V, R) for c = 10^k over 200 orders of magnitude: the NaN test and the ratio are
    relative, no absolute epsilon hides in them."""
    V, R = arrs
    assume(np.std(R) > 1e-3)                                    # non-constant returns
    c = 10.0 ** k
    assert explained_variance(c * V, c * R) == pytest.approx(explained_variance(V, R), rel=1e-9, abs=1e-9)


@LAWS
@given(vectors(n_min=2, n_max=32, lo=-1.0, hi=1.0), st.integers(-100, 100))
def test_explained_variance_is_one_for_perfect_and_zero_for_the_mean_at_every_scale(R, k):
    """EV(R, R) = 1 exactly and EV(mean(R), R) = 0 to rounding, for non-constant R of any size."""
    assume(np.std(R) > 1e-3)
    R = R * 10.0 ** k
    assert explained_variance(R, R) == 1.0
    assert explained_variance(np.full_like(R, R.mean()), R) == pytest.approx(0.0, abs=1e-12)


def test_explained_variance_far_from_zero_and_at_tiny_scales():
    """Returns ~1e8 with a unit spread (R^2 ~ 1e16: a one-pass variance E[R^2] - E[R]^2 would lose every
    digit) give the EV of the same data shifted to 0 (the shift by 1e8 is exact for values in
    [5e7, 2e8]); returns ~1e-8 give the EV of the data scaled to 1."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(500)
    v = x + 0.5 * rng.standard_normal(500)
    expected = 1.0 - np.var(x - v) / np.var(x)
    assert 0.5 < expected < 0.9
    for shift in (1e8, -1e8):
        R, V = shift + x, shift + v
        assert explained_variance(V - shift, R - shift) == pytest.approx(expected, rel=1e-6)  # R, V rounded to 1e-8
        assert explained_variance(V, R) == pytest.approx(explained_variance(V - shift, R - shift), rel=1e-9)
    assert explained_variance(1e-8 * v, 1e-8 * x) == pytest.approx(expected, rel=1e-12)


# the value clip's boundary |V - V_old| = eps_v: exact values (dyadic) for V, V_old, eps_v and R; on the
# boundary from both sides, beyond it by 0.125 on the flat side, and beyond it with a tie (V^clip = 0.25
# and V = 0.75 equally far from R = 0.5)
_BOUNDARY = dict(values=np.full(5, 0.75), values_old=np.array([0.5, 1.0, 0.375, 1.125, 0.0]),
                 returns=np.array([2.0, -1.0, 2.0, -1.0, 0.5]), eps_v=0.25)
# rounding: delta = 0.05 - 0.3 == -0.25 in floating point, but 0.3 + delta != 0.05, and R = 0.0625
# puts V^clip = 0.3 + delta (one rounding below V) strictly farther from R than V is
_ROUNDED = dict(values=np.array([0.05]), values_old=np.array([0.3]), returns=np.array([0.0625]), eps_v=0.25)


def test_value_clip_boundary_convention():
    """At |V - V_old| = eps_v exactly, V^clip = V: a tie, taken by the unclipped branch, so dL^V/dV is
    (V - R)/B (the documented convention). Beyond it by 0.125, on the flat side (R beyond V as seen from
    V_old), the clipped branch wins and the gradient is exactly 0; beyond it with equal errors, the tie
    goes to the unclipped branch again. The boundary is decided by
    |V - V_old| <= eps_v, not by comparing errors: where V_old + (V - V_old) rounds away from V and
    hands the clipped error a rounding's advantage, the gradient is still the unclipped one."""
    b = _BOUNDARY
    V, R, V_old = b["values"], b["returns"], b["values_old"]
    assert np.array_equal(np.abs(V - V_old), [0.25, 0.25, 0.375, 0.375, 0.75])   # exact, on both sides
    loss, dv, stats = clipped_value_loss(V, R, V_old, b["eps_v"])
    np.testing.assert_array_equal(dv, [(0.75 - 2.0) / 5, (0.75 + 1.0) / 5, 0.0, 0.0, (0.75 - 0.5) / 5])
    assert loss == pytest.approx(0.5 * (1.25**2 + 1.75**2 + 1.375**2 + 1.875**2 + 0.25**2) / 5, rel=1e-15)
    assert stats["vf_clip_frac"] == pytest.approx(0.4, rel=1e-15)
    d = _ROUNDED
    V, R, V_old = d["values"], d["returns"], d["values_old"]
    delta = V - V_old
    assert abs(delta[0]) == d["eps_v"] and V_old[0] + delta[0] != V[0]                       # the premise
    assert (V_old[0] + delta[0] - R[0]) ** 2 > (V[0] - R[0]) ** 2
    _, dv, stats = clipped_value_loss(V, R, V_old, d["eps_v"])
    assert dv[0] == V[0] - R[0] != 0.0 and stats["vf_clip_frac"] == 0.0


@pytest.mark.parametrize("case", ["boundary", "rounded"])
def test_fused_value_clip_boundary_matches_ppo_loss(case):
    """``FusedLoss`` with vf_clip takes the same branch as ``clipped_value_loss`` at the boundary: the same
    critic gradient as ``ppo_loss``. The critic's output layer is W = 0, b = V so that V is exact in both
    (then dL/db_L = c_v sum_t dL^V/dV_t and every other critic gradient is 0)."""
    d = _BOUNDARY if case == "boundary" else _ROUNDED
    B = len(d["values"])
    actor, critic, mb, _ = _setup(True, seed=6, B=B)
    last = len(critic.params) // 2 - 1
    critic.params[f"W{last}"][...] = 0.0
    critic.params[f"b{last}"][...] = d["values"][0]
    mb = mb._replace(returns=d["returns"], values_old=d["values_old"])
    coefs = LossCoefs(vf_clip=d["eps_v"], vf_coef=0.5)
    ref = ppo_loss(actor, critic, mb, coefs)
    fused = FusedLoss(actor, critic, B)
    _, stats = fused(mb, coefs)
    dv = clipped_value_loss(d["values"], d["returns"], d["values_old"], d["eps_v"])[1]
    assert np.any(dv != 0.0)
    assert ref.critic_grads[f"b{last}"][0] == pytest.approx(0.5 * dv.sum(), rel=1e-15)
    for k in ref.critic_grads:
        np.testing.assert_allclose(fused.critic_grads[k], ref.critic_grads[k], rtol=1e-12, atol=1e-15)
    assert stats["value_loss"] == pytest.approx(ref.stats["value_loss"], rel=1e-12)
