"""Laws of the tempered categorical and diagonal Gaussian policies (``ppo_np/distributions.py``).

Gradient checks in float64 (central differences contracted with a random upstream gradient, relative
error < 1e-6), hypothesis properties, closed forms, and seeded sampling tests with stated tolerances.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ppo_np.distributions import Categorical, DiagGaussian
from ppo_np.gradcheck import DEFAULT_TOL, check_gradients

TEMPERATURES = [0.37, 1.0, 2.6]
LAWS = settings(deadline=None, max_examples=60)


def _assert_ok(checks):
    bad = [c for c in checks if not c.ok]
    assert not bad, bad


def logits_strategy(max_rows=5, max_k=6, scale=30.0):
    shape = st.tuples(st.integers(1, max_rows), st.integers(2, max_k))
    return shape.flatmap(lambda s: arrays(np.float64, s, elements=st.floats(-scale, scale)))


temperature_strategy = st.floats(0.05, 20.0)


# --- gradients ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_categorical_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) w.r.t. the logits, 1/tau included."""
    rng = np.random.default_rng(seed)
    B, K = 4, 5
    x = {"logits": 2.0 * rng.standard_normal((B, K))}
    a = rng.integers(0, K, size=B)
    pq = {"logits_p": 2.0 * rng.standard_normal((B, K)), "logits_q": 2.0 * rng.standard_normal((B, K))}

    def kl_backward(dy):
        dp, dq = Categorical.kl_backward(dy, pq["logits_p"], pq["logits_q"], tau)
        return {"logits_p": dp, "logits_q": dq}

    _assert_ok(check_gradients("log_prob", lambda: Categorical.log_prob(x["logits"], a, tau),
                               lambda dy: {"logits": Categorical.log_prob_backward(dy, x["logits"], a, tau)}, x, rng))
    _assert_ok(check_gradients("entropy", lambda: Categorical.entropy(x["logits"], tau),
                               lambda dy: {"logits": Categorical.entropy_backward(dy, x["logits"], tau)}, x, rng))
    _assert_ok(check_gradients("kl", lambda: Categorical.kl(pq["logits_p"], pq["logits_q"], tau),
                               kl_backward, pq, rng))


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_gaussian_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) w.r.t. mean and the shared log_std."""
    rng = np.random.default_rng(seed)
    B, D = 4, 3
    x = {"mean": rng.standard_normal((B, D)), "log_std": 0.5 * rng.standard_normal(D)}
    a = x["mean"] + tau * np.exp(x["log_std"]) * rng.standard_normal((B, D))
    pq = {"mean_p": rng.standard_normal((B, D)), "log_std_p": 0.5 * rng.standard_normal(D),
          "mean_q": rng.standard_normal((B, D)), "log_std_q": 0.5 * rng.standard_normal(D)}

    def pair(fn):
        return lambda dy: dict(zip(("mean", "log_std"), fn(dy)))

    _assert_ok(check_gradients("log_prob", lambda: DiagGaussian.log_prob(x["mean"], x["log_std"], a, tau),
                               pair(lambda dy: DiagGaussian.log_prob_backward(dy, x["mean"], x["log_std"], a, tau)),
                               x, rng))
    _assert_ok(check_gradients("entropy", lambda: DiagGaussian.entropy(x["mean"], x["log_std"], tau),
                               pair(lambda dy: DiagGaussian.entropy_backward(dy, x["mean"], x["log_std"], tau)),
                               x, rng))
    _assert_ok(check_gradients("kl", lambda: DiagGaussian.kl(*pq.values(), tau),
                               lambda dy: dict(zip(pq, DiagGaussian.kl_backward(dy, *pq.values(), tau))), pq, rng))


def test_policy_terms_match_the_separate_functions():
    """The fused hot-path pass equals the readable functions: values, and the gradient of
    sum(dlogp logp + dH H + dkl KL) equals the sum of the three separate backwards (also with scalars)."""
    rng = np.random.default_rng(7)
    B, K, D, tau = 6, 4, 3, 1.7
    z, z_old, a = rng.standard_normal((B, K)), rng.standard_normal((B, K)), rng.integers(0, K, size=B)
    dlogp, dH, dkl = rng.standard_normal(B), rng.standard_normal(B), rng.standard_normal(B)

    logp, ent, kl, cache = Categorical.policy_terms(z, a, tau, z_old)
    np.testing.assert_allclose(logp, Categorical.log_prob(z, a, tau), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ent, Categorical.entropy(z, tau), rtol=0, atol=1e-14)
    np.testing.assert_allclose(kl, Categorical.kl(z_old, z, tau), rtol=0, atol=1e-14)
    expected = (Categorical.log_prob_backward(dlogp, z, a, tau) + Categorical.entropy_backward(dH, z, tau)
                + Categorical.kl_backward(dkl, z_old, z, tau)[1])
    np.testing.assert_allclose(Categorical.policy_terms_backward(dlogp, dH, dkl, cache), expected, atol=1e-14)
    np.testing.assert_allclose(Categorical.policy_terms_backward(0.3, -0.2, None, cache),
                               Categorical.log_prob_backward(np.full(B, 0.3), z, a, tau)
                               + Categorical.entropy_backward(np.full(B, -0.2), z, tau), atol=1e-14)
    assert Categorical.policy_terms(z, a, tau)[2] is None

    mu, ls, mu_old, ls_old = (rng.standard_normal((B, D)), 0.3 * rng.standard_normal(D),
                              rng.standard_normal((B, D)), 0.3 * rng.standard_normal(D))
    act = mu + rng.standard_normal((B, D))
    logp, ent, kl, cache = DiagGaussian.policy_terms(mu, ls, act, tau, mu_old, ls_old)
    np.testing.assert_allclose(logp, DiagGaussian.log_prob(mu, ls, act, tau), atol=1e-13)
    np.testing.assert_allclose(ent, DiagGaussian.entropy(mu, ls, tau), atol=1e-13)
    np.testing.assert_allclose(kl, DiagGaussian.kl(mu_old, ls_old, mu, ls, tau), atol=1e-13)
    parts = [DiagGaussian.log_prob_backward(dlogp, mu, ls, act, tau), DiagGaussian.entropy_backward(dH, mu, ls, tau),
             DiagGaussian.kl_backward(dkl, mu_old, ls_old, mu, ls, tau)[2:]]
    dmu, dls = DiagGaussian.policy_terms_backward(dlogp, dH, dkl, cache)
    np.testing.assert_allclose(dmu, sum(p[0] for p in parts), atol=1e-13)
    np.testing.assert_allclose(dls, sum(p[1] for p in parts), atol=1e-13)


@LAWS
@given(logits_strategy(), temperature_strategy, st.data())
def test_log_prob_gradient_sums_to_zero(logits, tau, data):
    """sum_j d log pi_a / d z_j = 0: adding a constant to every logit changes no probability."""
    a = np.array(data.draw(st.lists(st.integers(0, logits.shape[1] - 1), min_size=len(logits),
                                    max_size=len(logits))))
    dz = Categorical.log_prob_backward(np.ones(len(logits)), logits, a, tau)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-12 / tau + 1e-12)


# --- probabilities, entropy, temperature ---------------------------------------------------------------

@LAWS
@given(logits_strategy(scale=1e3), st.floats(1e-3, 1e3))
def test_probabilities_sum_to_one_and_are_stable(logits, tau):
    """exp(log pi) sums to 1 per row, for logits up to 1e3 and temperatures from 1e-3 to 1e3 (u up to 1e6):
    log-sum-exp keeps everything finite, including entropy, KL and gradients."""
    log_pi = Categorical.log_softmax(logits, tau)
    assert np.all(np.isfinite(log_pi)) and np.all(log_pi <= 0)
    np.testing.assert_allclose(np.exp(log_pi).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    H = Categorical.entropy(logits, tau)
    assert np.all(np.isfinite(H)) and np.all(H >= -1e-12)
    kl = Categorical.kl(logits, logits[::-1], tau)
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-9)
    a = np.argmin(logits, axis=1)
    for g in (Categorical.log_prob_backward(np.ones(len(a)), logits, a, tau),
              Categorical.entropy_backward(np.ones(len(a)), logits, tau),
              *Categorical.kl_backward(np.ones(len(a)), logits, logits[::-1], tau)):
        assert np.all(np.isfinite(g))


def test_large_logits_closed_form():
    """softmax([1000, 999, -1000]) = softmax([1, 0, -1999]): no overflow, the exact answer."""
    log_pi = Categorical.log_softmax(np.array([[1000.0, 999.0, -1000.0]]))
    expected = np.array([1.0, 0.0, -1999.0]) - math.log(math.e + 1.0)
    np.testing.assert_allclose(log_pi[0], expected, rtol=1e-15)
    assert Categorical.log_prob(np.array([[1e3, -1e3]]), np.array([1]), 1e-3)[0] == -2e6


@LAWS
@given(logits_strategy(), temperature_strategy)
def test_entropy_at_most_log_k(logits, tau):
    """0 <= H(pi_tau) <= log K."""
    H = Categorical.entropy(logits, tau)
    assert np.all(H <= math.log(logits.shape[1]) + 1e-12) and np.all(H >= -1e-12)


@pytest.mark.parametrize("K", [2, 3, 7])
def test_entropy_equals_log_k_at_uniform(K):
    """Constant logits give the uniform distribution and H = log K exactly (to rounding), for any tau."""
    for tau in TEMPERATURES:
        H = Categorical.entropy(np.full((3, K), 4.2), tau)
        np.testing.assert_allclose(H, math.log(K), rtol=0, atol=1e-14)


def test_temperature_limits():
    """tau -> infinity: uniform; tau -> 0+: one-hot at argmax z; the mode is argmax z for every tau."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 4)) * 3.0
    np.testing.assert_allclose(Categorical.probs(z, 1e7), 0.25, atol=1e-6)
    np.testing.assert_array_equal(Categorical.probs(z, 1e-6), np.eye(4)[np.argmax(z, axis=1)])
    np.testing.assert_array_equal(Categorical.mode(z), np.argmax(z, axis=1))
    for tau in (1e-6, 0.5, 50.0):  # greedy action of pi_tau does not depend on tau
        np.testing.assert_array_equal(np.argmax(Categorical.probs(z, tau), axis=1), Categorical.mode(z))
    # Gaussian: tau scales sigma, not the mean
    mu, ls = rng.standard_normal((2, 3)), rng.standard_normal(3)
    np.testing.assert_allclose(DiagGaussian.std(ls, 2.5), 2.5 * np.exp(ls))
    np.testing.assert_array_equal(DiagGaussian.mode(mu), mu)
    np.testing.assert_allclose(DiagGaussian.entropy(mu, ls, 2.5) - DiagGaussian.entropy(mu, ls, 1.0),
                               3 * math.log(2.5), atol=1e-12)


# --- KL ----------------------------------------------------------------------------------------------

@LAWS
@given(logits_strategy(), temperature_strategy)
def test_kl_laws(logits, tau):
    """KL(p || p) = 0 and KL(p || q) >= 0 (Gibbs), for categoricals and Gaussians."""
    np.testing.assert_array_equal(Categorical.kl(logits, logits, tau), 0.0)
    q = np.roll(logits, 1, axis=1)
    assert np.all(Categorical.kl(logits, q, tau) >= -1e-12)
    mu = logits / 10.0
    ls = np.linspace(-1.0, 1.0, logits.shape[1])
    np.testing.assert_allclose(DiagGaussian.kl(mu, ls, mu, ls, tau), 0.0, atol=1e-15)
    assert np.all(DiagGaussian.kl(mu, ls, np.roll(mu, 1, axis=1), ls[::-1], tau) >= -1e-12)


def test_gaussian_kl_matches_monte_carlo():
    """KL(p || q) = E_p[log p(a) - log q(a)]: the analytic KL agrees with a 400k-sample Monte-Carlo mean
    (fixed seed) within 5 standard errors of that mean (the standard error is measured, ~1e-3 here)."""
    rng = np.random.default_rng(2024)
    tau, D, N = 1.7, 3, 400_000
    mu_p, ls_p = np.array([[0.3, -1.0, 0.5]]), np.array([0.2, -0.4, 0.0])
    mu_q, ls_q = np.array([[0.0, -0.5, 1.5]]), np.array([-0.1, 0.3, 0.2])
    a = DiagGaussian.sample(np.repeat(mu_p, N, axis=0), ls_p, rng, tau)
    log_ratio = (DiagGaussian.log_prob(np.repeat(mu_p, N, axis=0), ls_p, a, tau)
                 - DiagGaussian.log_prob(np.repeat(mu_q, N, axis=0), ls_q, a, tau))
    stderr = log_ratio.std() / math.sqrt(N)
    exact = DiagGaussian.kl(mu_p, ls_p, mu_q, ls_q, tau)[0]
    assert abs(log_ratio.mean() - exact) < 5 * stderr, (log_ratio.mean(), exact, stderr)
    assert exact > 0.1  # a non-trivial pair


def test_gaussian_entropy_matches_monte_carlo():
    """H = -E[log pi(a)]; Monte-Carlo (200k samples, fixed seed) within 5 standard errors."""
    rng = np.random.default_rng(5)
    tau, N = 0.6, 200_000
    mu, ls = np.zeros((N, 2)), np.array([0.4, -0.8])
    a = DiagGaussian.sample(mu, ls, rng, tau)
    neg_logp = -DiagGaussian.log_prob(mu, ls, a, tau)
    assert abs(neg_logp.mean() - DiagGaussian.entropy(mu[:1], ls, tau)[0]) < 5 * neg_logp.std() / math.sqrt(N)


def test_gaussian_log_prob_closed_form():
    """log N(a; mu, sigma^2) by hand for D = 1, sigma = tau e^l; D = 2 is the sum of its coordinates."""
    mu, l, a, tau = 0.4, -0.3, 1.1, 1.9
    sigma = tau * math.exp(l)
    by_hand = -0.5 * ((a - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    got = DiagGaussian.log_prob(np.array([[mu]]), np.array([l]), np.array([[a]]), tau)[0]
    assert got == pytest.approx(by_hand, rel=1e-14)
    two = DiagGaussian.log_prob(np.array([[mu, 0.0]]), np.array([l, 0.5]), np.array([[a, -1.0]]), tau)[0]
    other = DiagGaussian.log_prob(np.array([[0.0]]), np.array([0.5]), np.array([[-1.0]]), tau)[0]
    assert two == pytest.approx(by_hand + other, rel=1e-14)


# --- sampling ----------------------------------------------------------------------------------------

def test_categorical_sampling_frequencies():
    """Empirical frequencies of 200k draws match pi_tau within 5 binomial standard deviations per
    category (fixed seed); a category of probability exactly 0 (logit -1e3 against 0) is never drawn."""
    rng = np.random.default_rng(11)
    N, tau = 200_000, 1.3
    z = np.array([[0.5, -1.0, 2.0, 0.0, -1e3]])
    p = Categorical.probs(z, tau)[0]
    assert p[-1] == 0.0
    a = Categorical.sample(np.repeat(z, N, axis=0), rng, tau)
    assert a.dtype == np.int64 and a.shape == (N,)
    freq = np.bincount(a, minlength=5) / N
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N)), (freq, p)
    assert freq[-1] == 0.0


def test_categorical_sample_draws_one_uniform_per_row():
    """Vectorised inverse CDF: exactly B uniforms are drawn, a_b = #{k : C_bk <= U_b C_bK}."""
    z = np.random.default_rng(0).standard_normal((50, 4))
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    a = Categorical.sample(z, rng_a)
    u = rng_b.random(50)
    cdf = np.cumsum(Categorical.probs(z), axis=1)
    expected = [int(np.searchsorted(row, ui * row[-1], side="right")) for row, ui in zip(cdf, u)]
    np.testing.assert_array_equal(a, expected)
    assert rng_a.random() == rng_b.random()  # both generators advanced by the same B draws


def test_gaussian_sampling_moments():
    """a = mu + tau e^l eps: sample mean and std within 5 standard errors (100k draws, fixed seed)."""
    rng = np.random.default_rng(4)
    N, tau = 100_000, 0.8
    mu, ls = np.array([[1.0, -2.0]]), np.array([0.3, -0.5])
    a = DiagGaussian.sample(np.repeat(mu, N, axis=0), ls, rng, tau)
    sigma = tau * np.exp(ls)
    assert np.all(np.abs(a.mean(axis=0) - mu[0]) < 5 * sigma / math.sqrt(N))
    assert np.all(np.abs(a.std(axis=0) - sigma) < 5 * sigma / math.sqrt(2 * N))


def test_sampling_is_reproducible():
    """The same seed gives the same samples; a different seed gives different ones."""
    z = np.random.default_rng(0).standard_normal((64, 5))
    mu, ls = np.zeros((64, 2)), np.zeros(2)
    for seed in (0, 1):
        np.testing.assert_array_equal(Categorical.sample(z, np.random.default_rng(seed), 0.7),
                                      Categorical.sample(z, np.random.default_rng(seed), 0.7))
        np.testing.assert_array_equal(DiagGaussian.sample(mu, ls, np.random.default_rng(seed), 0.7),
                                      DiagGaussian.sample(mu, ls, np.random.default_rng(seed), 0.7))
    assert not np.array_equal(Categorical.sample(z, np.random.default_rng(0)),
                              Categorical.sample(z, np.random.default_rng(1)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tau=st.floats(0.1, 5.0), B=st.integers(1, 20), K=st.integers(2, 6))
def test_sample_with_log_prob_matches_the_separate_calls(seed, tau, B, K):
    """The rollout's compiled call draws the same actions as ``sample`` and returns their ``log_prob``.

    (An action could differ only if a uniform fell within rounding of a CDF step: probability ~1e-15.)
    """
    z = np.random.default_rng(seed).standard_normal((B, K)) * 3
    actions, logp = Categorical.sample_with_log_prob(z, np.random.default_rng(seed), tau)
    ref_actions, ref_logp = Categorical.sample_with_log_prob_reference(z, np.random.default_rng(seed), tau)
    np.testing.assert_array_equal(actions, ref_actions)
    np.testing.assert_array_equal(actions, Categorical.sample(z, np.random.default_rng(seed), tau))
    np.testing.assert_allclose(logp, ref_logp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logp, Categorical.log_prob(z, actions, tau), rtol=1e-12, atol=1e-12)
    assert actions.dtype == np.int64 and logp.dtype == z.dtype


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.0, -1.5, float("nan"), float("inf"), "hot", None])
def test_bad_temperature_is_named(tau):
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="temperature") as info:
        Categorical.log_softmax(z, tau)
    assert repr(tau) in str(info.value)
    with pytest.raises(ValueError, match="temperature"):
        DiagGaussian.log_prob(z, np.zeros(3), z, tau)


def test_bad_shapes_are_named():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        Categorical.kl(z, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
        Categorical.log_prob(z, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        Categorical.log_prob(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        Categorical.log_prob(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, K\)"):
        Categorical.entropy(np.zeros(3))
    with pytest.raises(ValueError, match=r"log_std must have shape \(3,\).*got \(2,\)"):
        DiagGaussian.log_prob(z, np.zeros(2), z)
    with pytest.raises(ValueError, match=r"actions \(2, 2\) and mean \(2, 3\)"):
        DiagGaussian.log_prob(z, np.zeros(3), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="log_std_old"):
        DiagGaussian.policy_terms(z, np.zeros(3), z, 1.0, z, None)
