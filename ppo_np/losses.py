r"""The PPO objectives, their gradients, the diagnostics, and the chain to every network parameter.

Notation (Schulman et al. 2017). A minibatch holds B samples (s_t, a_t, A_t, R_t) collected by the old
policy pi_old; everything is at a fixed temperature tau (the rollout's), for pi_old and pi_theta alike.
    logp_t = log pi_theta(a_t | s_t),   logp_old_t = log pi_old(a_t | s_t),
    r_t = pi_theta(a_t | s_t) / pi_old(a_t | s_t) = exp(logp_t - logp_old_t),   dr_t / dlogp_t = r_t.
Every loss is a mean over the minibatch, hence the 1/B in every gradient. The advantages A_t are used
as given (normalising them is the caller's choice). The policy surrogates L^CLIP and L^KLPEN, sample
by sample, are in ``surrogate.py``.

Value loss
----------
    L^V = (1/2)(1/B) sum_t (V_t - R_t)^2,                 dL^V/dV_t = (V_t - R_t) / B.
Clipped variant (PPO2 / baselines), with V^clip_t = V_old_t + clip(V_t - V_old_t, -eps_v, eps_v):
    L^V = (1/2)(1/B) sum_t max((V_t - R_t)^2, (V^clip_t - R_t)^2).
The clipped term can only *strictly* exceed the unclipped one when V^clip_t != V_t, i.e. when
|V_t - V_old_t| > eps_v, where dV^clip_t/dV_t = 0. Hence
    dL^V/dV_t = (V_t - R_t) / B  if (V_t - R_t)^2 >= (V^clip_t - R_t)^2,   0 otherwise,
with ties (which include |V_t - V_old_t| <= eps_v) going to the unclipped term.

Entropy bonus
-------------
    H = (1/B) sum_t H(pi_theta,tau(. | s_t)),      dH / dH_t = 1 / B,
entering the total loss with a minus sign (a bonus).

Total loss and the chain to the parameters
------------------------------------------
    L = L_pi + c_v L^V - c_e H,      L_pi = L^CLIP or L^KLPEN.
The actor sees dL/dlogp_t, dL/dH_t = -c_e / B and (penalty only) dL/dKL_t = beta / B; the policy
head's ``log_prob_backward``, ``entropy_backward`` and ``kl_backward`` (q side) turn those into dL/dy,
y the distribution's parameters at each state (``heads/base.py``), whose sum the actor's backward
chains to every parameter. The critic sees dL/dV_t = c_v dL^V/dV_t and one MLP backward. This is the
readable specification; ``fused.FusedLoss`` computes the same in a few compiled calls.

Diagnostics
-----------
* approx_kl_k1 = mean(logp_old - logp): unbiased for KL(pi_old || pi_theta) under pi_old's samples,
  but can be negative;
* approx_kl_k3 = mean((r - 1) - log r): also unbiased, and >= 0 per sample since log r <= r - 1
  (Schulman 2020, "Approximating KL divergence");
* exact_kl = mean_t KL(pi_old,tau(. | s_t) || pi_theta,tau(. | s_t)), analytic;
* clip_frac = mean(|r - 1| > eps);
* outside_share = sum_{|r_t - 1| > eps} |dL_pi/dlogp_t| / sum_t |dL_pi/dlogp_t|: the share of the
  surrogate's per-sample gradient weight that samples outside the clip range carry (those the
  pessimistic min lets through: A_t > 0 with r_t < 1 - eps, A_t < 0 with r_t > 1 + eps; the others
  weigh 0). The split in parameter space is ``gradients.loss_terms``'s;
* explained_variance = 1 - Var[R - V] / Var[R]: 1 for perfect predictions, 0 for predicting the mean
  of R, negative when worse than that. It is undefined (0/0 or x/0) when Var[R] = 0 and reported as
  NaN then, as in cleanrl and stable-baselines3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from ppo_np.heads.base import check_temperature
from ppo_np.params import Params
from ppo_np.surrogate import check_real, check_vector, clipped_surrogate, kl_penalty_surrogate

SURROGATES = ("clip", "penalty")
STAT_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl_k1", "approx_kl_k3", "exact_kl", "clip_frac",
             "explained_variance", "outside_share")


# --- inputs ------------------------------------------------------------------------------------------

class Minibatch(NamedTuple):
    """One minibatch of samples of the old policy, as ``ppo_loss`` consumes it (B rows)."""

    obs: np.ndarray                           # (B, obs_dim) observations the policy acted on
    actions: np.ndarray                       # (B, *action_shape) as the policy head stores them
    logp_old: np.ndarray                      # (B,) log pi_old,tau(a | s) of the tempered policy that acted
    advantages: np.ndarray                    # (B,) A_t, used as given
    returns: np.ndarray                       # (B,) value targets R_t
    values_old: np.ndarray                    # (B,) V_old(s_t) at rollout time (for vf_clip)
    dist_old: Optional[np.ndarray]            # (B, dist_dim) the old policy's y (heads/base.py); None only for "clip"


@dataclass(frozen=True)
class LossCoefs:
    """The coefficients of one loss evaluation; validated at construction (ValueError naming the value).

    Frozen: derive a changed copy with ``dataclasses.replace(coefs, beta=...)``.
    """

    surrogate: str = "clip"
    """ "clip" for L^CLIP, "penalty" for L^KLPEN."""
    clip_eps: float = 0.2
    """eps of the clipped surrogate, > 0; for "penalty" it only defines the clip_frac diagnostic."""
    beta: float = 1.0
    """KL penalty coefficient, >= 0 (used by "penalty" only)."""
    vf_coef: float = 0.5
    """c_v, the value loss weight in L = L_pi + c_v L^V - c_e H, >= 0."""
    vf_clip: Optional[float] = None
    """eps_v of the clipped value loss, > 0, or None for the plain 0.5 (V - R)^2."""
    ent_coef: float = 0.0
    """c_e, the entropy bonus weight, >= 0."""
    temperature: float = 1.0
    """tau > 0 of pi_tau, the same for the old and the new policy (the one the rollout acted with)."""

    def __post_init__(self):
        if self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {self.surrogate!r}")
        check_real("clip_eps", self.clip_eps, positive=True)
        check_real("beta", self.beta)
        check_real("vf_coef", self.vf_coef)
        if self.vf_clip is not None:
            check_real("vf_clip", self.vf_clip, positive=True)
        check_real("ent_coef", self.ent_coef)
        check_temperature(self.temperature)


class LossResult(NamedTuple):
    """What ``ppo_loss`` returns: the scalar loss, the gradient of every parameter, the diagnostics."""

    loss: float             # L = L_pi + c_v L^V - c_e H
    actor_grads: Params     # dL/dtheta, named like actor.params (log_std included for a Gaussian)
    critic_grads: Params    # dL/dphi, named like critic.params
    stats: dict             # STAT_KEYS -> float


# --- value loss, entropy, explained variance ---------------------------------------------------------

def value_loss(values: np.ndarray, returns: np.ndarray):
    r"""L^V = 0.5 * mean((V - R)^2);  dL^V/dV = (V - R) / B.

    Shapes: values, returns (B,) -> (loss float, dvalues (B,), stats {"value_loss"}).
    Checked by ``tests/test_losses.py::test_value_loss_gradients`` and ``::test_value_loss_closed_form``.
    """
    values = np.asarray(values)
    B = values.shape[0]
    err = values - check_vector("returns", returns, B, values.dtype)   # (B,) V - R
    loss = 0.5 * float(np.dot(err, err)) / B
    return loss, err / B, {"value_loss": loss}


def clipped_value_loss(values: np.ndarray, returns: np.ndarray, values_old: np.ndarray, vf_clip: float):
    r"""L^V = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)).

    .. math:: \frac{\partial L^V}{\partial V_t} = \frac{V_t - R_t}{B}\;
              1[(V_t - R_t)^2 \ge (V^{clip}_t - R_t)^2]

    The clipped branch, when it wins strictly, is flat in V_t (see the module docstring); ties, and
    every sample with |V_t - V_old_t| <= eps_v (where V^clip_t = V_t), go to the unclipped branch.
    Shapes: values, returns, values_old (B,) -> (loss float, dvalues (B,), stats with value_loss and
    vf_clip_frac, the fraction of samples where the clipped branch won).
    Checked by ``tests/test_losses.py::test_value_loss_gradients`` and
    ``::test_clipped_value_gradient_is_zero_where_clipped_wins``.
    """
    vf_clip = check_real("vf_clip", vf_clip, positive=True)
    values = np.asarray(values)
    B = values.shape[0]
    returns = check_vector("returns", returns, B, values.dtype)
    values_old = check_vector("values_old", values_old, B, values.dtype)
    delta = values - values_old                                                 # (B,) V - V_old
    v_clipped = values_old + np.clip(delta, -vf_clip, vf_clip)                  # V^clip
    err = values - returns                                                      # (B,) V - R
    err_clipped = v_clipped - returns
    # ties -> unclipped; inside the range V^clip = V, decided by |delta| so that rounding in
    # V_old + (V - V_old) cannot hand the max to the (flat) clipped branch
    use_unclipped = (np.abs(delta) <= vf_clip) | (err * err >= err_clipped * err_clipped)
    loss = 0.5 * float(np.where(use_unclipped, err * err, err_clipped * err_clipped).sum()) / B
    dvalues = np.where(use_unclipped, err / B, 0.0).astype(values.dtype, copy=False)
    return loss, dvalues, {"value_loss": loss, "vf_clip_frac": 1.0 - float(use_unclipped.sum()) / B}


def entropy_bonus(entropy: np.ndarray):
    r"""H = mean_t H_t;  dH/dH_t = 1 / B (the total loss uses -c_e H).

    Shapes: entropy (B,) -> (bonus float, dentropy (B,), stats {"entropy"}).
    Checked by ``tests/test_losses.py::test_value_loss_gradients`` and ``::test_value_loss_closed_form``.
    """
    entropy = np.asarray(entropy)
    bonus = float(entropy.sum()) / entropy.shape[0]
    return bonus, np.full(entropy.shape, 1.0 / entropy.shape[0], dtype=entropy.dtype), {"entropy": bonus}


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var[R - V] / Var[R] (population variances, in float64); NaN when Var[R] = 0.

    "Var[R] = 0" is judged relative to the returns' size, Var[R] <= 1e-24 mean(R^2): constant
    returns that are not exactly representable (0.1, say) leave a rounding residue of ~1e-34 in
    Var[R], which would otherwise turn the ratio into a huge meaningless number.

    Checked by ``tests/test_losses.py::test_explained_variance``.
    """
    values = np.asarray(values, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64)
    if values.shape != returns.shape:
        raise ValueError(f"values {values.shape} and returns {returns.shape} must have the same shape")
    n = returns.size
    if n == 0:
        raise ValueError("explained_variance needs at least one sample")
    dr = returns - returns.sum() / n                       # R - mean(R)
    var_r = float(np.dot(dr.ravel(), dr.ravel())) / n      # Var[R]
    if var_r <= 1e-24 * float(np.dot(returns.ravel(), returns.ravel())) / n:  # zero up to rounding
        return math.nan
    e = returns - values
    de = e - e.sum() / n                                   # (R - V) - mean(R - V)
    return 1.0 - float(np.dot(de.ravel(), de.ravel())) / n / var_r


# --- everything, chained to the parameters -----------------------------------------------------------

def ppo_loss(actor, critic, mb: Minibatch, coefs: LossCoefs) -> LossResult:
    r"""L = L_pi + c_v L^V - c_e H and dL/d(every parameter of actor and critic).

    One actor forward (y, the distribution's parameters per state), one critic forward (values), the
    head's log pi, H and KL(pi_old || pi), the surrogate, value and entropy terms, then the head's
    backwards summed into dL/dy and one backward per network (module docstring).
    ``coefs.temperature`` must be the tau the rollout acted with (logp_old is log pi_old,tau); the KL
    of the penalty and of exact_kl is between the two tau-tempered distributions.

    Args:
        actor: a ``policy.Actor``; critic: a ``policy.Critic``; mb: a ``Minibatch`` of B >= 1 rows;
        coefs: a ``LossCoefs``.
    Returns: ``LossResult(loss, actor_grads, critic_grads, stats)`` with stats keys ``STAT_KEYS``
    (policy_loss includes the beta KL term for "penalty"; exact_kl is NaN if mb.dist_old is None).
    Checked by ``ppo-np gradcheck`` (rows ppo_loss-*) and ``tests/test_losses.py::test_ppo_loss_gradients``.
    """
    if not isinstance(coefs, LossCoefs):
        raise ValueError(f"coefs must be a LossCoefs, got {type(coefs).__name__}")
    tau, head = coefs.temperature, actor.head
    if coefs.surrogate == "penalty" and mb.dist_old is None:
        raise ValueError("the 'penalty' surrogate needs mb.dist_old (the old policy's distribution parameters)")

    y, actor_cache = actor.forward(mb.obs)                          # (B, dist_dim)
    values, critic_cache = critic.forward(mb.obs)                   # (B,)
    B, dtype = y.shape[0], y.dtype
    if B < 1:
        raise ValueError("a minibatch needs at least one sample, got B = 0")

    # log pi_tau(a|s), H(pi_tau(.|s)) and KL(pi_old,tau || pi_tau)
    logp = head.log_prob(y, mb.actions, tau)
    ent = head.entropy(y, tau)
    if mb.dist_old is not None and np.shape(mb.dist_old) != y.shape:
        raise ValueError(f"dist_old must have shape {y.shape} (the old policy's y), got {np.shape(mb.dist_old)}")
    kl = None if mb.dist_old is None else head.kl(mb.dist_old, y, tau)
    logp_old = check_vector("logp_old", mb.logp_old, B, dtype)
    adv = check_vector("advantages", mb.advantages, B, dtype)

    # L_pi and dL_pi/dlogp (and dL_pi/dKL for the penalty)
    if coefs.surrogate == "clip":
        policy_loss, dlogp, pstats = clipped_surrogate(logp, logp_old, adv, coefs.clip_eps)
        dkl = None
        exact_kl = float(kl.sum()) / B if kl is not None else math.nan
    else:
        policy_loss, (dlogp, dkl), pstats = kl_penalty_surrogate(logp, logp_old, adv, kl, coefs.beta,
                                                                 clip_eps=coefs.clip_eps)
        exact_kl = pstats["exact_kl"]

    # L^V and dL^V/dV
    if coefs.vf_clip is None:
        v_loss, dvalues, _ = value_loss(values, mb.returns)
    else:
        v_loss, dvalues, _ = clipped_value_loss(values, mb.returns, mb.values_old, coefs.vf_clip)

    # H and dH/dH_t
    entropy, dentropy, _ = entropy_bonus(ent)

    loss = policy_loss + coefs.vf_coef * v_loss - coefs.ent_coef * entropy       # L = L_pi + c_v L^V - c_e H

    # backward: dL/dlogp, dL/dH_t = -c_e / B, dL/dKL_t -> dL/dy -> network parameters
    dy = head.log_prob_backward(dlogp, y, mb.actions, tau) + head.entropy_backward(-coefs.ent_coef * dentropy, y, tau)
    if dkl is not None:
        dy += head.kl_backward(dkl, mb.dist_old, y, tau)[1]
    actor_grads = actor.backward(dy, actor_cache)
    critic_grads = critic.backward(coefs.vf_coef * dvalues, critic_cache)     # dL/dV = c_v dL^V/dV

    stats = {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy,
             "approx_kl_k1": pstats["approx_kl_k1"], "approx_kl_k3": pstats["approx_kl_k3"],
             "exact_kl": exact_kl, "clip_frac": pstats["clip_frac"],
             "explained_variance": explained_variance(values, mb.returns), "outside_share": pstats["outside_share"]}
    return LossResult(float(loss), actor_grads, critic_grads, stats)
