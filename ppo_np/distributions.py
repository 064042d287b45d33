r"""Action distributions with a temperature: sampling, log-probability, entropy, KL, and their gradients.

Notation follows Schulman et al. (2017): the policy pi_theta(a | s) is a distribution over actions whose
parameters are produced by a network from the state s. For a minibatch of B states we work with arrays
(one row per state); tau > 0 is the temperature, and tau = 1 is the ordinary policy. For a scalar loss
L we write dX = dL/dX (same shape as X), as in ``layers.py``.

Categorical policy (discrete actions, K of them)
------------------------------------------------
The network outputs logits z (B, K). With u = z / tau,

    pi_tau(k | s) = softmax(u)_k = exp(u_k) / sum_j exp(u_j),
    log pi_tau(k | s) = u_k - m - log sum_j exp(u_j - m),     m = max_j u_j   (log-sum-exp)

Subtracting m changes nothing mathematically and keeps every exponent <= 0, so logits of size 1e3 (or a
tiny tau) cannot overflow. As tau -> infinity, u -> 0 and pi_tau -> uniform; as tau -> 0+, pi_tau puts
all its mass on argmax_k z_k (when that is unique). The deterministic action is argmax_k z_k, for
every tau.

The Jacobian of the log-softmax is the whole story:

    d log pi_k / d u_j = 1[k = j] - pi_j,        d u_j / d z_j = 1 / tau.

* log-probability of the taken action a:
      d log pi_a / d z_j = (1[j = a] - pi_j) / tau.
  Its entries sum to zero over j (a shift of every logit changes no probability).
* entropy H = -sum_k pi_k log pi_k. With d pi_k / d u_j = pi_k (1[k = j] - pi_j),
      dH/du_j = -sum_k pi_k (1[k=j] - pi_j)(log pi_k + 1) = -pi_j (log pi_j + 1) + pi_j (1 - H)
              = -pi_j (log pi_j + H),
      dH/dz_j = -pi_j (log pi_j + H) / tau.
  0 <= H <= log K, with H = log K exactly at the uniform distribution.
* KL(p || q) = sum_k p_k (log p_k - log q_k), for p = softmax(z^p / tau), q = softmax(z^q / tau):
      dKL/dz^q_j = (q_j - p_j) / tau,
      dKL/dz^p_j = p_j (log p_j - log q_j - KL) / tau.
  KL >= 0 with equality iff p = q (Gibbs' inequality).

Sampling by inverse CDF, vectorised over rows: with C_k = sum_{j <= k} pi_j and one uniform U in [0, 1)
per row, the action is a = #{k : C_k <= U C_K} = min{k : U C_K < C_k}, so P(a = k) = (C_k - C_{k-1}) / C_K
= pi_k. Scaling U by C_K (which is 1 up to rounding) means a rounding deficit in the cumulative sum can
never select a category of probability zero.

Diagonal Gaussian policy (continuous actions, D dimensions)
-----------------------------------------------------------
The network outputs the mean mu (B, D); the log standard deviation l (D,) is a state-independent
learned parameter. The temperature scales the standard deviation:

    sigma_d = tau * exp(l_d),     pi_tau(a | s) = prod_d N(a_d; mu_d, sigma_d^2).

Everything below is summed over the action dimensions d; with w_d = (a_d - mu_d) / sigma_d,

* log pi(a | s) = sum_d [ -w_d^2 / 2 - log sigma_d - log(2 pi) / 2 ],
      d log pi / d mu_d = w_d / sigma_d,
      d log pi / d l_d  = w_d^2 - 1          (d sigma_d / d l_d = sigma_d, so sigma d/dsigma).
* H = sum_d [ log sigma_d + (1 + log 2 pi) / 2 ]  (the same for every state),
      dH/d l_d = 1,   dH/d mu = 0.
* KL(p || q) = sum_d [ log(sigma^q_d / sigma^p_d) + (sigma^p_d^2 + (mu^p_d - mu^q_d)^2) / (2 sigma^q_d^2) - 1/2 ],
      dKL/d mu^q_d = (mu^q_d - mu^p_d) / sigma^q_d^2,      dKL/d mu^p_d = -dKL/d mu^q_d,
      dKL/d l^q_d  = 1 - (sigma^p_d^2 + (mu^p_d - mu^q_d)^2) / sigma^q_d^2,
      dKL/d l^p_d  = sigma^p_d^2 / sigma^q_d^2 - 1.
  With the same tau on both sides, tau cancels from log(sigma^q/sigma^p) and sigma^p/sigma^q and only
  divides the squared distance of the means: a hotter policy makes the same mean shift cost less KL.

Because l is shared by every state, its gradient is the per-state gradient summed over the batch
(generally: summed down to the shape of the log_std that was passed, so a per-state (B, D) log_std works
too).

Layout of this file
-------------------
``Categorical`` and ``DiagGaussian`` are namespaces of stateless functions over arrays; every forward is
followed by its backward (``log_prob`` / ``log_prob_backward``, ...). ``policy_terms`` computes the
log-probability, the entropy and the KL of one minibatch in one pass and ``policy_terms_backward`` returns
the gradient of any weighted combination of them; it is what ``losses.ppo_loss`` calls on its hot path,
and ``tests/test_distributions.py::test_policy_terms_match_the_separate_functions`` asserts it agrees
with the separate, readable functions.

References: Schulman, Wolski, Dhariwal, Radford, Klimov (2017), "Proximal Policy Optimization
Algorithms", arXiv:1707.06347. Hinton, Vinyals, Dean (2015), "Distilling the Knowledge in a Neural
Network" (softmax temperature).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.jit import jit

LOG_2PI = math.log(2.0 * math.pi)


# --- validation -------------------------------------------------------------------------------------

def check_temperature(temperature) -> float:
    """tau as a Python float; ValueError unless it is a finite number > 0.

    Checked by ``tests/test_distributions.py::test_bad_temperature_is_named``.
    """
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return tau


def _check_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, K) with K >= 1, got {logits.shape}")
    if logits.dtype.kind != "f":
        logits = logits.astype(np.float64)
    return logits


def _check_actions_discrete(actions, logits: np.ndarray) -> np.ndarray:
    actions = np.asarray(actions)
    B, K = logits.shape
    if actions.shape != (B,):
        raise ValueError(f"actions must have shape ({B},) to match logits {logits.shape}, got {actions.shape}")
    if actions.dtype.kind not in "iu":
        raise ValueError(f"discrete actions must be integers, got dtype {actions.dtype}")
    if B and (actions.min() < 0 or actions.max() >= K):
        raise ValueError(f"discrete actions must lie in [0, {K}), got values in "
                         f"[{actions.min()}, {actions.max()}]")
    return actions


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must have the same shape")


def _check_mean_log_std(mean, log_std, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean)
    log_std = np.asarray(log_std)
    if mean.ndim != 2:
        raise ValueError(f"mean{name} must have shape (B, D), got {mean.shape}")
    if log_std.shape not in ((mean.shape[1],), mean.shape):
        raise ValueError(f"log_std{name} must have shape ({mean.shape[1]},) or {mean.shape} "
                         f"to match mean{name} {mean.shape}, got {log_std.shape}")
    return mean, log_std


def sum_to_shape(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast gradient g (B, D) down to ``shape``: (D,) sums over the batch, (B, D) keeps it.

    This is the backward of broadcasting: a parameter used by every row gets the sum of the rows' gradients.
    """
    if g.shape == tuple(shape):
        return g
    return g.sum(axis=0).reshape(shape)


# --- categorical ------------------------------------------------------------------------------------

class CategoricalTerms(NamedTuple):
    """Cache of ``Categorical.policy_terms`` for its backward.

    log_pi, pi: the tempered new policy's log-probabilities and probabilities (B, K), needed by every
    derivative (all are written in terms of pi and log pi); entropy (B,) for dH/du = -pi (log pi + H);
    actions (B,) for the one-hot of d log pi_a; p_old (B, K) or None for dKL/du^q = q - p;
    temperature for the final 1/tau.
    """

    log_pi: np.ndarray
    pi: np.ndarray
    entropy: np.ndarray
    actions: np.ndarray
    p_old: np.ndarray | None
    temperature: float


class Categorical:
    """pi_tau(a | s) = softmax(z / tau) over logits z (B, K). Stateless; see the module docstring."""

    discrete = True

    @staticmethod
    def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(k | s) = u_k - m - log sum_j exp(u_j - m), u = z / tau, m = max_j u_j.

        Shapes: logits (B, K) -> (B, K). Finite for any finite u (logits ~1e3 included).
        Checked by ``tests/test_distributions.py::test_probabilities_sum_to_one_and_are_stable``.
        """
        tau = check_temperature(temperature)
        u = _check_logits(logits) / tau                            # (B, K)
        u = u - u.max(axis=1, keepdims=True)                       # u - m <= 0
        return u - np.log(np.exp(u).sum(axis=1, keepdims=True))    # (B, K)

    @staticmethod
    def probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """pi_tau(. | s) = exp(log_softmax(z / tau)), rows summing to 1. Shapes: (B, K) -> (B, K).

        Checked by ``tests/test_distributions.py::test_temperature_limits``.
        """
        return np.exp(Categorical.log_softmax(logits, temperature))

    @staticmethod
    def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        r"""One action per row, a ~ pi_tau(. | s), by inverse CDF with one uniform per row.

        a_b = #{k : C_{bk} <= U_b C_{bK}}, C the row-wise cumulative sum of pi_tau, U_b ~ U[0, 1).
        Shapes: logits (B, K) -> actions (B,) int64. Draws exactly B uniforms from ``rng``.
        Checked by ``tests/test_distributions.py::test_categorical_sampling_frequencies`` and
        ``::test_sampling_is_reproducible``.
        """
        return Categorical._inverse_cdf(Categorical.log_softmax(logits, temperature), rng)

    @staticmethod
    def sample_with_log_prob(logits: np.ndarray, rng: np.random.Generator,
                             temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``sample`` and ``log_prob`` of its result in one compiled pass (the rollout's hot path).

        Draws the same uniforms as ``sample``, so it returns the same actions for the same ``rng``
        (up to a tie of u with a CDF step at float rounding); ~4 us against ~40 us for the NumPy
        reference ``sample_with_log_prob_reference`` at B = 8.
        Shapes: logits (B, K) -> actions (B,) int64, logp (B,).
        Checked by ``tests/test_distributions.py::test_sample_with_log_prob_matches_the_separate_calls``.
        """
        tau = check_temperature(temperature)
        logits = _check_logits(logits)
        u = rng.random(logits.shape[0])                                     # (B,), the uniforms of sample
        actions = np.empty(logits.shape[0], dtype=np.int64)
        return actions, categorical_sample_kernel(np.ascontiguousarray(logits), u, tau, actions,
                                                  np.empty(logits.shape[0], dtype=logits.dtype))

    @staticmethod
    def sample_with_log_prob_reference(logits: np.ndarray, rng: np.random.Generator,
                                       temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The specification of ``categorical_sample_kernel``: ``sample``, then ``log_prob``."""
        log_pi = Categorical.log_softmax(logits, temperature)                # (B, K)
        actions = Categorical._inverse_cdf(log_pi, rng)                     # (B,)
        return actions, log_pi[np.arange(actions.size), actions]

    @staticmethod
    def _inverse_cdf(log_pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(np.exp(log_pi), axis=1)                           # (B, K), C_{bk}
        u = rng.random(cdf.shape[0]) * cdf[:, -1]                         # (B,), U_b C_{bK}
        a = (cdf <= u[:, None]).sum(axis=1)                               # (B,), min{k : u < C_k}
        return np.minimum(a, cdf.shape[1] - 1).astype(np.int64)           # guard u == C_K after rounding

    @staticmethod
    def mode(logits: np.ndarray) -> np.ndarray:
        """The deterministic action argmax_k z_k (the same for every tau). Shapes: (B, K) -> (B,) int64.

        Checked by ``tests/test_distributions.py::test_temperature_limits``.
        """
        return np.argmax(_check_logits(logits), axis=1).astype(np.int64)

    @staticmethod
    def log_prob(logits: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(a_b | s_b) = (log_softmax(z_b / tau))_{a_b}. Shapes: (B, K), (B,) -> (B,).

        Checked by ``tests/test_distributions.py::test_large_logits_closed_form`` and
        ``::test_policy_terms_match_the_separate_functions``.
        """
        logits = _check_logits(logits)
        actions = _check_actions_discrete(actions, logits)
        log_pi = Categorical.log_softmax(logits, temperature)
        return log_pi[np.arange(len(actions)), actions]

    @staticmethod
    def log_prob_backward(dlogp: np.ndarray, logits: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> np.ndarray:
        r"""dz = dlogp * (onehot(a) - pi_tau) / tau.

        .. math:: \frac{\partial \log\pi_\tau(a|s)}{\partial z_j} = \frac{1[j=a] - \pi_\tau(j|s)}{\tau}

        Shapes: dlogp (B,), logits (B, K), actions (B,) -> dlogits (B, K); each row sums to 0.
        Checked by ``tests/test_distributions.py::test_categorical_gradients`` and
        ``::test_log_prob_gradient_sums_to_zero``.
        """
        tau = check_temperature(temperature)
        logits = _check_logits(logits)
        actions = _check_actions_discrete(actions, logits)
        dlogp = np.asarray(dlogp)
        pi = Categorical.probs(logits, tau)                            # (B, K)
        dz = -dlogp[:, None] * pi                                      # -dlogp * pi_j
        dz[np.arange(len(actions)), actions] += dlogp                  # + dlogp * 1[j = a]
        return dz / tau

    @staticmethod
    def entropy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""H(pi_tau(. | s)) = -sum_k pi_k log pi_k, in [0, log K]. Shapes: (B, K) -> (B,).

        Checked by ``tests/test_distributions.py::test_entropy_at_most_log_k`` and
        ``::test_entropy_equals_log_k_at_uniform``.
        """
        log_pi = Categorical.log_softmax(logits, temperature)
        return -(np.exp(log_pi) * log_pi).sum(axis=1)

    @staticmethod
    def entropy_backward(dH: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""dz = -dH * pi (log pi + H) / tau.

        .. math:: \frac{\partial H}{\partial z_j} = -\frac{\pi_j(\log\pi_j + H)}{\tau}

        Shapes: dH (B,), logits (B, K) -> dlogits (B, K).
        Checked by ``tests/test_distributions.py::test_categorical_gradients``.
        """
        tau = check_temperature(temperature)
        log_pi = Categorical.log_softmax(logits, tau)                  # (B, K)
        pi = np.exp(log_pi)
        H = -(pi * log_pi).sum(axis=1, keepdims=True)                  # (B, 1)
        return -np.asarray(dH)[:, None] * pi * (log_pi + H) / tau

    @staticmethod
    def kl(logits_p: np.ndarray, logits_q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""KL(p || q) = sum_k p_k (log p_k - log q_k), p = softmax(z^p / tau), q = softmax(z^q / tau).

        Analytic, state by state. Shapes: (B, K), (B, K) -> (B,), every entry >= 0.
        Checked by ``tests/test_distributions.py::test_kl_laws``.
        """
        logits_p, logits_q = _check_logits(logits_p, "logits_p"), _check_logits(logits_q, "logits_q")
        _check_same_shape(logits_p, logits_q, "logits_p", "logits_q")
        log_p = Categorical.log_softmax(logits_p, temperature)
        log_q = Categorical.log_softmax(logits_q, temperature)
        return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)

    @staticmethod
    def kl_backward(dkl: np.ndarray, logits_p: np.ndarray, logits_q: np.ndarray,
                    temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""dz^p = dkl * p (log p - log q - KL) / tau,   dz^q = dkl * (q - p) / tau.

        .. math:: \frac{\partial KL}{\partial z^p_j} = \frac{p_j(\log p_j - \log q_j - KL)}{\tau},\qquad
                  \frac{\partial KL}{\partial z^q_j} = \frac{q_j - p_j}{\tau}

        Shapes: dkl (B,), logits_p and logits_q (B, K) -> (dlogits_p, dlogits_q), each (B, K).
        Checked by ``tests/test_distributions.py::test_categorical_gradients``.
        """
        tau = check_temperature(temperature)
        logits_p, logits_q = _check_logits(logits_p, "logits_p"), _check_logits(logits_q, "logits_q")
        _check_same_shape(logits_p, logits_q, "logits_p", "logits_q")
        log_p = Categorical.log_softmax(logits_p, tau)                 # (B, K)
        log_q = Categorical.log_softmax(logits_q, tau)
        p, q = np.exp(log_p), np.exp(log_q)
        log_ratio = log_p - log_q
        kl = (p * log_ratio).sum(axis=1, keepdims=True)                # (B, 1)
        dkl = np.asarray(dkl)[:, None]
        return dkl * p * (log_ratio - kl) / tau, dkl * (q - p) / tau

    @staticmethod
    def policy_terms(logits: np.ndarray, actions: np.ndarray, temperature: float = 1.0,
                     logits_old: np.ndarray | None = None):
        r"""log pi_tau(a | s), H(pi_tau(. | s)) and KL(pi_old,tau || pi_tau) in one pass over the logits.

        The KL is None when ``logits_old`` is None. The same formulas as ``log_prob``, ``entropy`` and
        ``kl`` (with the new policy as q), sharing one log-softmax.
        Shapes: logits (B, K), actions (B,), logits_old (B, K) or None
        -> (logp (B,), entropy (B,), kl (B,) or None, CategoricalTerms).
        Checked by ``tests/test_distributions.py::test_policy_terms_match_the_separate_functions``.
        """
        tau = check_temperature(temperature)
        logits = _check_logits(logits)
        actions = _check_actions_discrete(actions, logits)
        log_pi = Categorical.log_softmax(logits, tau)                  # (B, K)
        pi = np.exp(log_pi)
        logp = log_pi[np.arange(len(actions)), actions]                       # (B,) log pi_a
        entropy = -(pi * log_pi).sum(axis=1)                                 # (B,)
        kl, p_old = None, None
        if logits_old is not None:
            logits_old = _check_logits(logits_old, "logits_old")
            _check_same_shape(logits_old, logits, "logits_old", "logits")
            log_p_old = Categorical.log_softmax(logits_old, tau)
            p_old = np.exp(log_p_old)
            kl = (p_old * (log_p_old - log_pi)).sum(axis=1)                  # KL(p_old || pi)
        return logp, entropy, kl, CategoricalTerms(log_pi, pi, entropy, actions, p_old, tau)

    @staticmethod
    def policy_terms_backward(dlogp: np.ndarray, dentropy: np.ndarray, dkl: np.ndarray | None,
                              cache: CategoricalTerms) -> np.ndarray:
        r"""Gradient w.r.t. the new logits of sum_b (dlogp_b log pi_b + dentropy_b H_b + dkl_b KL_b).

        .. math:: \tau\,dz_j = dlogp\,(1[j=a] - \pi_j) - dH\,\pi_j(\log\pi_j + H) + dkl\,(\pi_j - p^{old}_j)

        Any of the three upstream gradients may be a scalar (broadcast over the batch); dkl may be None.
        Shapes: dlogp, dentropy, dkl (B,) or scalars -> dlogits (B, K).
        Checked by ``tests/test_distributions.py::test_policy_terms_match_the_separate_functions`` and
        by the chained ``ppo_loss`` checks of ``ppo-np gradcheck``.
        """
        log_pi, pi, H, actions, p_old, tau = cache
        B = pi.shape[0]
        dlogp = np.broadcast_to(np.asarray(dlogp, dtype=pi.dtype), (B,))
        dH = np.broadcast_to(np.asarray(dentropy, dtype=pi.dtype), (B,))
        coef = -dlogp - dH * H                                          # (B,), the pi_j-proportional terms
        if dkl is not None:
            if p_old is None:
                raise ValueError("dkl was given but policy_terms was called without logits_old")
            coef = coef + dkl
        dz = pi * (coef[:, None] - dH[:, None] * log_pi)                # (B, K)
        dz[np.arange(B), actions] += dlogp                              # + dlogp * 1[j = a]
        if dkl is not None:
            dz -= np.broadcast_to(np.asarray(dkl, dtype=pi.dtype), (B,))[:, None] * p_old
        return dz / tau


@jit
def categorical_sample_kernel(logits, u, tau, actions, logp):
    """``Categorical.sample_with_log_prob_reference`` row by row, in float64 inside.

    With v = z / tau and lse = log sum_k exp(v_k): pi_k = exp(v_k - lse), C_k = pi_0 + ... + pi_k,
    a = #{k : C_k <= u C_{K-1}} (capped at K - 1), logp = v_a - lse.
    Shapes: logits (B, K), u (B,) uniforms in [0, 1) -> actions (B,) int64, logp (B,) (returned).
    """
    B, K = logits.shape
    for b in range(B):
        m = -np.inf
        for k in range(K):
            m = max(m, np.float64(logits[b, k]) / tau)                       # max_k v_k
        total = 0.0
        for k in range(K):
            total += math.exp(np.float64(logits[b, k]) / tau - m)
        lse = m + math.log(total)                                          # log sum_k exp(v_k)
        cdf_end = 0.0
        for k in range(K):
            cdf_end += math.exp(np.float64(logits[b, k]) / tau - lse)       # C_{K-1}, ~1
        target = u[b] * cdf_end
        a = K - 1
        cdf = 0.0
        for k in range(K):
            cdf += math.exp(np.float64(logits[b, k]) / tau - lse)           # C_k
            if cdf > target:                                               # the first k with C_k > u C_{K-1}
                a = k
                break
        actions[b] = a
        logp[b] = np.float64(logits[b, a]) / tau - lse
    return logp


# --- diagonal Gaussian ------------------------------------------------------------------------------

class GaussianTerms(NamedTuple):
    """Cache of ``DiagGaussian.policy_terms`` for its backward.

    w (B, D) = (a - mu) / sigma for d log pi/d mu = w / sigma and d log pi/d l = w^2 - 1; sigma
    (broadcastable to (B, D)); mean_diff (B, D) = mu^q - mu^old and var_ratio_plus (B, D) =
    (sigma_old^2 + (mu^old - mu^q)^2) / sigma^2 for the KL's derivatives (None without an old policy);
    log_std_shape to sum the broadcast gradient back down.
    """

    w: np.ndarray
    sigma: np.ndarray
    mean_diff: np.ndarray | None
    var_ratio_plus: np.ndarray | None
    log_std_shape: tuple


class DiagGaussian:
    """pi_tau(a | s) = prod_d N(a_d; mu_d, sigma_d^2) with sigma = tau * exp(log_std).

    The temperature scales the standard deviation (not the variance): tau = 2 doubles every sigma_d.
    mean (B, D) comes from the network, log_std (D,) is a state-independent parameter ((B, D) also
    accepted). Stateless; see the module docstring.
    """

    discrete = False

    @staticmethod
    def std(log_std: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """sigma = tau * exp(log_std), same shape as log_std.

        Checked by ``tests/test_distributions.py::test_temperature_limits``.
        """
        return check_temperature(temperature) * np.exp(np.asarray(log_std))

    @staticmethod
    def sample(mean: np.ndarray, log_std: np.ndarray, rng: np.random.Generator,
               temperature: float = 1.0) -> np.ndarray:
        r"""a = mu + sigma * eps, eps ~ N(0, I) drawn from ``rng`` (B * D normals).

        Shapes: mean (B, D), log_std (D,) -> actions (B, D), in mean's dtype.
        Checked by ``tests/test_distributions.py::test_gaussian_sampling_moments`` and
        ``::test_sampling_is_reproducible``.
        """
        mean, log_std = _check_mean_log_std(mean, log_std)
        sigma = DiagGaussian.std(log_std, temperature)
        return (mean + sigma * rng.standard_normal(mean.shape)).astype(mean.dtype, copy=False)

    @staticmethod
    def mode(mean: np.ndarray) -> np.ndarray:
        """The deterministic action: the mean itself (a copy). Shapes: (B, D) -> (B, D).

        Checked by ``tests/test_distributions.py::test_temperature_limits``.
        """
        return np.array(mean, copy=True)

    @staticmethod
    def log_prob(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray,
                 temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(a | s) = sum_d [ -w_d^2 / 2 - log sigma_d - log(2 pi) / 2 ], w = (a - mu) / sigma.

        Shapes: mean (B, D), log_std (D,), actions (B, D) -> (B,).
        Checked by ``tests/test_distributions.py::test_gaussian_log_prob_closed_form`` (D = 1 by hand).
        """
        tau = check_temperature(temperature)
        mean, log_std = _check_mean_log_std(mean, log_std)
        actions = np.asarray(actions)
        _check_same_shape(actions, mean, "actions", "mean")
        log_sigma = log_std + math.log(tau)                            # (D,)
        w = (actions - mean) / np.exp(log_sigma)                       # (B, D)
        return (-0.5 * w * w - log_sigma).sum(axis=1) - 0.5 * mean.shape[1] * LOG_2PI

    @staticmethod
    def log_prob_backward(dlogp: np.ndarray, mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""dmu = dlogp * w / sigma,  dlog_std = sum_b dlogp_b (w_b^2 - 1),  w = (a - mu) / sigma.

        .. math:: \frac{\partial\log\pi}{\partial\mu_d} = \frac{a_d - \mu_d}{\sigma_d^2},\qquad
                  \frac{\partial\log\pi}{\partial l_d} = \frac{(a_d - \mu_d)^2}{\sigma_d^2} - 1

        Shapes: dlogp (B,), mean (B, D), log_std (D,), actions (B, D) -> (dmean (B, D), dlog_std (D,)).
        Checked by ``tests/test_distributions.py::test_gaussian_gradients``.
        """
        mean, log_std = _check_mean_log_std(mean, log_std)
        actions = np.asarray(actions)
        _check_same_shape(actions, mean, "actions", "mean")
        sigma = DiagGaussian.std(log_std, temperature)                 # (D,)
        w = (actions - mean) / sigma                                   # (B, D)
        dlogp = np.asarray(dlogp)[:, None]
        return dlogp * w / sigma, sum_to_shape(dlogp * (w * w - 1.0), log_std.shape)

    @staticmethod
    def entropy(mean: np.ndarray, log_std: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""H = sum_d [ log sigma_d + (1 + log 2 pi) / 2 ], one value per state (mean sets only B).

        Shapes: mean (B, D), log_std (D,) -> (B,).
        Checked by ``tests/test_distributions.py::test_gaussian_entropy_matches_monte_carlo``.
        """
        tau = check_temperature(temperature)
        mean, log_std = _check_mean_log_std(mean, log_std)
        per_dim = np.broadcast_to(log_std + (math.log(tau) + 0.5 * (1.0 + LOG_2PI)), mean.shape)
        return per_dim.sum(axis=1)

    @staticmethod
    def entropy_backward(dH: np.ndarray, mean: np.ndarray, log_std: np.ndarray,
                         temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""dmu = 0,  dlog_std_d = sum_b dH_b  (dH/dl_d = 1; the entropy does not depend on the mean).

        Shapes: dH (B,), mean (B, D), log_std (D,) -> (dmean (B, D) zeros, dlog_std (D,)).
        Checked by ``tests/test_distributions.py::test_gaussian_gradients``.
        """
        check_temperature(temperature)
        mean, log_std = _check_mean_log_std(mean, log_std)
        dlog_std = sum_to_shape(np.broadcast_to(np.asarray(dH)[:, None], mean.shape), log_std.shape)
        return np.zeros_like(mean), np.array(dlog_std, dtype=log_std.dtype)

    @staticmethod
    def kl(mean_p: np.ndarray, log_std_p: np.ndarray, mean_q: np.ndarray, log_std_q: np.ndarray,
           temperature: float = 1.0) -> np.ndarray:
        r"""KL(p || q) = sum_d [ l^q_d - l^p_d + (sigma_p^2 + (mu_p - mu_q)^2) / (2 sigma_q^2) - 1/2 ].

        Both distributions tempered by the same tau (sigma = tau exp(l)). Analytic, state by state.
        Shapes: means (B, D), log_stds (D,) -> (B,), every entry >= 0.
        Checked against Monte Carlo by ``tests/test_distributions.py::test_gaussian_kl_matches_monte_carlo``.
        """
        tau = check_temperature(temperature)
        mean_p, log_std_p = _check_mean_log_std(mean_p, log_std_p, "_p")
        mean_q, log_std_q = _check_mean_log_std(mean_q, log_std_q, "_q")
        _check_same_shape(mean_p, mean_q, "mean_p", "mean_q")
        var_ratio = np.exp(2.0 * (log_std_p - log_std_q))                        # sigma_p^2 / sigma_q^2
        dist2 = (mean_p - mean_q) ** 2 / (tau * tau * np.exp(2.0 * log_std_q))    # (mu_p - mu_q)^2 / sigma_q^2
        return (log_std_q - log_std_p + 0.5 * (var_ratio + dist2) - 0.5).sum(axis=1)

    @staticmethod
    def kl_backward(dkl: np.ndarray, mean_p: np.ndarray, log_std_p: np.ndarray, mean_q: np.ndarray,
                    log_std_q: np.ndarray, temperature: float = 1.0):
        r"""Gradients of KL(p || q) w.r.t. both distributions' parameters.

        .. math:: \partial_{\mu^q} KL = \frac{\mu^q - \mu^p}{\sigma_q^2} = -\partial_{\mu^p} KL,\quad
                  \partial_{l^q} KL = 1 - \frac{\sigma_p^2 + (\mu^p - \mu^q)^2}{\sigma_q^2},\quad
                  \partial_{l^p} KL = \frac{\sigma_p^2}{\sigma_q^2} - 1

        Shapes: dkl (B,), means (B, D), log_stds (D,)
        -> (dmean_p (B, D), dlog_std_p (D,), dmean_q (B, D), dlog_std_q (D,)).
        Checked by ``tests/test_distributions.py::test_gaussian_gradients``.
        """
        tau = check_temperature(temperature)
        mean_p, log_std_p = _check_mean_log_std(mean_p, log_std_p, "_p")
        mean_q, log_std_q = _check_mean_log_std(mean_q, log_std_q, "_q")
        _check_same_shape(mean_p, mean_q, "mean_p", "mean_q")
        var_q = tau * tau * np.exp(2.0 * log_std_q)                    # sigma_q^2
        var_ratio = np.exp(2.0 * (log_std_p - log_std_q))              # sigma_p^2 / sigma_q^2
        diff = mean_q - mean_p                                         # (B, D)
        dkl = np.asarray(dkl)[:, None]
        dmean_q = dkl * diff / var_q
        dlog_std_q = dkl * (1.0 - var_ratio - diff * diff / var_q)
        dlog_std_p = dkl * (var_ratio - 1.0)
        return (-dmean_q, sum_to_shape(np.broadcast_to(dlog_std_p, mean_p.shape), log_std_p.shape),
                dmean_q, sum_to_shape(dlog_std_q, log_std_q.shape))

    @staticmethod
    def policy_terms(mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray, temperature: float = 1.0,
                     mean_old: np.ndarray | None = None, log_std_old: np.ndarray | None = None):
        r"""log pi_tau(a | s), H and KL(pi_old,tau || pi_tau) in one pass (KL None without an old policy).

        The same formulas as ``log_prob``, ``entropy`` and ``kl`` (new policy as q).
        Shapes: mean (B, D), log_std (D,), actions (B, D), mean_old (B, D), log_std_old (D,)
        -> (logp (B,), entropy (B,), kl (B,) or None, GaussianTerms).
        Checked by ``tests/test_distributions.py::test_policy_terms_match_the_separate_functions``.
        """
        tau = check_temperature(temperature)
        mean, log_std = _check_mean_log_std(mean, log_std)
        actions = np.asarray(actions)
        _check_same_shape(actions, mean, "actions", "mean")
        B, D = mean.shape
        log_sigma = log_std + math.log(tau)                            # (D,)
        sigma = np.exp(log_sigma)
        w = (actions - mean) / sigma                                   # (B, D)
        sum_log_sigma = np.broadcast_to(log_sigma, mean.shape).sum(axis=1)   # (B,)
        logp = -0.5 * (w * w).sum(axis=1) - sum_log_sigma - 0.5 * D * LOG_2PI
        entropy = sum_log_sigma + 0.5 * D * (1.0 + LOG_2PI)
        kl = mean_diff = var_ratio_plus = None
        if mean_old is not None:
            if log_std_old is None:
                raise ValueError("a Gaussian old policy needs log_std_old as well as mean_old")
            mean_old, log_std_old = _check_mean_log_std(mean_old, log_std_old, "_old")
            _check_same_shape(mean_old, mean, "mean_old", "mean")
            mean_diff = mean - mean_old                                # mu^q - mu^p
            var_ratio_plus = np.exp(2.0 * (log_std_old - log_std)) + (mean_diff / sigma) ** 2
            kl = (log_std - log_std_old + 0.5 * var_ratio_plus - 0.5).sum(axis=1)
        return logp, entropy, kl, GaussianTerms(w, sigma, mean_diff, var_ratio_plus, log_std.shape)

    @staticmethod
    def policy_terms_backward(dlogp: np.ndarray, dentropy: np.ndarray, dkl: np.ndarray | None,
                              cache: GaussianTerms) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradient w.r.t. (mean, log_std) of sum_b (dlogp_b log pi_b + dentropy_b H_b + dkl_b KL_b).

        .. math:: d\mu = dlogp\,\frac{w}{\sigma} + dkl\,\frac{\mu - \mu^{old}}{\sigma^2},\qquad
                  dl = \sum_b \Big[dlogp\,(w^2 - 1) + dH + dkl\,\Big(1 - \frac{\sigma_{old}^2 +
                  (\mu^{old} - \mu)^2}{\sigma^2}\Big)\Big]

        Any upstream gradient may be a scalar; dkl may be None.
        Shapes: dlogp, dentropy, dkl (B,) or scalars -> (dmean (B, D), dlog_std (D,)).
        Checked by ``tests/test_distributions.py::test_policy_terms_match_the_separate_functions`` and
        by the chained ``ppo_loss`` checks of ``ppo-np gradcheck``.
        """
        w, sigma, mean_diff, var_ratio_plus, log_std_shape = cache
        B = w.shape[0]
        dlogp = np.broadcast_to(np.asarray(dlogp, dtype=w.dtype), (B,))[:, None]     # (B, 1)
        dH = np.broadcast_to(np.asarray(dentropy, dtype=w.dtype), (B,))[:, None]
        dmean = dlogp * w / sigma                                                      # (B, D)
        dl = dlogp * (w * w - 1.0) + dH                                                # (B, D)
        if dkl is not None:
            if mean_diff is None:
                raise ValueError("dkl was given but policy_terms was called without an old policy")
            dkl = np.broadcast_to(np.asarray(dkl, dtype=w.dtype), (B,))[:, None]
            dmean = dmean + dkl * mean_diff / (sigma * sigma)
            dl = dl + dkl * (1.0 - var_ratio_plus)
        return dmean, sum_to_shape(dl, log_std_shape)
