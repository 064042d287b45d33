r"""The diagonal Gaussian policy head: pi_tau(a | s) = prod_d N(a_d; mu_d, sigma_d^2), D continuous actions.

The network outputs the means mu (B, D); the log standard deviation l (D,) is a learned,
state-independent parameter of the head ("log_std"). The distribution's parameters at a state are
y = (mu, l) (``dist_dim = 2 D``), so a rollout's rows carry the old policy's l with its means. The
temperature scales the standard deviation (not the variance):

    sigma_d = tau * exp(l_d).

Everything below is summed over the action dimensions d; with w_d = (a_d - mu_d) / sigma_d,

* log pi(a | s) = sum_d [ -w_d^2 / 2 - log sigma_d - log(2 pi) / 2 ],
      d log pi / d mu_d = w_d / sigma_d,
      d log pi / d l_d  = w_d^2 - 1          (d sigma_d / d l_d = sigma_d, so sigma d/dsigma).
* H = sum_d [ log sigma_d + (1 + log 2 pi) / 2 ]  (no mean in it),
      dH/d l_d = 1,   dH/d mu = 0.
* KL(p || q) = sum_d [ l^q_d - l^p_d + (sigma^p_d^2 + (mu^p_d - mu^q_d)^2) / (2 sigma^q_d^2) - 1/2 ],
      dKL/d mu^q_d = (mu^q_d - mu^p_d) / sigma^q_d^2,      dKL/d mu^p_d = -dKL/d mu^q_d,
      dKL/d l^q_d  = 1 - (sigma^p_d^2 + (mu^p_d - mu^q_d)^2) / sigma^q_d^2,
      dKL/d l^p_d  = sigma^p_d^2 / sigma^q_d^2 - 1.
  With the same tau on both sides, tau cancels from l^q - l^p and sigma^p/sigma^q and only divides the
  squared distance of the means: a hotter policy makes the same mean shift cost less KL.
* Fisher metric (TRPO): differentiating the q-side gradients once more at q = p, dKL/d mu^q has
  derivative 1/sigma^2 in mu^q, dKL/d l^q has derivative 2 sigma_p^2/sigma_q^2 = 2 in l^q, and the
  cross derivatives carry a factor mu^q - mu^p that vanishes:
      M = diag(1/sigma^2 per mean coordinate, 2 per log-std coordinate).

Because l is shared by every state, its gradient is the per-state gradient summed over the batch
(``dist_params_backward``); forward, its tangent is the same in every state (``dist_params_tangent``).

The env is given the samples clipped to the action space's bounds (``env_actions``); the unclipped
sample is what is stored and scored, so the log-probabilities are those of the distribution that acted.
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

LOG_2PI = math.log(2.0 * math.pi)


class DiagGaussian(PolicyHead):
    """N(mu, diag(sigma^2)), sigma = tau exp(l); y = (mu, l) per state (B, 2 D). See the module docstring.

    Args: action_dim D; low, high: the action space's bounds (D,) for ``env_actions`` (None: unbounded).
    """

    name = "gaussian"
    space_name = "a 1-D Box"
    continuous = True     # which generic preset suits it (``config.preset_for``)

    def __init__(self, action_dim: int, low=None, high=None):
        self.net_dim = check_size("action_dim", action_dim)
        self.dist_dim = 2 * self.net_dim
        self.action_shape = (self.net_dim,)
        D = self.net_dim
        self.low = np.full(D, -np.inf) if low is None else np.broadcast_to(np.asarray(low), (D,)).copy()
        self.high = np.full(D, np.inf) if high is None else np.broadcast_to(np.asarray(high), (D,)).copy()

    @classmethod
    def for_space(cls, space) -> "DiagGaussian | None":
        """The head for a 1-D gymnasium Box action space, or None for any other space."""
        if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            return cls(space.shape[0], space.low, space.high)
        return None

    @staticmethod
    def action_dtype(dtype) -> np.dtype:
        """Actions are stored in the networks' float dtype."""
        return np.dtype(dtype)

    def split(self, y: np.ndarray, name: str = "y") -> tuple[np.ndarray, np.ndarray]:
        """(mu, l) of y, each (B, D) (views)."""
        y = check_rows(y, self.dist_dim, name)
        return y[:, :self.net_dim], y[:, self.net_dim:]

    # --- the distribution's parameters ---------------------------------------------------------------

    def init_params(self, dtype, log_std_init: float) -> dict:
        """log_std (D,), every entry ``log_std_init`` (sigma = tau exp(log_std))."""
        if not math.isfinite(float(log_std_init)):
            raise ValueError(f"log_std_init must be finite, got {log_std_init!r}")
        return {"log_std": np.full(self.net_dim, log_std_init, dtype=dtype)}

    def dist_params(self, net_out: np.ndarray, params: dict) -> np.ndarray:
        """y = (mu, l) with l the same in every row. Shapes: mu (B, D), log_std (D,) -> (B, 2 D)."""
        return np.concatenate([net_out, np.broadcast_to(params["log_std"], net_out.shape)], axis=1)

    def dist_params_backward(self, dy: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        """dmu = dy's first D columns; dlog_std = the sum over states of its last D (l is in every row)."""
        D = self.net_dim
        log_std = params["log_std"]
        return dy[:, :D], {"log_std": dy[:, D:].sum(axis=0).astype(log_std.dtype, copy=False)}

    def dist_params_tangent(self, dnet_out: np.ndarray, dparams: dict) -> np.ndarray:
        """dy = (dmu, dl) with dl = dparams["log_std"] in every row."""
        return np.concatenate([dnet_out, np.broadcast_to(dparams["log_std"], dnet_out.shape)], axis=1)

    # --- sampling ------------------------------------------------------------------------------------

    def noise(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """Standard normals (B, D): the draws of ``sample`` and of the act kernel."""
        return rng.standard_normal((B, self.net_dim))

    def sample(self, y: np.ndarray, noise: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""a = mu + sigma * noise, sigma = tau exp(l). Shapes: y (B, 2 D), noise (B, D) -> (B, D) in y's dtype.

        Checked by ``tests/test_heads.py::test_gaussian_sampling_moments``.
        """
        mean, log_std = self.split(y)
        sigma = check_temperature(temperature) * np.exp(log_std)
        return (mean + sigma * noise).astype(mean.dtype, copy=False)

    def mode(self, y: np.ndarray) -> np.ndarray:
        """The deterministic action: the mean itself (a copy). Shapes: (B, 2 D) -> (B, D)."""
        return np.array(self.split(y)[0], copy=True)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """The actions clipped to the action space's bounds, as the env is given them."""
        return np.clip(actions, self.low, self.high)

    # --- log-probability, entropy, KL and their gradients --------------------------------------------

    def log_prob(self, y: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""log pi_tau(a | s) = sum_d [ -w_d^2 / 2 - log sigma_d - log(2 pi) / 2 ], w = (a - mu) / sigma.

        Shapes: y (B, 2 D), actions (B, D) -> (B,). ``log_density_row`` is its compiled twin.
        Checked by ``tests/test_heads.py::test_gaussian_log_prob_closed_form`` (D = 1 by hand).
        """
        mean, log_std = self.split(y)
        actions = np.asarray(actions)
        check_same_shape(actions, mean, "actions", "mean")
        log_sigma = log_std + math.log(check_temperature(temperature))   # (B, D)
        w = (actions - mean) / np.exp(log_sigma)                          # (B, D)
        return (-0.5 * w * w - log_sigma).sum(axis=1) - 0.5 * mean.shape[1] * LOG_2PI

    def log_prob_backward(self, dlogp: np.ndarray, y: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> np.ndarray:
        r"""dmu = dlogp * w / sigma,  dl = dlogp (w^2 - 1),  w = (a - mu) / sigma.

        .. math:: \frac{\partial\log\pi}{\partial\mu_d} = \frac{a_d - \mu_d}{\sigma_d^2},\qquad
                  \frac{\partial\log\pi}{\partial l_d} = \frac{(a_d - \mu_d)^2}{\sigma_d^2} - 1

        Shapes: dlogp (B,), y (B, 2 D), actions (B, D) -> dy (B, 2 D).
        Checked by ``tests/test_heads.py::test_gaussian_gradients``.
        """
        mean, log_std = self.split(y)
        actions = np.asarray(actions)
        check_same_shape(actions, mean, "actions", "mean")
        sigma = check_temperature(temperature) * np.exp(log_std)          # (B, D)
        w = (actions - mean) / sigma
        dlogp = np.asarray(dlogp)[:, None]
        return np.concatenate([dlogp * w / sigma, dlogp * (w * w - 1.0)], axis=1)

    def entropy(self, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""H = sum_d [ log sigma_d + (1 + log 2 pi) / 2 ]. Shapes: y (B, 2 D) -> (B,).

        Checked by ``tests/test_heads.py::test_gaussian_entropy_matches_monte_carlo``.
        """
        log_std = self.split(y)[1]
        return (log_std + (math.log(check_temperature(temperature)) + 0.5 * (1.0 + LOG_2PI))).sum(axis=1)

    def entropy_backward(self, dH: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""dmu = 0,  dl_d = dH  (dH/dl_d = 1; the entropy does not depend on the mean).

        Shapes: dH (B,), y (B, 2 D) -> dy (B, 2 D). Checked by ``tests/test_heads.py::test_gaussian_gradients``.
        """
        check_temperature(temperature)
        mean = self.split(y)[0]
        dl = np.broadcast_to(np.asarray(dH, dtype=mean.dtype)[:, None], mean.shape)
        return np.concatenate([np.zeros_like(mean), dl], axis=1)

    def kl(self, y_p: np.ndarray, y_q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""KL(p || q) = sum_d [ l^q_d - l^p_d + (sigma_p^2 + (mu_p - mu_q)^2) / (2 sigma_q^2) - 1/2 ].

        Both tempered by the same tau. Analytic, state by state. Shapes: (B, 2 D), (B, 2 D) -> (B,) >= 0.
        Checked against Monte Carlo by ``tests/test_heads.py::test_gaussian_kl_matches_monte_carlo``.
        """
        tau = check_temperature(temperature)
        (mean_p, log_std_p), (mean_q, log_std_q) = self.split(y_p, "y_p"), self.split(y_q, "y_q")
        var_ratio = np.exp(2.0 * (log_std_p - log_std_q))                        # sigma_p^2 / sigma_q^2
        dist2 = (mean_p - mean_q) ** 2 / (tau * tau * np.exp(2.0 * log_std_q))    # (mu_p - mu_q)^2 / sigma_q^2
        return (log_std_q - log_std_p + 0.5 * (var_ratio + dist2) - 0.5).sum(axis=1)

    def kl_backward(self, dkl: np.ndarray, y_p: np.ndarray, y_q: np.ndarray,
                    temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""Gradients of KL(p || q) w.r.t. both distributions' parameters.

        .. math:: \partial_{\mu^q} KL = \frac{\mu^q - \mu^p}{\sigma_q^2} = -\partial_{\mu^p} KL,\quad
                  \partial_{l^q} KL = 1 - \frac{\sigma_p^2 + (\mu^p - \mu^q)^2}{\sigma_q^2},\quad
                  \partial_{l^p} KL = \frac{\sigma_p^2}{\sigma_q^2} - 1

        Shapes: dkl (B,), y_p, y_q (B, 2 D) -> (dy_p, dy_q), each (B, 2 D).
        Checked by ``tests/test_heads.py::test_gaussian_gradients``.
        """
        tau = check_temperature(temperature)
        (mean_p, log_std_p), (mean_q, log_std_q) = self.split(y_p, "y_p"), self.split(y_q, "y_q")
        var_q = tau * tau * np.exp(2.0 * log_std_q)                    # sigma_q^2
        var_ratio = np.exp(2.0 * (log_std_p - log_std_q))              # sigma_p^2 / sigma_q^2
        diff = mean_q - mean_p                                         # (B, D)
        dkl = np.asarray(dkl)[:, None]
        dmean_q = dkl * diff / var_q
        dy_p = np.concatenate([-dmean_q, dkl * (var_ratio - 1.0)], axis=1)
        dy_q = np.concatenate([dmean_q, dkl * (1.0 - var_ratio - diff * diff / var_q)], axis=1)
        return dy_p, dy_q

    def fisher_metric(self, y: np.ndarray, dy: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""M dy for N(mu, diag(sigma^2)) in y = (mu, l): (dmu / sigma^2, 2 dl), no cross terms.

        Shapes: y, dy (B, 2 D) -> (B, 2 D). Checked through ``trpo.fisher_vector_product`` by
        ``ppo-np gradcheck`` (rows ``fisher-*``).
        """
        log_std = self.split(y)[1]
        dmean, dl = self.split(dy, "dy")
        sigma = check_temperature(temperature) * np.exp(log_std)
        return np.concatenate([dmean / (sigma * sigma), 2.0 * dl], axis=1)

    def target_entropy(self) -> float:
        """-D, the auto-tuned entropy coefficient's default target (as for SAC)."""
        return -float(self.net_dim)

    # --- compiled -------------------------------------------------------------------------------------

    def act(self, networks: tuple, params: dict, obs: np.ndarray, rng: np.random.Generator, temperature: float,
            rows: ActRows) -> np.ndarray:
        """``Actor.act(obs, rng, tau)`` and ``Critic.__call__(obs)`` into ``rows`` (``act_kernel``), with
        networks = (actor, critic) ``mlp.Network``s; returns the actions clipped to the bounds, in a new
        array each step (an env may keep the one it was given)."""
        env_actions = self.env_action_buffer(obs.shape[0])
        act_kernel(self.compiled_policy(params), obs, networks, self.noise(rng, obs.shape[0]), temperature, rows,
                   env_actions)
        return env_actions

    def env_action_buffer(self, N: int) -> np.ndarray:
        """An array for N envs' actions as the env takes them: (N, D) in the bounds' dtype."""
        return np.empty((N, self.net_dim), self.low.dtype)

    def compiled_policy(self, params: dict) -> "GaussianPolicy":
        return GaussianPolicy(params["log_std"], self.low, self.high)

    def loss_key(self, params: dict, grads: dict, actions: np.ndarray, B: int) -> "GaussianLoss":
        """The key to ``base.loss_step`` (``loss_kernel``, which writes grads["log_std"] too)."""
        if actions.shape != (B, self.net_dim):
            raise ValueError(f"actions must have shape {(B, self.net_dim)}, got {actions.shape}")
        return GaussianLoss(params["log_std"], grads["log_std"])


class GaussianLoss(NamedTuple):
    """A Gaussian head to its loss kernel (``base.loss_step``): its log_std (D,), and where dL/dlog_std goes."""

    log_std: np.ndarray
    dlog_std: np.ndarray


class GaussianPolicy(NamedTuple):
    """A Gaussian head to its act kernel and the compiled rollout (``base.act_step``): its log_std (D,), and
    the action space's bounds low, high (D,) that the env's actions are clipped to."""

    log_std: np.ndarray
    low: np.ndarray
    high: np.ndarray


# --- the row-level compiled helpers, and the kernels built from them ------------------------------------

@jit
def sigma_of(log_std, tau):
    """sigma = tau exp(l) for one entry, in float64 (``DiagGaussian.sample``'s sigma)."""
    return tau * math.exp(np.float64(log_std))


@jit
def log_density_row(a, mu, log_std, tau):
    """``DiagGaussian.log_prob`` of one row: sum_d [-w_d^2 / 2 - log sigma_d] - D log(2 pi) / 2 with
    sigma_d = tau exp(l_d), w_d = (a_d - mu_d) / sigma_d. Shapes: a, mu, log_std (D,); a - mu is taken in
    their own precision (float32 rows in the rollout, as stored), the rest in float64."""
    D = a.shape[0]
    sq = 0.0
    sum_log_sigma = 0.0
    for d in range(D):
        w = (a[d] - mu[d]) / sigma_of(log_std[d], tau)
        sq += w * w
        sum_log_sigma += log_std[d] + math.log(tau)
    return -0.5 * sq - sum_log_sigma - 0.5 * D * math.log(2.0 * math.pi)


@jit
def act_kernel(policy, obs, networks, noise, tau, rows, env_actions):
    """``DiagGaussian.act``: y = (mu, l), a = mu + sigma * noise, log pi_tau(a | s) of the stored (rounded)
    a by ``log_density_row``, V(s), into ``rows`` (an ``ActRows`` of N rows); env_actions (N, D) = a
    clipped to policy = (log_std, low, high).

    Checked against ``Actor.act`` and ``Critic.__call__`` by
    ``tests/test_rollout.py::test_act_kernels_match_actor_act_and_critic``.
    """
    actor_network, critic_network = networks
    log_std, low, high = policy
    dist, actions, logp, values = rows
    N, D = actions.shape
    means = np.empty((N, D), dist.dtype)
    infer_kernel(obs, actor_network, means)
    for n in range(N):
        for d in range(D):
            dist[n, d] = means[n, d]
            dist[n, D + d] = log_std[d]
            a = means[n, d] + sigma_of(log_std[d], tau) * noise[n, d]
            actions[n, d] = a
            a = actions[n, d]                                       # as stored
            env_actions[n, d] = high[d] if a > high[d] else (low[d] if a < low[d] else a)
        logp[n] = log_density_row(actions[n], means[n], log_std, tau)
    infer_kernel(obs, critic_network, values)



ACT_STEPS[GaussianPolicy] = act_kernel


@jit
def loss_step(key, layer, samples, coefs):
    """``loss_kernel`` as ``base.loss_step`` calls it."""
    return loss_kernel(layer, key, samples, coefs)


LOSS_STEPS[GaussianLoss] = loss_step

@jit
def loss_kernel(layer, log_std_and_grad, samples, coefs):
    r"""The actor's side of ``losses.ppo_loss`` for N(mu, sigma^2), mu = h W + b, sigma = tau exp(l), from
    layer.z = h W.

    Row by row: + b, log pi (``log_density_row``), H and KL(pi_old || pi), the surrogate
    (``surrogate_sample``), then the sum of the head's backwards, w = (a - mu) / sigma:

    .. math:: d\mu = dlogp\,\frac{w}{\sigma} + dkl\,\frac{\mu - \mu^{old}}{\sigma^2},\qquad
              dl = \sum_t \Big[dlogp\,(w^2 - 1) + dH + dkl\,\Big(1 - \frac{\sigma_{old}^2 +
              (\mu^{old} - \mu)^2}{\sigma^2}\Big)\Big]

    dmu overwrites z (its layer's backward is ``fused.backward``'s); log_std_and_grad = (log_std, where
    its gradient (D,) is written). ``layer`` is a ``fused.OutputLayer``, ``samples`` a ``PolicySamples``
    (old rows y_old = (mu_old, l_old)), ``coefs`` a ``fused.KernelCoefs``. Returns the minibatch's
    ``PolicySums`` (as a plain tuple, which ``fused.loss_statistics`` unpacks).
    """
    z, b = layer
    log_std, dlog_std = log_std_and_grad
    actions, logp_old, adv, dist_old, has_old = samples
    penalty, clip_eps, beta, ent_coef, tau, normalize_advantages = coefs
    B, D = z.shape
    adv_mean, adv_div = advantage_scale(adv, normalize_advantages)
    dlog_std[:] = 0
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    H = 0.0
    for d in range(D):
        H += log_std[d] + math.log(tau)
    H += 0.5 * D * (1.0 + math.log(2.0 * math.pi))
    mu = np.empty(D)
    sums = NO_SUMS                                              # a PolicySums, plain
    for t in range(B):
        kl = 0.0
        for d in range(D):
            mu[d] = z[t, d] + b[d]
            if has_old:
                diff = (mu[d] - dist_old[t, d]) / sigma_of(log_std[d], tau)
                var_ratio = math.exp(2.0 * (dist_old[t, D + d] - log_std[d]))       # sigma_old^2 / sigma^2
                kl += log_std[d] - dist_old[t, D + d] + 0.5 * (var_ratio + diff * diff) - 0.5
        A = (adv[t] - adv_mean) / adv_div
        s = surrogate_sample(log_density_row(actions[t], mu, log_std, tau), logp_old[t], A, B, penalty, clip_eps)
        sums = add_sample(sums, s, kl, H)
        for d in range(D):
            sigma = sigma_of(log_std[d], tau)
            w = (actions[t, d] - mu[d]) / sigma
            dmu = s.dlogp * w / sigma
            dl = s.dlogp * (w * w - 1.0) + dH
            if penalty:
                diff = (mu[d] - dist_old[t, d]) / sigma
                var_ratio = math.exp(2.0 * (dist_old[t, D + d] - log_std[d]))
                dmu += dkl * diff / sigma
                dl += dkl * (1.0 - var_ratio - diff * diff)
            dlog_std[d] += dl
            z[t, d] = dmu
    return sums
