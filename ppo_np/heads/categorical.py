r"""The categorical policy head: pi_tau(. | s) = softmax(z / tau) over K discrete actions.

The network outputs the logits z (B, K); they are the distribution's parameters y = z as they are
(``dist_dim = net_dim = K``; the head has no parameters of its own). With u = z / tau,

    pi_tau(k | s) = softmax(u)_k = exp(u_k) / sum_j exp(u_j),
    log pi_tau(k | s) = u_k - m - log sum_j exp(u_j - m),     m = max_j u_j   (log-sum-exp)

Subtracting m changes nothing mathematically and keeps every exponent <= 0, so logits of size 1e3 (or a
tiny tau) cannot overflow. As tau -> infinity, pi_tau -> uniform; as tau -> 0+, pi_tau puts all its mass
on argmax_k z_k (when that is unique). The deterministic action is argmax_k z_k, for every tau.

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
* Fisher metric (TRPO): differentiating dKL/dz^q_j = (q_j - p_j) / tau once more, with
  dq_j/dz^q_k = q_j (1[j=k] - q_k) / tau, at q = p:
      M = (diag(p) - p p^T) / tau^2,        M dz = p * (dz - <p, dz>) / tau^2.
  M is PSD (a covariance of one-hot vectors) with the constant direction in its null space.

Sampling by inverse CDF, one uniform U in [0, 1) per row: with C_k = sum_{j <= k} pi_j, the action is
a = #{k : C_k <= U C_K} = min{k : U C_K < C_k}, so P(a = k) = (C_k - C_{k-1}) / C_K = pi_k. Scaling U by
C_K (1 up to rounding) means a rounding deficit in the cumulative sum never selects a category of
probability zero.

References: Schulman et al. (2017), "Proximal Policy Optimization Algorithms"; Hinton, Vinyals, Dean
(2015), "Distilling the Knowledge in a Neural Network" (softmax temperature).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from ppo_np.heads.base import ACT_STEPS, LOSS_STEPS, ActRows, PolicyHead, check_same_shape, check_size, check_temperature
from ppo_np.jit import jit
from ppo_np.mlp import infer_kernel
from ppo_np.surrogate import NO_SUMS, add_sample, advantage_scale, surrogate_sample


class Categorical(PolicyHead):
    """pi_tau(a | s) = softmax(z / tau) over K actions; y = z, the logits (B, K). See the module docstring."""

    name = "categorical"
    space_name = "Discrete (start 0)"
    continuous = False     # which generic preset suits it (``config.preset_for``)

    def __init__(self, n_actions: int):
        self.net_dim = self.dist_dim = check_size("n_actions", n_actions)
        self.action_shape = ()

    @classmethod
    def for_space(cls, space) -> "Categorical | None":
        """The head for a gymnasium action space, or None unless it is a Discrete one starting at 0."""
        return cls(int(space.n)) if isinstance(space, gym.spaces.Discrete) and space.start == 0 else None

    # --- sampling ------------------------------------------------------------------------------------

    @staticmethod
    def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(k | s) = u_k - m - log sum_j exp(u_j - m), u = z / tau, m = max_j u_j.

        Shapes: logits (B, K) -> (B, K). Finite for any finite u (logits ~1e3 included).
        ``log_softmax_row`` is its compiled twin. Checked by
        ``tests/test_heads.py::test_probabilities_sum_to_one_and_are_stable``.
        """
        tau = check_temperature(temperature)
        u = _check_logits(logits) / tau                            # (B, K)
        u = u - u.max(axis=1, keepdims=True)                       # u - m <= 0
        return u - np.log(np.exp(u).sum(axis=1, keepdims=True))    # (B, K)

    @staticmethod
    def probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """pi_tau(. | s) = exp(log_softmax(z / tau)), rows summing to 1. Shapes: (B, K) -> (B, K)."""
        return np.exp(Categorical.log_softmax(logits, temperature))

    @staticmethod
    def noise(rng: np.random.Generator, B: int) -> np.ndarray:
        """One uniform in [0, 1) per row (B,): the draws of ``sample`` and of the act kernel."""
        return rng.random(B)

    @staticmethod
    def sample(logits: np.ndarray, noise: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""a_b = #{k : C_{bk} <= U_b C_{bK}}, C the row-wise cumulative sum of pi_tau, U = ``noise``.

        Shapes: logits (B, K), noise (B,) -> actions (B,) int64. ``sample_row`` is its compiled twin.
        Checked by ``tests/test_heads.py::test_categorical_sampling_frequencies``.
        """
        logits = _check_logits(logits).astype(np.float64)                     # sampled in float64, as sample_row
        cdf = np.cumsum(Categorical.probs(logits, temperature), axis=1)      # (B, K), C_{bk}
        u = np.asarray(noise) * cdf[:, -1]                                    # (B,), U_b C_{bK}
        a = (cdf <= u[:, None]).sum(axis=1)                                   # (B,), min{k : u < C_k}
        return np.minimum(a, cdf.shape[1] - 1).astype(np.int64)               # guard u == C_K after rounding

    @staticmethod
    def mode(logits: np.ndarray) -> np.ndarray:
        """The deterministic action argmax_k z_k (the same for every tau). Shapes: (B, K) -> (B,) int64."""
        return np.argmax(_check_logits(logits), axis=1).astype(np.int64)

    @staticmethod
    def env_actions(actions: np.ndarray) -> np.ndarray:
        """The env takes the sampled actions as they are."""
        return actions

    # --- log-probability, entropy, KL and their gradients --------------------------------------------

    @staticmethod
    def log_prob(logits: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(a_b | s_b) = (log_softmax(z_b / tau))_{a_b}. Shapes: (B, K), (B,) -> (B,).

        Checked by ``tests/test_heads.py::test_large_logits_closed_form``.
        """
        logits = _check_logits(logits)
        actions = _check_actions(actions, logits)
        return Categorical.log_softmax(logits, temperature)[np.arange(len(actions)), actions]

    @staticmethod
    def log_prob_backward(dlogp: np.ndarray, logits: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> np.ndarray:
        r"""dz = dlogp * (onehot(a) - pi_tau) / tau.

        .. math:: \frac{\partial \log\pi_\tau(a|s)}{\partial z_j} = \frac{1[j=a] - \pi_\tau(j|s)}{\tau}

        Shapes: dlogp (B,), logits (B, K), actions (B,) -> dlogits (B, K); each row sums to 0.
        Checked by ``tests/test_heads.py::test_categorical_gradients`` and
        ``::test_log_prob_gradient_sums_to_zero``.
        """
        tau = check_temperature(temperature)
        logits = _check_logits(logits)
        actions = _check_actions(actions, logits)
        dlogp = np.asarray(dlogp)
        pi = Categorical.probs(logits, tau)                            # (B, K)
        dz = -dlogp[:, None] * pi                                      # -dlogp * pi_j
        dz[np.arange(len(actions)), actions] += dlogp                  # + dlogp * 1[j = a]
        return dz / tau

    @staticmethod
    def entropy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""H(pi_tau(. | s)) = -sum_k pi_k log pi_k, in [0, log K]. Shapes: (B, K) -> (B,).

        Checked by ``tests/test_heads.py::test_entropy_at_most_log_k``.
        """
        log_pi = Categorical.log_softmax(logits, temperature)
        return -(np.exp(log_pi) * log_pi).sum(axis=1)

    @staticmethod
    def entropy_backward(dH: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""dz = -dH * pi (log pi + H) / tau.

        .. math:: \frac{\partial H}{\partial z_j} = -\frac{\pi_j(\log\pi_j + H)}{\tau}

        Shapes: dH (B,), logits (B, K) -> dlogits (B, K).
        Checked by ``tests/test_heads.py::test_categorical_gradients``.
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
        Checked by ``tests/test_heads.py::test_kl_laws``.
        """
        logits_p, logits_q = _check_logits(logits_p, "logits_p"), _check_logits(logits_q, "logits_q")
        check_same_shape(logits_p, logits_q, "logits_p", "logits_q")
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
        Checked by ``tests/test_heads.py::test_categorical_gradients``.
        """
        tau = check_temperature(temperature)
        logits_p, logits_q = _check_logits(logits_p, "logits_p"), _check_logits(logits_q, "logits_q")
        check_same_shape(logits_p, logits_q, "logits_p", "logits_q")
        log_p = Categorical.log_softmax(logits_p, tau)                 # (B, K)
        log_q = Categorical.log_softmax(logits_q, tau)
        p, q = np.exp(log_p), np.exp(log_q)
        log_ratio = log_p - log_q
        kl = (p * log_ratio).sum(axis=1, keepdims=True)                # (B, 1)
        dkl = np.asarray(dkl)[:, None]
        return dkl * p * (log_ratio - kl) / tau, dkl * (q - p) / tau

    @staticmethod
    def fisher_metric(logits: np.ndarray, dz: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""M dz with M = (diag(p) - p p^T) / tau^2, p = softmax(z / tau): the Hessian of KL(p || q) in z^q
        at q = p, row by row.

        .. math:: (M\,dz)_j = \frac{p_j\,(dz_j - \sum_k p_k dz_k)}{\tau^2}

        Shapes: logits, dz (B, K) -> (B, K). Checked through ``trpo.fisher_vector_product`` by
        ``ppo-np gradcheck`` (rows ``fisher-*``).
        """
        tau = check_temperature(temperature)
        p = Categorical.probs(logits, tau)
        return p * (dz - (p * dz).sum(axis=1, keepdims=True)) / (tau * tau)

    def target_entropy(self) -> float:
        """Half the maximum entropy, 0.5 log K: the auto-tuned entropy coefficient's default target."""
        return 0.5 * math.log(self.net_dim)

    # --- compiled -------------------------------------------------------------------------------------

    def act(self, networks: tuple, params: dict, obs: np.ndarray, rng: np.random.Generator, temperature: float,
            rows: ActRows) -> np.ndarray:
        """``Actor.act(obs, rng, tau)`` and ``Critic.__call__(obs)`` into ``rows`` (``act_kernel``), with
        networks = (actor, critic) ``mlp.Network``s; returns what the env is given (the actions row)."""
        act_kernel(obs, networks, self.noise(rng, obs.shape[0]), temperature, rows)
        return rows[1]

    def compiled_policy(self, params: dict) -> "CategoricalPolicy":
        return CategoricalPolicy(self.net_dim)

    def loss_key(self, params: dict, grads: dict, actions: np.ndarray, B: int) -> "CategoricalPolicy":
        """The key to ``base.loss_step`` (``loss_kernel``); a ValueError for an action outside [0, K)."""
        if actions.shape != (B,) or not actions_in_range(actions, self.net_dim):
            raise ValueError(f"actions must be {B} integers in [0, {self.net_dim})")
        return CategoricalPolicy(self.net_dim)


def _check_logits(logits: np.ndarray, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{name} must have shape (B, K) with K >= 1, got {logits.shape}")
    return logits if logits.dtype.kind == "f" else logits.astype(np.float64)


def _check_actions(actions, logits: np.ndarray) -> np.ndarray:
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


# --- the row-level compiled helpers, and the kernels built from them ---------------------------------

@jit
def log_softmax_row(u, p):
    """u <- ``Categorical.log_softmax`` of the row u in place (u already divided by tau), p <- its exp;
    returns the entropy -sum_k p_k log p_k. One exp per entry."""
    m = -np.inf
    for k in range(u.shape[0]):
        m = max(m, u[k])
    total = 0.0
    for k in range(u.shape[0]):
        p[k] = math.exp(u[k] - m)
        total += p[k]
    log_total = math.log(total)
    entropy = 0.0
    for k in range(u.shape[0]):
        u[k] -= m + log_total
        p[k] /= total
        entropy -= p[k] * u[k]
    return entropy


@jit
def sample_row(log_pi, u):
    """``Categorical.sample`` for one row of log-probabilities and one uniform u: the first k with
    C_k > u C_{K-1}, C the cumulative sum of exp(log_pi) (capped at K - 1)."""
    K = log_pi.shape[0]
    cdf_end = 0.0
    for k in range(K):
        cdf_end += math.exp(log_pi[k])                                   # C_{K-1}, ~1
    target = u * cdf_end
    cdf = 0.0
    for k in range(K):
        cdf += math.exp(log_pi[k])                                       # C_k
        if cdf > target:
            return k
    return K - 1


@jit
def act_kernel(obs, networks, noise, tau, rows):
    """``Categorical.act``: logits, a ~ pi_tau by ``sample_row`` with the uniforms ``noise``, log pi_tau(a | s)
    (in float64 inside) and V(s), into ``rows`` (an ``ActRows`` of N rows).

    Checked against ``Actor.act`` and ``Critic.__call__`` by
    ``tests/test_rollout.py::test_act_kernels_match_actor_act_and_critic``.
    """
    actor_network, critic_network = networks
    logits, actions, logp, values = rows
    infer_kernel(obs, actor_network, logits)
    K = logits.shape[1]
    log_pi, p = np.empty(K), np.empty(K)
    for n in range(logits.shape[0]):
        for k in range(K):
            log_pi[k] = np.float64(logits[n, k]) / tau               # u = z / tau
        log_softmax_row(log_pi, p)
        a = sample_row(log_pi, noise[n])
        actions[n] = a
        logp[n] = log_pi[a]
    infer_kernel(obs, critic_network, values)


class CategoricalPolicy(NamedTuple):
    """A categorical head to the compiled rollout (``base.act_step``): its number of actions."""

    n_actions: int


@jit
def act_step(policy, obs, networks, noise, tau, rows, env_actions):
    """``Categorical.act`` as ``base.act_step`` calls it: ``act_kernel``, then the actions to ``env_actions``."""
    act_kernel(obs, networks, noise, tau, rows)
    env_actions[:] = rows[1]


ACT_STEPS[CategoricalPolicy] = act_step


@jit
def loss_step(key, layer, samples, coefs):
    """``loss_kernel`` as ``base.loss_step`` calls it."""
    return loss_kernel(layer, samples, coefs)


LOSS_STEPS[CategoricalPolicy] = loss_step


@jit
def actions_in_range(actions, K):
    """Whether every action lies in [0, K)."""
    for t in range(actions.shape[0]):
        if actions[t] < 0 or actions[t] >= K:
            return False
    return True


@jit
def loss_kernel(layer, samples, coefs):
    r"""The actor's side of ``losses.ppo_loss`` for pi = softmax(z / tau), z = h W + b, from layer.z = h W.

    Row by row: + b, log pi, H and KL(pi_old || pi) from one ``log_softmax_row``, the surrogate
    (``surrogate_sample``), then the sum of the head's backwards

    .. math:: \tau\,dz_j = dlogp\,(1[j=a] - \pi_j) - dH\,\pi_j(\log\pi_j + H) + dkl\,(\pi_j - p^{old}_j)

    with dlogp from the surrogate, dH = -c_e / B and dkl = beta / B (penalty only); dz overwrites z, whose
    layer's backward is ``fused.backward``'s. ``layer`` is a ``fused.OutputLayer``, ``samples`` a
    ``PolicySamples``, ``coefs`` a ``fused.KernelCoefs``. Returns the minibatch's ``PolicySums`` (as a plain
    tuple, which ``fused.loss_statistics`` unpacks).
    """
    z, b = layer
    actions, logp_old, adv, logits_old, has_old = samples
    penalty, clip_eps, beta, ent_coef, tau, normalize_advantages = coefs
    B, K = z.shape
    adv_mean, adv_div = advantage_scale(adv, normalize_advantages)
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    log_pi, pi = np.empty(K), np.empty(K)
    log_old, p_old = np.empty(K), np.empty(K)
    sums = NO_SUMS                                              # a PolicySums, plain
    for t in range(B):
        for k in range(K):
            log_pi[k] = (z[t, k] + b[k]) / tau                 # u = z / tau
        H = log_softmax_row(log_pi, pi)
        kl = 0.0
        if has_old:
            for k in range(K):
                log_old[k] = logits_old[t, k] / tau
            log_softmax_row(log_old, p_old)
            for k in range(K):
                kl += p_old[k] * (log_old[k] - log_pi[k])
        A = (adv[t] - adv_mean) / adv_div
        s = surrogate_sample(log_pi[actions[t]], logp_old[t], A, B, penalty, clip_eps)
        sums = add_sample(sums, s, kl, H)
        coef = -s.dlogp - dH * H + dkl
        for k in range(K):
            g = pi[k] * (coef - dH * log_pi[k])
            if k == actions[t]:
                g += s.dlogp
            if penalty:
                g -= dkl * p_old[k]
            z[t, k] = g / tau
    return sums
