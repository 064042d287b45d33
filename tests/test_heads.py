"""Laws of the policy heads (``ppo_np/heads/``): the tempered categorical, diagonal Gaussian and Bernoulli, on y.

Every function of a head takes y (B, dist_dim), the distribution's parameters per state: the logits z
for ``Categorical`` and ``Bernoulli``; (mu, l) for ``DiagGaussian(D)``, l = log_std repeated in every row. Gradient checks
in float64 (central differences contracted with a random upstream gradient, relative error < 1e-6),
hypothesis properties, closed forms, and seeded sampling tests with stated tolerances.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ppo_np.gradcheck import check_gradients
from ppo_np.heads import Bernoulli, Categorical, DiagGaussian, MultiCategorical, check_temperature
from ppo_np.heads.bernoulli import log_bernoulli_row
from ppo_np.heads.categorical import log_softmax_row, sample_row
from ppo_np.heads.gaussian import log_density_row

TEMPERATURES = [0.37, 1.0, 2.6]
LAWS = settings(deadline=None, max_examples=60)


def _assert_ok(checks):
    bad = [c for c in checks if not c.ok]
    assert not bad, bad


def logits_strategy(max_rows=5, max_k=6, scale=30.0):
    shape = st.tuples(st.integers(1, max_rows), st.integers(2, max_k))
    return shape.flatmap(lambda s: arrays(np.float64, s, elements=st.floats(-scale, scale)))


def gaussian_y(B, D, mean_scale=10.0, log_std_scale=3.0):
    """y = (mu, l) rows (B, 2 D); l is drawn per row (the general y, not only one shared log_std)."""
    return st.tuples(arrays(np.float64, (B, D), elements=st.floats(-mean_scale, mean_scale)),
                     arrays(np.float64, (B, D), elements=st.floats(-log_std_scale, log_std_scale))
                     ).map(lambda ml: np.concatenate(ml, axis=1))


#: (head, y) for either head: logits (B, K) or Gaussian rows (B, 2 D)
head_and_y = st.one_of(
    logits_strategy().map(lambda z: (Categorical(z.shape[1]), z)),
    st.tuples(st.integers(1, 5), st.integers(1, 4)).flatmap(
        lambda s: gaussian_y(*s).map(lambda y: (DiagGaussian(s[1]), y))),
    logits_strategy().map(lambda z: (Bernoulli(z.shape[1]), z)),
    logits_strategy(max_k=7).map(lambda z: (MultiCategorical([2, z.shape[1] - 2] if z.shape[1] > 3 else [z.shape[1]]), z)),
)

temperature_strategy = st.floats(0.05, 20.0)


def gaussian_rows(head, mean, log_std):
    """y of a Gaussian head from means (B, D) and one shared log_std (D,), through ``dist_params``."""
    return head.dist_params(mean, {"log_std": log_std})


def full_metric(head, y, tau):
    """M per row (B, n, n), column j = ``fisher_metric(y, e_j)``."""
    B, n = y.shape
    M = np.empty((B, n, n))
    for j in range(n):
        e = np.zeros((B, n))
        e[:, j] = 1.0
        M[:, :, j] = head.fisher_metric(y, e, tau)
    return M


# --- gradients ---------------------------------------------------------------------------------------

def _check_y_gradients(head, x, a, pq, tau, rng):
    """log_prob, entropy and KL (both sides) of ``head`` against central differences in y."""
    def kl_backward(dk):
        return dict(zip(("y_p", "y_q"), head.kl_backward(dk, pq["y_p"], pq["y_q"], tau)))

    _assert_ok(check_gradients("log_prob", lambda: head.log_prob(x["y"], a, tau),
                               lambda dk: {"y": head.log_prob_backward(dk, x["y"], a, tau)}, x, rng))
    _assert_ok(check_gradients("entropy", lambda: head.entropy(x["y"], tau),
                               lambda dk: {"y": head.entropy_backward(dk, x["y"], tau)}, x, rng))
    _assert_ok(check_gradients("kl", lambda: head.kl(pq["y_p"], pq["y_q"], tau), kl_backward, pq, rng))


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_categorical_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) w.r.t. the logits y = z, 1/tau included."""
    rng = np.random.default_rng(seed)
    B, K = 4, 5
    head = Categorical(K)
    x = {"y": 2.0 * rng.standard_normal((B, K))}
    a = rng.integers(0, K, size=B)
    pq = {"y_p": 2.0 * rng.standard_normal((B, K)), "y_q": 2.0 * rng.standard_normal((B, K))}

    _check_y_gradients(head, x, a, pq, tau, rng)


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_gaussian_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) w.r.t. y = (mu, l), with l free in every row."""
    rng = np.random.default_rng(seed)
    B, D = 4, 3
    head = DiagGaussian(D)
    y = np.concatenate([rng.standard_normal((B, D)), 0.5 * rng.standard_normal((B, D))], axis=1)
    x = {"y": y}
    a = y[:, :D] + tau * np.exp(y[:, D:]) * rng.standard_normal((B, D))
    pq = {"y_p": np.concatenate([rng.standard_normal((B, D)), 0.5 * rng.standard_normal((B, D))], axis=1),
          "y_q": np.concatenate([rng.standard_normal((B, D)), 0.5 * rng.standard_normal((B, D))], axis=1)}

    _check_y_gradients(head, x, a, pq, tau, rng)


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_gaussian_gradients_through_the_shared_log_std(tau, seed):
    """The same three, w.r.t. the network's means and the one shared log_std (D,): each y-backward
    followed by ``dist_params_backward`` is the gradient of the function of ``dist_params``."""
    rng = np.random.default_rng(seed)
    B, D = 4, 3
    head = DiagGaussian(D)
    x = {"mean": rng.standard_normal((B, D)), "log_std": 0.5 * rng.standard_normal(D)}
    a = x["mean"] + tau * np.exp(x["log_std"]) * rng.standard_normal((B, D))
    pq = {"mean_p": rng.standard_normal((B, D)), "log_std_p": 0.5 * rng.standard_normal(D),
          "mean_q": rng.standard_normal((B, D)), "log_std_q": 0.5 * rng.standard_normal(D)}

    def y_of(mean, log_std):
        return gaussian_rows(head, mean, log_std)

    def chain(dy, log_std, mean="mean", ls="log_std"):
        dmean, dparams = head.dist_params_backward(dy, {"log_std": log_std})
        return {mean: dmean, ls: dparams["log_std"]}

    def kl_backward(dk):
        y_p, y_q = y_of(pq["mean_p"], pq["log_std_p"]), y_of(pq["mean_q"], pq["log_std_q"])
        dp, dq = head.kl_backward(dk, y_p, y_q, tau)
        return {**chain(dp, pq["log_std_p"], "mean_p", "log_std_p"), **chain(dq, pq["log_std_q"], "mean_q", "log_std_q")}

    _assert_ok(check_gradients(
        "log_prob", lambda: head.log_prob(y_of(x["mean"], x["log_std"]), a, tau),
        lambda dk: chain(head.log_prob_backward(dk, y_of(x["mean"], x["log_std"]), a, tau), x["log_std"]), x, rng))
    _assert_ok(check_gradients(
        "entropy", lambda: head.entropy(y_of(x["mean"], x["log_std"]), tau),
        lambda dk: chain(head.entropy_backward(dk, y_of(x["mean"], x["log_std"]), tau), x["log_std"]), x, rng))
    _assert_ok(check_gradients(
        "kl", lambda: head.kl(y_of(pq["mean_p"], pq["log_std_p"]), y_of(pq["mean_q"], pq["log_std_q"]), tau),
        kl_backward, pq, rng))


@LAWS
@given(logits_strategy(), temperature_strategy, st.data())
def test_log_prob_gradient_sums_to_zero(logits, tau, data):
    """sum_j d log pi_a / d z_j = 0: adding a constant to every logit changes no probability."""
    a = np.array(data.draw(st.lists(st.integers(0, logits.shape[1] - 1), min_size=len(logits),
                                    max_size=len(logits))))
    dz = Categorical(logits.shape[1]).log_prob_backward(np.ones(len(logits)), logits, a, tau)
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-12 / tau + 1e-12)


# --- the distribution's parameters -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("head", [Categorical(5), DiagGaussian(3), Bernoulli(4), MultiCategorical([3, 1, 2])], ids=repr)
def test_dist_params_backward_is_the_adjoint_of_the_tangent(head, seed):
    """<dy, tangent(dz, dp)> = <dz_bar, dz> + sum_k <dp_bar[k], dp[k]> with (dz_bar, dp_bar) = backward(dy):
    the reverse chain from y to (network output, head parameters) is the transpose of the forward one."""
    rng = np.random.default_rng(seed)
    B = 6
    params = head.init_params(np.float64, -0.4)
    for p in params.values():
        p[...] = rng.standard_normal(p.shape)
    dz = rng.standard_normal((B, head.net_dim))
    dp = {k: rng.standard_normal(p.shape) for k, p in params.items()}
    dy = rng.standard_normal((B, head.dist_dim))
    tangent = head.dist_params_tangent(dz, dp)
    assert tangent.shape == (B, head.dist_dim)
    dz_bar, dp_bar = head.dist_params_backward(dy, params)
    assert dz_bar.shape == dz.shape and set(dp_bar) == set(params)
    lhs = float(np.sum(dy * tangent))
    rhs = float(np.sum(dz_bar * dz)) + sum(float(np.sum(dp_bar[k] * dp[k])) for k in params)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)
    # the tangent is the derivative of dist_params itself (dist_params is linear in both arguments)
    z = rng.standard_normal((B, head.net_dim))
    shifted = {k: params[k] + dp[k] for k in params}
    np.testing.assert_allclose(head.dist_params(z + dz, shifted) - head.dist_params(z, params), tangent,
                               rtol=0, atol=1e-12)


def test_dist_params_then_split_gives_back_mean_and_log_std():
    """Gaussian: y = dist_params(mu, log_std) splits into mu and log_std in every row; categorical: y = z."""
    rng = np.random.default_rng(1)
    B, D = 5, 3
    head = DiagGaussian(D)
    mu, log_std = rng.standard_normal((B, D)), rng.standard_normal(D)
    y = head.dist_params(mu, {"log_std": log_std})
    assert y.shape == (B, 2 * D)
    mean, l = head.split(y)
    np.testing.assert_array_equal(mean, mu)
    np.testing.assert_array_equal(l, np.broadcast_to(log_std, (B, D)))
    np.testing.assert_array_equal(head.mode(y), mu)
    z = rng.standard_normal((B, 4))
    np.testing.assert_array_equal(Categorical(4).dist_params(z, Categorical(4).init_params(np.float64, 0.0)), z)


# --- the Fisher metric --------------------------------------------------------------------------------

@LAWS
@given(head_and_y, temperature_strategy, st.data())
def test_fisher_metric_is_symmetric_psd(hy, tau, data):
    """<u, M v> = <v, M u> and <v, M v> >= 0 row by row (M = d^2 KL(p || q) / dy_q^2 at q = p)."""
    head, y = hy
    u = data.draw(arrays(np.float64, y.shape, elements=st.floats(-10, 10)))
    v = data.draw(arrays(np.float64, y.shape, elements=st.floats(-10, 10)))
    Mu, Mv = head.fisher_metric(y, u, tau), head.fisher_metric(y, v, tau)
    # rounding scale per row, times |u| |v|: the size of M's largest column, or for the categorical the
    # size of its terms diag(p) / tau^2 and p p^T / tau^2 (M u cancels them when u is near constant)
    norm_M = np.abs(full_metric(head, y, tau)).sum(axis=1).max(axis=1)                     # (B,)
    if isinstance(head, Categorical):
        norm_M = np.maximum(norm_M, head.probs(y, tau).max(axis=1) / tau ** 2)
    if isinstance(head, MultiCategorical):      # the same terms, block by block
        blocks = zip(head.offsets[:-1], head.offsets[1:])
        p_max = np.max([Categorical.probs(y[:, lo:hi], tau).max(axis=1) for lo, hi in blocks], axis=0)   # (B,)
        norm_M = np.maximum(norm_M, p_max / tau ** 2)
    u1, v1 = np.abs(u).sum(axis=1), np.abs(v).sum(axis=1)      # L1 norms: no underflow of squares
    scale = y.shape[1] * (norm_M * u1) * v1
    # plus a floor of a few subnormal steps: with u, v ~1e-313 the two sums round apart by 1e-323 whatever scale says
    assert np.all(np.abs((u * Mv).sum(axis=1) - (v * Mu).sum(axis=1)) <= 1e-12 * scale + 1e-320)
    assert np.all((v * Mv).sum(axis=1) >= -1e-12 * y.shape[1] * (norm_M * v1) * v1)


@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("head", [Categorical(5), DiagGaussian(3), Bernoulli(4), MultiCategorical([3, 1, 2])], ids=repr)
def test_fisher_metric_is_the_hessian_of_kl(head, seed, tau):
    """M dy = the derivative of dKL(p || q)/dy_q in y_q along dy at q = p: central differences of
    ``kl_backward``'s q side, column by column, in float64."""
    rng = np.random.default_rng(seed)
    B, n, h = 4, head.dist_dim, 1e-5
    y = rng.standard_normal((B, n))
    ones = np.ones(B)
    numeric = np.empty((B, n, n))
    for j in range(n):
        plus, minus = y.copy(), y.copy()
        plus[:, j] += h
        minus[:, j] -= h
        numeric[:, :, j] = (head.kl_backward(ones, y, plus, tau)[1] - head.kl_backward(ones, y, minus, tau)[1]) / (2 * h)
    M = full_metric(head, y, tau)
    assert np.max(np.abs(M - numeric)) < 1e-7 * np.max(np.abs(M)), np.max(np.abs(M - numeric))
    # and on a random direction, the matrix applied is the product
    v = rng.standard_normal((B, n))
    np.testing.assert_allclose(head.fisher_metric(y, v, tau), np.einsum("bij,bj->bi", numeric, v),
                               rtol=1e-6, atol=1e-7 * np.max(np.abs(M)))


# --- probabilities, entropy, temperature ---------------------------------------------------------------

@LAWS
@given(logits_strategy(scale=1e3), st.floats(1e-3, 1e3))
def test_probabilities_sum_to_one_and_are_stable(logits, tau):
    """exp(log pi) sums to 1 per row, for logits up to 1e3 and temperatures from 1e-3 to 1e3 (u up to 1e6):
    log-sum-exp keeps everything finite, including entropy, KL, gradients and the Fisher metric."""
    head = Categorical(logits.shape[1])
    log_pi = head.log_softmax(logits, tau)
    assert np.all(np.isfinite(log_pi)) and np.all(log_pi <= 0)
    np.testing.assert_allclose(np.exp(log_pi).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    H = head.entropy(logits, tau)
    assert np.all(np.isfinite(H)) and np.all(H >= -1e-12)
    kl = head.kl(logits, logits[::-1], tau)
    assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-9)
    a = np.argmin(logits, axis=1)
    ones = np.ones(len(a))
    for g in (head.log_prob_backward(ones, logits, a, tau), head.entropy_backward(ones, logits, tau),
              *head.kl_backward(ones, logits, logits[::-1], tau), head.fisher_metric(logits, logits, tau)):
        assert np.all(np.isfinite(g))


def test_large_logits_closed_form():
    """softmax([1000, 999, -1000]) = softmax([1, 0, -1999]): no overflow, the exact answer."""
    log_pi = Categorical.log_softmax(np.array([[1000.0, 999.0, -1000.0]]))
    expected = np.array([1.0, 0.0, -1999.0]) - math.log(math.e + 1.0)
    np.testing.assert_allclose(log_pi[0], expected, rtol=1e-15)
    assert Categorical(2).log_prob(np.array([[1e3, -1e3]]), np.array([1]), 1e-3)[0] == -2e6


@LAWS
@given(logits_strategy(), temperature_strategy)
def test_entropy_at_most_log_k(logits, tau):
    """0 <= H(pi_tau) <= log K."""
    H = Categorical(logits.shape[1]).entropy(logits, tau)
    assert np.all(H <= math.log(logits.shape[1]) + 1e-12) and np.all(H >= -1e-12)


@pytest.mark.parametrize("K", [2, 3, 7])
def test_entropy_equals_log_k_at_uniform(K):
    """Constant logits give the uniform distribution and H = log K exactly (to rounding), for any tau."""
    for tau in TEMPERATURES:
        H = Categorical(K).entropy(np.full((3, K), 4.2), tau)
        np.testing.assert_allclose(H, math.log(K), rtol=0, atol=1e-14)


def test_temperature_limits():
    """tau -> infinity: uniform; tau -> 0+: one-hot at argmax z; the mode is argmax z for every tau."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 4)) * 3.0
    head = Categorical(4)
    np.testing.assert_allclose(head.probs(z, 1e7), 0.25, atol=1e-6)
    np.testing.assert_array_equal(head.probs(z, 1e-6), np.eye(4)[np.argmax(z, axis=1)])
    np.testing.assert_array_equal(head.mode(z), np.argmax(z, axis=1))
    for tau in (1e-6, 0.5, 50.0):  # greedy action of pi_tau does not depend on tau
        np.testing.assert_array_equal(np.argmax(head.probs(z, tau), axis=1), head.mode(z))
    # Gaussian: tau scales sigma, not the mean
    gauss = DiagGaussian(3)
    mu, ls = rng.standard_normal((2, 3)), rng.standard_normal(3)
    y = gaussian_rows(gauss, mu, ls)
    eps = gauss.noise(rng, 2)
    np.testing.assert_allclose(gauss.sample(y, eps, 2.5) - mu, 2.5 * np.exp(ls) * eps, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gauss.sample(y, np.zeros((2, 3)), 2.5), mu, rtol=0, atol=0)
    np.testing.assert_array_equal(gauss.mode(y), mu)
    np.testing.assert_allclose(gauss.entropy(y, 2.5) - gauss.entropy(y, 1.0), 3 * math.log(2.5), atol=1e-12)


# --- KL ----------------------------------------------------------------------------------------------

@LAWS
@given(logits_strategy(), temperature_strategy)
def test_kl_laws(logits, tau):
    """KL(p || p) = 0 and KL(p || q) >= 0 (Gibbs), for categoricals and Gaussians."""
    head = Categorical(logits.shape[1])
    np.testing.assert_array_equal(head.kl(logits, logits, tau), 0.0)
    q = np.roll(logits, 1, axis=1)
    assert np.all(head.kl(logits, q, tau) >= -1e-12)
    D = logits.shape[1]
    gauss = DiagGaussian(D)
    mu = logits / 10.0
    ls = np.linspace(-1.0, 1.0, D)
    y = gaussian_rows(gauss, mu, ls)
    np.testing.assert_allclose(gauss.kl(y, y, tau), 0.0, atol=1e-15)
    assert np.all(gauss.kl(y, gaussian_rows(gauss, np.roll(mu, 1, axis=1), ls[::-1]), tau) >= -1e-12)
    bern = Bernoulli(logits.shape[1])
    np.testing.assert_array_equal(bern.kl(logits, logits, tau), 0.0)
    assert np.all(bern.kl(logits, q, tau) >= -1e-12 * (1.0 + np.abs(logits / tau).sum(axis=1)))


@LAWS
@given(st.tuples(st.integers(1, 5), st.integers(1, 4)).flatmap(
    lambda s: st.tuples(gaussian_y(*s), gaussian_y(*s))), temperature_strategy)
def test_gaussian_kl_laws_on_any_rows(pq, tau):
    """The same for Gaussian rows with a different log-std in every row: KL(p || p) = 0, KL(p || q) >= 0."""
    y_p, y_q = pq
    head = DiagGaussian(y_p.shape[1] // 2)
    np.testing.assert_allclose(head.kl(y_p, y_p, tau), 0.0, atol=1e-15)
    assert np.all(head.kl(y_p, y_q, tau) >= -1e-12 * (1.0 + np.abs(y_q).sum(axis=1)))


def test_gaussian_kl_matches_monte_carlo():
    """KL(p || q) = E_p[log p(a) - log q(a)]: the analytic KL agrees with a 400k-sample Monte-Carlo mean
    (fixed seed) within 5 standard errors of that mean (the standard error is measured, ~1e-3 here)."""
    rng = np.random.default_rng(2024)
    tau, D, N = 1.7, 3, 400_000
    head = DiagGaussian(D)
    y_p = gaussian_rows(head, np.array([[0.3, -1.0, 0.5]]), np.array([0.2, -0.4, 0.0]))
    y_q = gaussian_rows(head, np.array([[0.0, -0.5, 1.5]]), np.array([-0.1, 0.3, 0.2]))
    Y_p, Y_q = np.repeat(y_p, N, axis=0), np.repeat(y_q, N, axis=0)
    a = head.sample(Y_p, head.noise(rng, N), tau)
    log_ratio = head.log_prob(Y_p, a, tau) - head.log_prob(Y_q, a, tau)
    stderr = log_ratio.std() / math.sqrt(N)
    exact = head.kl(y_p, y_q, tau)[0]
    assert abs(log_ratio.mean() - exact) < 5 * stderr, (log_ratio.mean(), exact, stderr)
    assert exact > 0.1  # a non-trivial pair


def test_gaussian_entropy_matches_monte_carlo():
    """H = -E[log pi(a)]; Monte-Carlo (200k samples, fixed seed) within 5 standard errors."""
    rng = np.random.default_rng(5)
    tau, N = 0.6, 200_000
    head = DiagGaussian(2)
    y = gaussian_rows(head, np.zeros((N, 2)), np.array([0.4, -0.8]))
    a = head.sample(y, head.noise(rng, N), tau)
    neg_logp = -head.log_prob(y, a, tau)
    assert abs(neg_logp.mean() - head.entropy(y[:1], tau)[0]) < 5 * neg_logp.std() / math.sqrt(N)


def test_gaussian_log_prob_closed_form():
    """log N(a; mu, sigma^2) by hand for D = 1, sigma = tau e^l; D = 2 is the sum of its coordinates."""
    mu, l, a, tau = 0.4, -0.3, 1.1, 1.9
    sigma = tau * math.exp(l)
    by_hand = -0.5 * ((a - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    got = DiagGaussian(1).log_prob(np.array([[mu, l]]), np.array([[a]]), tau)[0]
    assert got == pytest.approx(by_hand, rel=1e-14)
    two = DiagGaussian(2).log_prob(np.array([[mu, 0.0, l, 0.5]]), np.array([[a, -1.0]]), tau)[0]
    other = DiagGaussian(1).log_prob(np.array([[0.0, 0.5]]), np.array([[-1.0]]), tau)[0]
    assert two == pytest.approx(by_hand + other, rel=1e-14)


# --- sampling ----------------------------------------------------------------------------------------

def test_categorical_sampling_frequencies():
    """Empirical frequencies of 200k draws match pi_tau within 5 binomial standard deviations per
    category (fixed seed); a category of probability exactly 0 (logit -1e3 against 0) is never drawn."""
    rng = np.random.default_rng(11)
    N, tau = 200_000, 1.3
    head = Categorical(5)
    z = np.array([[0.5, -1.0, 2.0, 0.0, -1e3]])
    p = head.probs(z, tau)[0]
    assert p[-1] == 0.0
    a = head.sample(np.repeat(z, N, axis=0), head.noise(rng, N), tau)
    assert a.dtype == np.int64 and a.shape == (N,)
    freq = np.bincount(a, minlength=5) / N
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N)), (freq, p)
    assert freq[-1] == 0.0


def test_categorical_sample_draws_one_uniform_per_row():
    """Inverse CDF: ``noise`` draws exactly B uniforms, and a_b = #{k : C_bk <= U_b C_bK}."""
    z = np.random.default_rng(0).standard_normal((50, 4))
    head = Categorical(4)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    noise = head.noise(rng_a, 50)
    u = rng_b.random(50)
    np.testing.assert_array_equal(noise, u)
    a = head.sample(z, noise)
    cdf = np.cumsum(head.probs(z), axis=1)
    expected = [int(np.searchsorted(row, ui * row[-1], side="right")) for row, ui in zip(cdf, u)]
    np.testing.assert_array_equal(a, expected)
    assert rng_a.random() == rng_b.random()  # both generators advanced by the same B draws


def test_gaussian_sampling_moments():
    """a = mu + tau e^l eps: sample mean and std within 5 standard errors (100k draws, fixed seed)."""
    rng = np.random.default_rng(4)
    N, tau = 100_000, 0.8
    head = DiagGaussian(2)
    mu, ls = np.array([[1.0, -2.0]]), np.array([0.3, -0.5])
    a = head.sample(gaussian_rows(head, np.repeat(mu, N, axis=0), ls), head.noise(rng, N), tau)
    assert a.shape == (N, 2)
    sigma = tau * np.exp(ls)
    assert np.all(np.abs(a.mean(axis=0) - mu[0]) < 5 * sigma / math.sqrt(N))
    assert np.all(np.abs(a.std(axis=0) - sigma) < 5 * sigma / math.sqrt(2 * N))


def test_gaussian_noise_is_b_by_d_standard_normals():
    """``noise`` draws the B x D standard normals of one sample per row, no more; actions keep y's dtype."""
    head = DiagGaussian(3)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(head.noise(rng_a, 7), rng_b.standard_normal((7, 3)))
    assert rng_a.random() == rng_b.random()
    y32 = np.zeros((7, 6), dtype=np.float32)
    assert head.sample(y32, head.noise(rng_a, 7), 0.7).dtype == np.float32


def test_sampling_is_reproducible():
    """The same seed gives the same samples; a different seed gives different ones."""
    z = np.random.default_rng(0).standard_normal((64, 5))
    cat, gauss = Categorical(5), DiagGaussian(2)
    y = np.zeros((64, 4))

    def draw(head, rows, seed, tau=0.7):
        return head.sample(rows, head.noise(np.random.default_rng(seed), len(rows)), tau)

    for seed in (0, 1):
        np.testing.assert_array_equal(draw(cat, z, seed), draw(cat, z, seed))
        np.testing.assert_array_equal(draw(gauss, y, seed), draw(gauss, y, seed))
    assert not np.array_equal(draw(cat, z, 0, 1.0), draw(cat, z, 1, 1.0))
    assert not np.array_equal(draw(gauss, y, 0), draw(gauss, y, 1))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tau=st.floats(0.1, 5.0), B=st.integers(1, 20), K=st.integers(2, 6))
def test_categorical_sample_matches_the_compiled_rows(seed, tau, B, K):
    """``Categorical.sample`` with uniforms u draws what the act kernel's row helpers draw:
    ``log_softmax_row`` of z / tau (log pi and its entropy) then ``sample_row(log_pi, u)``, row by row.

    (An action could differ only if a uniform fell within rounding of a CDF step: probability ~1e-15.)
    """
    rng = np.random.default_rng(seed)
    head = Categorical(K)
    z = rng.standard_normal((B, K)) * 3
    u = head.noise(rng, B)
    actions = head.sample(z, u, tau)
    assert actions.dtype == np.int64 and actions.shape == (B,)
    log_pi_ref, H_ref = head.log_softmax(z, tau), head.entropy(z, tau)
    for b in range(B):
        log_pi, p = z[b] / tau, np.empty(K)
        H = log_softmax_row(log_pi, p)
        np.testing.assert_allclose(log_pi, log_pi_ref[b], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(p, np.exp(log_pi_ref[b]), rtol=1e-12, atol=1e-15)
        assert H == pytest.approx(H_ref[b], rel=1e-12, abs=1e-12)
        a = sample_row(log_pi, u[b])
        assert a == actions[b]
        assert log_pi[a] == pytest.approx(head.log_prob(z[b:b + 1], actions[b:b + 1], tau)[0], rel=1e-12, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tau=st.floats(0.1, 5.0), B=st.integers(1, 20), D=st.integers(1, 5))
def test_gaussian_log_density_row_matches_log_prob(seed, tau, B, D):
    """The act kernel's ``log_density_row(a, mu, l, tau)`` is ``DiagGaussian(D).log_prob`` row by row (float64)."""
    rng = np.random.default_rng(seed)
    head = DiagGaussian(D)
    y = np.concatenate([rng.standard_normal((B, D)), 0.5 * rng.standard_normal((B, D))], axis=1)
    a = head.sample(y, head.noise(rng, B), tau)
    ref = head.log_prob(y, a, tau)
    for b in range(B):
        got = log_density_row(a[b], y[b, :D], y[b, D:], tau)
        assert got == pytest.approx(ref[b], rel=1e-12, abs=1e-12)


# --- bad input ---------------------------------------------------------------------------------------

def _tau_calls(tau):
    """Every method of both heads that takes a temperature, with valid rows and the given tau."""
    z, a = np.zeros((2, 3)), np.array([0, 2])
    cat, gauss = Categorical(3), DiagGaussian(3)
    y, x = np.zeros((2, 6)), np.zeros((2, 3))
    ones = np.ones(2)
    return {
        "categorical.log_softmax": lambda: Categorical.log_softmax(z, tau),
        "categorical.probs": lambda: cat.probs(z, tau),
        "categorical.sample": lambda: cat.sample(z, np.full(2, 0.5), tau),
        "categorical.log_prob": lambda: cat.log_prob(z, a, tau),
        "categorical.log_prob_backward": lambda: cat.log_prob_backward(ones, z, a, tau),
        "categorical.entropy": lambda: cat.entropy(z, tau),
        "categorical.entropy_backward": lambda: cat.entropy_backward(ones, z, tau),
        "categorical.kl": lambda: cat.kl(z, z, tau),
        "categorical.kl_backward": lambda: cat.kl_backward(ones, z, z, tau),
        "categorical.fisher_metric": lambda: cat.fisher_metric(z, z, tau),
        "gaussian.sample": lambda: gauss.sample(y, x, tau),
        "gaussian.log_prob": lambda: gauss.log_prob(y, x, tau),
        "gaussian.log_prob_backward": lambda: gauss.log_prob_backward(ones, y, x, tau),
        "gaussian.entropy": lambda: gauss.entropy(y, tau),
        "gaussian.entropy_backward": lambda: gauss.entropy_backward(ones, y, tau),
        "gaussian.kl": lambda: gauss.kl(y, y, tau),
        "gaussian.kl_backward": lambda: gauss.kl_backward(ones, y, y, tau),
        "gaussian.fisher_metric": lambda: gauss.fisher_metric(y, y, tau),
    }


@pytest.mark.parametrize("tau", [0.0, -1.5, float("nan"), float("inf"), "hot", None])
def test_bad_temperature_is_named(tau):
    """check_temperature, and every head function that takes tau, raise a ValueError naming it."""
    with pytest.raises(ValueError, match="temperature") as info:
        check_temperature(tau)
    assert repr(tau) in str(info.value)
    for name, call in _tau_calls(tau).items():
        with pytest.raises(ValueError, match="temperature") as info:
            call()
        assert repr(tau) in str(info.value), name


def test_good_temperatures_pass():
    """The valid calls of ``_tau_calls`` (so the test above fails for the temperature, not the rows)."""
    assert check_temperature(2) == 2.0 and isinstance(check_temperature(np.float32(0.5)), float)
    for call in _tau_calls(0.7).values():
        call()


def test_bad_shapes_are_named():
    z = np.zeros((2, 3))
    cat, gauss = Categorical(3), DiagGaussian(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        cat.kl(z, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
        cat.log_prob(z, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        cat.log_prob(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        cat.log_prob(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"logits must have shape \(B, K\)"):
        cat.entropy(np.zeros(3))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 6\), got \(2, 3\)"):
        gauss.log_prob(z, z)
    with pytest.raises(ValueError, match=r"y_q must have shape \(B, 6\), got \(2, 5\)"):
        gauss.kl(np.zeros((2, 6)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"actions \(2, 2\) and mean \(2, 3\)"):
        gauss.log_prob(np.zeros((2, 6)), np.zeros((2, 2)))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n_actions"):
            Categorical(bad)
        with pytest.raises(ValueError, match="action_dim"):
            DiagGaussian(bad)


# --- the Bernoulli head (MultiBinary actions) ----------------------------------------------------------

@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_bernoulli_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) of independent Bernoullis w.r.t. their logits."""
    rng = np.random.default_rng(seed)
    B, n = 4, 3
    head = Bernoulli(n)
    x = {"y": 2.0 * rng.standard_normal((B, n))}
    a = rng.integers(0, 2, size=(B, n))
    pq = {"y_p": 2.0 * rng.standard_normal((B, n)), "y_q": 2.0 * rng.standard_normal((B, n))}
    _check_y_gradients(head, x, a, pq, tau, rng)


def test_bernoulli_log_prob_closed_form():
    """log pi = sum_d log p_d or log(1 - p_d), p = 1 / (1 + e^{-z / tau}), by hand; finite at |z / tau| = 1e3."""
    z, a, tau = np.array([[0.3, -1.2, 2.0]]), np.array([[1, 0, 0]]), 0.8
    p = 1.0 / (1.0 + np.exp(-z[0] / tau))
    want = math.log(p[0]) + math.log(1.0 - p[1]) + math.log(1.0 - p[2])
    assert Bernoulli(3).log_prob(z, a, tau)[0] == pytest.approx(want, rel=1e-14)
    big = Bernoulli(2).log_prob(np.array([[1.0, -1.0]]), np.array([[0, 1]]), 1e-3)[0]
    assert big == pytest.approx(-2e3, rel=1e-12)


@LAWS
@given(logits_strategy(), temperature_strategy)
def test_bernoulli_entropy_bounds(logits, tau):
    """0 <= H <= n log 2 for every row, and H = n log 2 exactly at z = 0."""
    head = Bernoulli(logits.shape[1])
    H = head.entropy(logits, tau)
    assert np.all(H >= -1e-12) and np.all(H <= logits.shape[1] * math.log(2.0) + 1e-12)
    assert Bernoulli(5).entropy(np.zeros((2, 5)), tau) == pytest.approx(5 * math.log(2.0), rel=1e-15)


def test_bernoulli_sampling_frequencies():
    """200k draws: each dimension is 1 with frequency p_d within 5 binomial standard deviations; a
    dimension of probability 0 (logit -1e3) is never 1; the mode is 1[z > 0]."""
    rng = np.random.default_rng(5)
    N, tau = 200_000, 1.3
    head = Bernoulli(4)
    z = np.array([[0.5, -1.0, 2.0, -1e3]])
    p = head.probs(z, tau)[0]
    a = head.sample(np.repeat(z, N, axis=0), head.noise(rng, N), tau)
    assert a.dtype == np.int64 and a.shape == (N, 4)
    freq = a.mean(axis=0)
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N) + 1e-12), (freq, p)
    assert freq[-1] == 0.0
    np.testing.assert_array_equal(head.mode(z), [[1, 0, 1, 0]])
    assert head.env_actions(a[:2]).dtype == np.int8


@settings(deadline=None, max_examples=60)
@given(u=st.floats(-700.0, 700.0))
def test_log_bernoulli_row_matches_the_reference(u):
    """The compiled row helper gives the reference's p, log p and log(1 - p) of one logit (float64)."""
    head = Bernoulli(1)
    p, log_p, log_1mp = log_bernoulli_row(u)
    y = np.array([[u]])
    assert log_p == pytest.approx(head.log_prob(y, np.array([[1]]), 1.0)[0], rel=1e-12, abs=1e-300)
    assert log_1mp == pytest.approx(head.log_prob(y, np.array([[0]]), 1.0)[0], rel=1e-12, abs=1e-300)
    assert p == pytest.approx(head.probs(y)[0, 0], rel=1e-12, abs=1e-300)


def test_bernoulli_refuses_non_binary_actions():
    with pytest.raises(ValueError, match="binary actions must be 0 or 1"):
        Bernoulli(2).log_prob(np.zeros((1, 2)), np.array([[0, 2]]))
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        Bernoulli(0)


# --- the multi-categorical head (MultiDiscrete actions) -------------------------------------------------

@pytest.mark.parametrize("tau", TEMPERATURES)
@pytest.mark.parametrize("seed", range(3))
def test_multicategorical_gradients(tau, seed):
    """log_prob, entropy and KL (both sides) of independent categoricals w.r.t. their blocks of logits."""
    rng = np.random.default_rng(seed)
    B, head = 4, MultiCategorical([3, 1, 4])
    x = {"y": 2.0 * rng.standard_normal((B, head.dist_dim))}
    a = np.stack([rng.integers(0, k, size=B) for k in head.nvec], axis=1)
    pq = {"y_p": 2.0 * rng.standard_normal((B, head.dist_dim)), "y_q": 2.0 * rng.standard_normal((B, head.dist_dim))}
    _check_y_gradients(head, x, a, pq, tau, rng)


@LAWS
@given(st.integers(0, 2**16), temperature_strategy)
def test_multicategorical_is_a_sum_of_categoricals(seed, tau):
    """Independence: log pi, H and KL are the sums of the blocks' categorical ones; KL(p || p) = 0,
    KL >= 0; 0 <= H <= sum_g log K_g; a block of one value adds nothing."""
    rng = np.random.default_rng(seed)
    head = MultiCategorical([2, 1, 3])
    y, y_q = 3.0 * rng.standard_normal((5, 6)), 3.0 * rng.standard_normal((5, 6))
    a = head.sample(y, head.noise(rng, 5), tau)
    blocks = [(0, 2), (2, 3), (3, 6)]
    want_logp = sum(Categorical.log_prob(y[:, lo:hi], a[:, g], tau) for g, (lo, hi) in enumerate(blocks))
    np.testing.assert_allclose(head.log_prob(y, a, tau), want_logp, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a[:, 1], 0)
    H = head.entropy(y, tau)
    assert np.all(H >= -1e-12) and np.all(H <= math.log(2) + math.log(3) + 1e-12)
    want_H = Categorical.entropy(y[:, 0:2], tau) + Categorical.entropy(y[:, 3:6], tau)   # the 1-value block: 0
    np.testing.assert_allclose(H, want_H, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(head.kl(y, y, tau), 0.0)
    assert np.all(head.kl(y, y_q, tau) >= -1e-12)


def test_multicategorical_sampling_frequencies():
    """Each dimension's values match its block's probabilities within 5 binomial standard deviations."""
    rng = np.random.default_rng(3)
    N, tau = 100_000, 0.9
    head = MultiCategorical([3, 2])
    y = np.array([[0.5, -1.0, 2.0, 0.3, -0.3]])
    a = head.sample(np.repeat(y, N, axis=0), head.noise(rng, N), tau)
    assert a.dtype == np.int64 and a.shape == (N, 2)
    for g, (lo, hi) in enumerate([(0, 3), (3, 5)]):
        p = Categorical.probs(y[:, lo:hi], tau)[0]
        freq = np.bincount(a[:, g], minlength=hi - lo) / N
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / N)), (g, freq, p)
    np.testing.assert_array_equal(head.mode(y), [[2, 0]])


def test_multicategorical_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match=r"action g must lie in \[0, nvec\[g\]\)"):
        MultiCategorical([2, 3]).log_prob(np.zeros((1, 5)), np.array([[0, 3]]))
    with pytest.raises(ValueError, match="nvec must be a 1-D sequence of integers >= 1"):
        MultiCategorical([2, 0])
