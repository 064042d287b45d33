r"""The Bernoulli policy head: n independent binary actions (gymnasium's MultiBinary), p = sigmoid(z / tau).

The network outputs one logit z_d per action dimension; they are the distribution's parameters y = z
(``dist_dim = net_dim = n``; no parameters of its own). With u = z / tau and softplus(u) = log(1 + e^u),

    pi_tau(a | s) = prod_d p_d^{a_d} (1 - p_d)^{1 - a_d},   p_d = sigmoid(u_d),
    log p_d = u_d - softplus(u_d),   log(1 - p_d) = -softplus(u_d),
    log pi_tau(a | s) = sum_d [ a_d u_d - softplus(u_d) ],

finite for any finite u (softplus(u) = max(u, 0) + log1p(exp(-|u|))). The deterministic action is
1[z_d > 0], for every tau.

* log-probability: d log pi / d z_d = (a_d - p_d) / tau.
* entropy H = sum_d [ softplus(u_d) - u_d p_d ], in [0, n log 2] (n log 2 at u = 0);
      dH/du_d = p_d - p_d - u_d p_d (1 - p_d),   so   dH/dz_d = -u_d p_d (1 - p_d) / tau.
* KL(p || q) = sum_d [ p_d (u^p_d - u^q_d) - softplus(u^p_d) + softplus(u^q_d) ]  (>= 0, 0 iff p = q),
      dKL/dz^q_d = (q_d - p_d) / tau,      dKL/dz^p_d = p_d (1 - p_d)(u^p_d - u^q_d) / tau.
* Fisher metric (TRPO): d(q_d - p_d)/dz^q_d / tau = q_d (1 - q_d) / tau^2, no cross terms:
      M = diag(p (1 - p)) / tau^2   at q = p.

Sampling: one uniform U_d in [0, 1) per dimension, a_d = 1[U_d < p_d], so P(a_d = 1) = p_d.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from ppo_np.heads.base import ACT_STEPS, LOSS_STEPS, ActRows, PolicyHead, check_rows, check_same_shape, check_size, \
    check_temperature
from ppo_np.jit import jit
from ppo_np.mlp import infer_kernel
from ppo_np.surrogate import NO_SUMS, add_sample, advantage_scale, surrogate_sample


def softplus(u: np.ndarray) -> np.ndarray:
    """log(1 + e^u), computed as max(u, 0) + log1p(exp(-|u|)) so that no exponent is positive."""
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


class Bernoulli(PolicyHead):
    """n independent Bernoullis, p = sigmoid(z / tau); y = z, the logits (B, n). See the module docstring."""

    name = "bernoulli"
    space_name = "a 1-D MultiBinary"
    continuous = False     # which generic preset suits it (``config.preset_for``)

    def __init__(self, n: int):
        self.net_dim = self.dist_dim = check_size("n", n)
        self.action_shape = (self.net_dim,)

    @classmethod
    def for_space(cls, space) -> "Bernoulli | None":
        """The head for a 1-D gymnasium MultiBinary action space, or None for any other space."""
        if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
            return cls(space.shape[0])
        return None

    # --- sampling ------------------------------------------------------------------------------------

    def _u(self, y: np.ndarray, temperature: float, name: str = "y") -> tuple[np.ndarray, float]:
        tau = check_temperature(temperature)
        return check_rows(y, self.dist_dim, name) / tau, tau

    def probs(self, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """p = sigmoid(z / tau) = exp(-softplus(-u)). Shapes: (B, n) -> (B, n)."""
        u, _ = self._u(y, temperature)
        return np.exp(-softplus(-u))

    def noise(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """Uniforms in [0, 1), (B, n): the draws of ``sample`` and of the act kernel."""
        return rng.random((B, self.net_dim))

    def sample(self, y: np.ndarray, noise: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """a_d = 1[U_d < p_d], U = ``noise``. Shapes: (B, n), (B, n) -> (B, n) int64.

        Checked by ``tests/test_heads.py::test_bernoulli_sampling_frequencies``.
        """
        y = check_rows(y, self.dist_dim).astype(np.float64)                  # sampled in float64, as the act kernel
        return (np.asarray(noise) < self.probs(y, temperature)).astype(np.int64)

    def mode(self, y: np.ndarray) -> np.ndarray:
        """The deterministic action 1[z_d > 0] (the same for every tau). Shapes: (B, n) -> (B, n) int64."""
        return (check_rows(y, self.dist_dim) > 0).astype(np.int64)

    @staticmethod
    def env_actions(actions: np.ndarray) -> np.ndarray:
        """The actions as MultiBinary holds them, int8."""
        return np.asarray(actions).astype(np.int8)

    # --- log-probability, entropy, KL and their gradients --------------------------------------------

    def _actions(self, actions, y: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        check_same_shape(actions, y, "actions", "y")
        if actions.size and not np.all((actions == 0) | (actions == 1)):
            raise ValueError("binary actions must be 0 or 1")
        return actions

    def log_prob(self, y: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(a | s) = sum_d [ a_d u_d - softplus(u_d) ], u = z / tau. Shapes: (B, n), (B, n) -> (B,).

        ``log_bernoulli_row`` is its compiled twin.
        Checked by ``tests/test_heads.py::test_bernoulli_log_prob_closed_form``.
        """
        u, _ = self._u(y, temperature)
        return (self._actions(actions, u) * u - softplus(u)).sum(axis=1)

    def log_prob_backward(self, dlogp: np.ndarray, y: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> np.ndarray:
        r"""dz_d = dlogp (a_d - p_d) / tau.

        .. math:: \frac{\partial \log\pi_\tau(a|s)}{\partial z_d} = \frac{a_d - p_d}{\tau}

        Shapes: dlogp (B,), y (B, n), actions (B, n) -> dy (B, n).
        Checked by ``tests/test_heads.py::test_bernoulli_gradients``.
        """
        u, tau = self._u(y, temperature)
        p = np.exp(-softplus(-u))
        return np.asarray(dlogp)[:, None] * (self._actions(actions, u) - p) / tau

    def entropy(self, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""H = sum_d [ softplus(u_d) - u_d p_d ], in [0, n log 2]. Shapes: (B, n) -> (B,).

        Checked by ``tests/test_heads.py::test_bernoulli_entropy_bounds``.
        """
        u, _ = self._u(y, temperature)
        return (softplus(u) - u * np.exp(-softplus(-u))).sum(axis=1)

    def entropy_backward(self, dH: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""dz_d = -dH u_d p_d (1 - p_d) / tau.

        .. math:: \frac{\partial H}{\partial z_d} = -\frac{u_d\,p_d(1 - p_d)}{\tau}

        Shapes: dH (B,), y (B, n) -> dy (B, n). Checked by ``tests/test_heads.py::test_bernoulli_gradients``.
        """
        u, tau = self._u(y, temperature)
        p = np.exp(-softplus(-u))
        return -np.asarray(dH)[:, None] * u * p * (1.0 - p) / tau

    def kl(self, y_p: np.ndarray, y_q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""KL(p || q) = sum_d [ p_d (u^p_d - u^q_d) - softplus(u^p_d) + softplus(u^q_d) ]. (B, n), (B, n) -> (B,).

        Checked by ``tests/test_heads.py::test_kl_laws``.
        """
        up, _ = self._u(y_p, temperature, "y_p")
        uq, _ = self._u(y_q, temperature, "y_q")
        return (np.exp(-softplus(-up)) * (up - uq) - softplus(up) + softplus(uq)).sum(axis=1)

    def kl_backward(self, dkl: np.ndarray, y_p: np.ndarray, y_q: np.ndarray,
                    temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""dz^p = dkl p (1 - p)(u^p - u^q) / tau,   dz^q = dkl (q - p) / tau.

        .. math:: \frac{\partial KL}{\partial z^p_d} = \frac{p_d(1 - p_d)(u^p_d - u^q_d)}{\tau},\qquad
                  \frac{\partial KL}{\partial z^q_d} = \frac{q_d - p_d}{\tau}

        Shapes: dkl (B,), y_p, y_q (B, n) -> (dy_p, dy_q), each (B, n).
        Checked by ``tests/test_heads.py::test_bernoulli_gradients``.
        """
        up, tau = self._u(y_p, temperature, "y_p")
        uq, _ = self._u(y_q, temperature, "y_q")
        p, q = np.exp(-softplus(-up)), np.exp(-softplus(-uq))
        dkl = np.asarray(dkl)[:, None]
        return dkl * p * (1.0 - p) * (up - uq) / tau, dkl * (q - p) / tau

    def fisher_metric(self, y: np.ndarray, dy: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""M dz with M = diag(p (1 - p)) / tau^2, the Hessian of KL(p || q) in z^q at q = p.

        Shapes: y, dy (B, n) -> (B, n). Checked through ``trpo.fisher_vector_product`` by
        ``ppo-np gradcheck`` (rows ``fisher-*``).
        """
        u, tau = self._u(y, temperature)
        p = np.exp(-softplus(-u))
        return p * (1.0 - p) * dy / (tau * tau)

    def target_entropy(self) -> float:
        """Half the maximum entropy, 0.5 n log 2: the auto-tuned entropy coefficient's default target."""
        return 0.5 * self.net_dim * math.log(2.0)

    # --- compiled -------------------------------------------------------------------------------------

    def act(self, networks: tuple, params: dict, obs: np.ndarray, rng: np.random.Generator, temperature: float,
            rows: ActRows) -> np.ndarray:
        """``Actor.act(obs, rng, tau)`` and ``Critic.__call__(obs)`` into ``rows`` (``act_kernel``); returns
        the actions as the env takes them (int8)."""
        act_kernel(obs, networks, self.noise(rng, obs.shape[0]), temperature, rows)
        return self.env_actions(rows[1])

    def env_action_buffer(self, N: int) -> np.ndarray:
        """An array for N envs' actions as MultiBinary holds them: (N, n) int8."""
        return np.empty((N, self.net_dim), np.int8)

    def compiled_policy(self, params: dict) -> "BernoulliPolicy":
        return BernoulliPolicy(self.net_dim)

    def loss_key(self, params: dict, grads: dict, actions: np.ndarray, B: int) -> "BernoulliPolicy":
        """The key to ``base.loss_step`` (``loss_kernel``); a ValueError for an action not 0 or 1."""
        if actions.shape != (B, self.net_dim) or not np.all((actions == 0) | (actions == 1)):
            raise ValueError(f"actions must have shape {(B, self.net_dim)} and hold 0 or 1")
        return BernoulliPolicy(self.net_dim)


# --- the row-level compiled helper, and the kernels built from it ------------------------------------

@jit
def log_bernoulli_row(u):
    """(p, log p, log(1 - p)) of one logit u = z / tau, in float64, as the module docstring's softplus form."""
    softplus_u = max(u, 0.0) + math.log1p(math.exp(-abs(u)))
    log_1mp = -softplus_u
    log_p = u - softplus_u
    return math.exp(log_p), log_p, log_1mp


@jit
def act_kernel(obs, networks, noise, tau, rows):
    """``Bernoulli.act``: logits, a_d = 1[U_d < p_d] with U = ``noise``, log pi_tau(a | s) and V(s), into
    ``rows`` (an ``ActRows`` of N rows).

    Checked against ``Actor.act`` and ``Critic.__call__`` by
    ``tests/test_rollout.py::test_later_heads_act_kernels_match_actor_act_and_critic``.
    """
    actor_network, critic_network = networks
    logits, actions, logp, values = rows
    infer_kernel(obs, actor_network, logits)
    for r in range(logits.shape[0]):
        total = 0.0
        for d in range(logits.shape[1]):
            p, log_p, log_1mp = log_bernoulli_row(np.float64(logits[r, d]) / tau)
            a = 1 if noise[r, d] < p else 0
            actions[r, d] = a
            total += log_p if a == 1 else log_1mp
        logp[r] = total
    infer_kernel(obs, critic_network, values)



class BernoulliPolicy(NamedTuple):
    """A Bernoulli head to the compiled rollout (``base.act_step``): its number of binary actions."""

    n_actions: int


@jit
def act_step(policy, obs, networks, noise, tau, rows, env_actions):
    """``Bernoulli.act`` as ``base.act_step`` calls it: ``act_kernel``, then the actions to ``env_actions`` (int8)."""
    act_kernel(obs, networks, noise, tau, rows)
    actions = rows[1]
    for r in range(actions.shape[0]):
        for d in range(actions.shape[1]):
            env_actions[r, d] = actions[r, d]


ACT_STEPS[BernoulliPolicy] = act_step


@jit
def loss_step(key, layer, samples, coefs):
    """``loss_kernel`` as ``base.loss_step`` calls it."""
    return loss_kernel(layer, samples, coefs)


LOSS_STEPS[BernoulliPolicy] = loss_step

@jit
def loss_kernel(layer, samples, coefs):
    r"""The actor's side of ``losses.ppo_loss`` for p = sigmoid(z / tau), z = h W + b, from layer.z = h W.

    Row by row: + b, log pi, H and KL(pi_old || pi) from ``log_bernoulli_row``, the surrogate
    (``surrogate_sample``), then the sum of the head's backwards

    .. math:: \tau\,dz_d = dlogp\,(a_d - p_d) - dH\,u_d p_d (1 - p_d) + dkl\,(p_d - p^{old}_d)

    with dlogp from the surrogate, dH = -c_e / B and dkl = beta / B (penalty only); dz overwrites z, whose
    layer's backward is ``fused.backward``'s. Returns the minibatch's ``PolicySums`` (plain).
    """
    z, b = layer
    actions, logp_old, adv, logits_old, has_old = samples
    penalty, clip_eps, beta, ent_coef, tau, normalize_advantages = coefs
    B, n = z.shape
    adv_mean, adv_div = advantage_scale(adv, normalize_advantages)
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    u, p, p_old = np.empty(n), np.empty(n), np.empty(n)
    sums = NO_SUMS                                              # a PolicySums, plain
    for t in range(B):
        logp = 0.0
        H = 0.0
        kl = 0.0
        for d in range(n):
            u[d] = (z[t, d] + b[d]) / tau
            p[d], log_p, log_1mp = log_bernoulli_row(u[d])
            logp += log_p if actions[t, d] == 1 else log_1mp
            H -= p[d] * log_p + (1.0 - p[d]) * log_1mp
            if has_old:
                p_old[d], log_p_old, log_1mp_old = log_bernoulli_row(logits_old[t, d] / tau)
                kl += p_old[d] * (log_p_old - log_p) + (1.0 - p_old[d]) * (log_1mp_old - log_1mp)
        A = (adv[t] - adv_mean) / adv_div
        s = surrogate_sample(logp, logp_old[t], A, B, penalty, clip_eps)
        sums = add_sample(sums, s, kl, H)
        for d in range(n):
            g = s.dlogp * (actions[t, d] - p[d]) - dH * u[d] * p[d] * (1.0 - p[d])
            if penalty:
                g += dkl * (p[d] - p_old[d])
            z[t, d] = g / tau
    return sums
