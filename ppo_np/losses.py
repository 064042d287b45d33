r"""The PPO objectives, their gradients, the diagnostics, and the chain to every network parameter.

Notation (Schulman et al. 2017). A minibatch holds B samples (s_t, a_t, A_t, R_t) collected by the old
policy pi_old; everything is at a fixed temperature tau (the rollout's), for pi_old and pi_theta alike.
    logp_t = log pi_theta(a_t | s_t),   logp_old_t = log pi_old(a_t | s_t),
    r_t = pi_theta(a_t | s_t) / pi_old(a_t | s_t) = exp(logp_t - logp_old_t),   dr_t / dlogp_t = r_t.
Every loss is a mean over the minibatch, hence the 1/B in every gradient. The advantages A_t are used
as given (normalising them is the caller's choice).

Clipped surrogate
-----------------
    L^CLIP = -(1/B) sum_t min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t).
Read case by case (as in Spinning Up), the per-sample objective is
    A_t > 0:  min(r_t, 1 + eps) A_t   -> r_t A_t if r_t <= 1 + eps, the constant (1 + eps) A_t beyond;
    A_t < 0:  max(r_t, 1 - eps) A_t   -> r_t A_t if r_t >= 1 - eps, the constant (1 - eps) A_t below;
    A_t = 0:  0.
So the gradient is the unclipped one except where the objective is flat:
    dL^CLIP / dlogp_t = -(1/B) r_t A_t  * (1 - flat_t),
    flat_t = (A_t > 0 and r_t > 1 + eps) or (A_t < 0 and r_t < 1 - eps).
Convention at the kink r_t = 1 +- eps exactly: both branches of the min are equal there; we take the
unclipped branch r_t A_t, whose derivative is the one-sided derivative from inside the trust region,
so the gradient vanishes only *strictly* outside [1 - eps, 1 + eps]. The per-sample objective never
exceeds r_t A_t (pessimism: it is a lower bound of the unclipped surrogate). At r_t = 1 (before the
first step of an update) nothing is flat and dL/dlogp_t = -A_t / B: chained through log pi this is the
vanilla policy gradient -(1/B) sum_t A_t grad log pi_theta(a_t | s_t).

KL-penalty surrogate
--------------------
    L^KLPEN = -(1/B) sum_t r_t A_t + beta (1/B) sum_t KL(pi_old,tau(. | s_t) || pi_theta,tau(. | s_t)),
with the analytic KL between the two action distributions state by state (never a distance between
parameter vectors). Its gradients:
    dL/dlogp_t = -(1/B) r_t A_t,      dL/dKL_t = beta / B,
and KL_t's gradient w.r.t. the new distribution's parameters (logits, or mean and log_std) is
``kl_backward``'s q-side in ``distributions.py``. beta is the caller's (adaptive) coefficient.

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
The actor sees dL/dlogp_t, dL/dH_t = -c_e / B and (penalty only) dL/dKL_t = beta / B; one call of the
distribution's ``policy_terms_backward`` turns those into dL/dz (or dL/dmu and dL/dl), and one MLP
backward turns dL/dz into every weight's gradient. The critic sees dL/dV_t = c_v dL^V/dV_t and one MLP
backward. One forward and one backward per network, nothing recomputed.

Diagnostics
-----------
* approx_kl_k1 = mean(logp_old - logp): unbiased for KL(pi_old || pi_theta) under pi_old's samples,
  but can be negative;
* approx_kl_k3 = mean((r - 1) - log r): also unbiased, and >= 0 per sample since log r <= r - 1
  (Schulman 2020, "Approximating KL divergence");
* exact_kl = mean_t KL(pi_old,tau(. | s_t) || pi_theta,tau(. | s_t)), analytic;
* clip_frac = mean(|r - 1| > eps);
* explained_variance = 1 - Var[R - V] / Var[R]: 1 for perfect predictions, 0 for predicting the mean
  of R, negative when worse than that. It is undefined (0/0 or x/0) when Var[R] = 0 and reported as
  NaN then, as in cleanrl and stable-baselines3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from ppo_np.distributions import Categorical, DiagGaussian, check_temperature
from ppo_np.ratios import importance_ratios
from ppo_np.params import Params

SURROGATES = ("clip", "penalty")
STAT_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl_k1", "approx_kl_k3", "exact_kl", "clip_frac",
             "explained_variance")


# --- inputs ------------------------------------------------------------------------------------------

class Minibatch(NamedTuple):
    """One minibatch of samples of the old policy, as ``ppo_loss`` consumes it (B rows)."""

    obs: np.ndarray                           # (B, obs_dim) observations the policy acted on
    actions: np.ndarray                       # (B,) int64 (discrete) or (B, D) unclipped samples
    logp_old: np.ndarray                      # (B,) log pi_old,tau(a | s) of the tempered policy that acted
    advantages: np.ndarray                    # (B,) A_t, used as given
    returns: np.ndarray                       # (B,) value targets R_t
    values_old: np.ndarray                    # (B,) V_old(s_t) at rollout time (for vf_clip)
    dist_old: Optional[np.ndarray]            # (B, K) old logits or (B, D) old means; None only for "clip"
    log_std_old: Optional[np.ndarray] = None  # (D,) old log_std (Gaussian), None for a categorical policy


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
        _check_real("clip_eps", self.clip_eps, positive=True)
        _check_real("beta", self.beta)
        _check_real("vf_coef", self.vf_coef)
        if self.vf_clip is not None:
            _check_real("vf_clip", self.vf_clip, positive=True)
        _check_real("ent_coef", self.ent_coef)
        check_temperature(self.temperature)


class LossResult(NamedTuple):
    """What ``ppo_loss`` returns: the scalar loss, the gradient of every parameter, the diagnostics."""

    loss: float             # L = L_pi + c_v L^V - c_e H
    actor_grads: Params     # dL/dtheta, named like actor.params (log_std included for a Gaussian)
    critic_grads: Params    # dL/dphi, named like critic.params
    stats: dict             # STAT_KEYS -> float


def _check_real(name: str, value, positive: bool = False) -> float:
    """A finite real number, > 0 if ``positive`` else >= 0; ValueError naming the value otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _check_vector(name: str, x, B: int, dtype) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.shape != (B,):
        raise ValueError(f"{name} must have shape ({B},), got {x.shape}")
    return x


# --- policy surrogates --------------------------------------------------------------------------------

def clipped_objective(ratio: np.ndarray, adv: np.ndarray, clip_eps: float) -> np.ndarray:
    """The per-sample objective min(r A, clip(r, 1 - eps, 1 + eps) A) (to be maximised). (B,) -> (B,).

    Never above r A: ``tests/test_losses.py::test_pessimism``.
    """
    return np.minimum(ratio * adv, np.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)


def clipped_surrogate(logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, clip_eps: float):
    r"""L^CLIP = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)), r = exp(logp - logp_old).

    .. math:: \frac{\partial L^{CLIP}}{\partial \log\pi_t} = -\frac{r_t A_t}{B}\,
              \big(1 - 1[(A_t > 0 \wedge r_t > 1+\epsilon) \vee (A_t < 0 \wedge r_t < 1-\epsilon)]\big)

    Zero only strictly outside the clip range (at r = 1 +- eps the unclipped derivative is used).
    Shapes: logp, logp_old, adv (B,) -> (loss float, dlogp (B,), stats dict with policy_loss,
    clip_frac, approx_kl_k1, approx_kl_k3).
    Checked by ``tests/test_losses.py::test_surrogate_gradients``,
    ``::test_clipped_gradient_is_zero_exactly_where_flat``, ``::test_clipped_gradient_boundary_convention``
    and ``::test_clipped_gradient_at_r_one``.
    """
    clip_eps = _check_real("clip_eps", clip_eps, positive=True)
    logp, logp_old, adv = np.asarray(logp), np.asarray(logp_old), np.asarray(adv)
    B = logp.shape[0]
    logp_old = _check_vector("logp_old", logp_old, B, logp.dtype)
    adv = _check_vector("advantages", adv, B, logp.dtype)
    ratio, clip_frac, k1, k3 = importance_ratios(logp, logp_old, clip_eps)    # r = exp(logp - logp_old)
    loss = -float(clipped_objective(ratio, adv, clip_eps).sum()) / B
    flat = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
    dlogp = np.where(flat, 0.0, -ratio * adv / B).astype(logp.dtype, copy=False)   # -r A / B off the flat parts
    stats = {"policy_loss": loss, "clip_frac": clip_frac, "approx_kl_k1": k1, "approx_kl_k3": k3}
    return loss, dlogp, stats


def kl_penalty_surrogate(logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, kl: np.ndarray,
                         beta: float, clip_eps: float = 0.2):
    r"""L^KLPEN = -mean(r A) + beta * mean(KL), KL_t = KL(pi_old(. | s_t) || pi(. | s_t)) per state.

    .. math:: \frac{\partial L^{KLPEN}}{\partial \log\pi_t} = -\frac{r_t A_t}{B},\qquad
              \frac{\partial L^{KLPEN}}{\partial KL_t} = \frac{\beta}{B}

    Chain dkl through the distribution's ``kl_backward`` (q side) for the new parameters' gradient.
    ``clip_eps`` only defines the clip_frac diagnostic.
    Shapes: logp, logp_old, adv, kl (B,) -> (loss float, (dlogp (B,), dkl (B,)), stats dict with
    policy_loss, clip_frac, approx_kl_k1, approx_kl_k3, exact_kl).
    Checked by ``tests/test_losses.py::test_surrogate_gradients`` (and through the logits by
    ``::test_penalty_gradient_through_the_distribution``).
    """
    beta = _check_real("beta", beta)
    clip_eps = _check_real("clip_eps", clip_eps, positive=True)
    logp = np.asarray(logp)
    B = logp.shape[0]
    logp_old = _check_vector("logp_old", logp_old, B, logp.dtype)
    adv = _check_vector("advantages", adv, B, logp.dtype)
    kl = _check_vector("kl", kl, B, logp.dtype)
    ratio, clip_frac, k1, k3 = importance_ratios(logp, logp_old, clip_eps)
    exact_kl = float(kl.sum()) / B
    loss = -float(np.dot(ratio, adv)) / B + beta * exact_kl
    dlogp = -ratio * adv / B                                       # d(-mean(r A))/dlogp, dr/dlogp = r
    dkl = np.full(B, beta / B, dtype=logp.dtype)                   # d(beta mean(KL))/dKL_t
    stats = {"policy_loss": loss, "clip_frac": clip_frac, "approx_kl_k1": k1, "approx_kl_k3": k3,
             "exact_kl": exact_kl}
    return loss, (dlogp, dkl), stats


# --- value loss, entropy, explained variance ---------------------------------------------------------

def value_loss(values: np.ndarray, returns: np.ndarray):
    r"""L^V = 0.5 * mean((V - R)^2);  dL^V/dV = (V - R) / B.

    Shapes: values, returns (B,) -> (loss float, dvalues (B,), stats {"value_loss"}).
    Checked by ``tests/test_losses.py::test_value_loss_gradients`` and ``::test_value_loss_closed_form``.
    """
    values = np.asarray(values)
    B = values.shape[0]
    err = values - _check_vector("returns", returns, B, values.dtype)   # (B,) V - R
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
    vf_clip = _check_real("vf_clip", vf_clip, positive=True)
    values = np.asarray(values)
    B = values.shape[0]
    returns = _check_vector("returns", returns, B, values.dtype)
    values_old = _check_vector("values_old", values_old, B, values.dtype)
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


def normalize_advantages(adv: np.ndarray) -> np.ndarray:
    """(A - mean(A)) / (std(A) + 1e-8) over the given samples (population std), in their dtype.

    Per minibatch, as cleanrl and stable-baselines3 do; the 1e-8 keeps a constant A finite (all zeros).
    """
    adv = np.asarray(adv)
    return (adv - adv.mean()) / (adv.std() + 1e-8)


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

    One actor forward (logits or means), one critic forward (values), the distribution's
    ``policy_terms`` (log pi, H, KL from one log-softmax), the surrogate, value and entropy terms,
    then one ``policy_terms_backward`` and one MLP backward per network (module docstring).
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
    tau = coefs.temperature
    if coefs.surrogate == "penalty" and mb.dist_old is None:
        raise ValueError("the 'penalty' surrogate needs mb.dist_old (the old policy's logits or means)")

    dist_out, actor_cache = actor.forward(mb.obs)                   # (B, K) logits or (B, D) means
    values, critic_cache = critic.forward(mb.obs)                   # (B,)
    B, dtype = dist_out.shape[0], dist_out.dtype
    if B < 1:
        raise ValueError("a minibatch needs at least one sample, got B = 0")

    # log pi_tau(a|s), H(pi_tau(.|s)) and KL(pi_old,tau || pi_tau), from one pass over the outputs
    if actor.discrete:
        logp, ent, kl, terms = Categorical.policy_terms(dist_out, mb.actions, tau, mb.dist_old)
    else:
        mean_old = mb.dist_old
        if mean_old is not None and mb.log_std_old is None:
            raise ValueError("a Gaussian minibatch needs log_std_old (D,) along with dist_old")
        logp, ent, kl, terms = DiagGaussian.policy_terms(dist_out, actor.params["log_std"], mb.actions, tau,
                                                         mean_old, mb.log_std_old)
    logp_old = _check_vector("logp_old", mb.logp_old, B, dtype)
    adv = _check_vector("advantages", mb.advantages, B, dtype)

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

    # backward: dL/dlogp, dL/dH_t = -c_e / B, dL/dKL_t -> distribution parameters -> network parameters
    if actor.discrete:
        dlogits = Categorical.policy_terms_backward(dlogp, -coefs.ent_coef * dentropy, dkl, terms)
        actor_grads = actor.backward(dlogits, actor_cache)
    else:
        dmean, dlog_std = DiagGaussian.policy_terms_backward(dlogp, -coefs.ent_coef * dentropy, dkl, terms)
        actor_grads = actor.backward(dmean, actor_cache, dlog_std)
    critic_grads = critic.backward(coefs.vf_coef * dvalues, critic_cache)     # dL/dV = c_v dL^V/dV

    stats = {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy,
             "approx_kl_k1": pstats["approx_kl_k1"], "approx_kl_k3": pstats["approx_kl_k3"],
             "exact_kl": exact_kl, "clip_frac": pstats["clip_frac"],
             "explained_variance": explained_variance(values, mb.returns)}
    return LossResult(float(loss), actor_grads, critic_grads, stats)
