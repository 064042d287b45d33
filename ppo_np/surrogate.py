r"""The policy surrogates sample by sample: their NumPy references and the compiled twins the heads call.

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
the policy head's ``kl_backward`` (q side). beta is the caller's (adaptive) coefficient.

Advantage normalisation
-----------------------
    A_t <- (A_t - mean(A)) / (std(A) + 1e-8) over the minibatch (population std), as cleanrl and
stable-baselines3 do; the 1e-8 keeps a constant A finite (all zeros).

Compiled twins
--------------
Each policy head's fused loss kernel (``heads/*.py``) runs over the minibatch row by row; for the part
that does not depend on the action distribution it calls ``surrogate_sample`` (one sample of
``clipped_surrogate`` or ``kl_penalty_surrogate``, with its diagnostics) and ``advantage_scale``
(``normalize_advantages``' mean and divisor), and returns its sums as ``PolicySums``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.jit import jit
from ppo_np.ratios import importance_ratios


def check_real(name: str, value, positive: bool = False) -> float:
    """A finite real number, > 0 if ``positive`` else >= 0; ValueError naming the value otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def check_vector(name: str, x, B: int, dtype) -> np.ndarray:
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
    clip_frac, approx_kl_k1, approx_kl_k3, outside_share).
    Checked by ``tests/test_losses.py::test_surrogate_gradients``,
    ``::test_clipped_gradient_is_zero_exactly_where_flat``, ``::test_clipped_gradient_boundary_convention``
    and ``::test_clipped_gradient_at_r_one``.
    """
    clip_eps = check_real("clip_eps", clip_eps, positive=True)
    logp, logp_old, adv = np.asarray(logp), np.asarray(logp_old), np.asarray(adv)
    B = logp.shape[0]
    logp_old = check_vector("logp_old", logp_old, B, logp.dtype)
    adv = check_vector("advantages", adv, B, logp.dtype)
    ratio, clip_frac, k1, k3 = importance_ratios(logp, logp_old, clip_eps)    # r = exp(logp - logp_old)
    loss = -float(clipped_objective(ratio, adv, clip_eps).sum()) / B
    flat = ((adv > 0) & (ratio > 1.0 + clip_eps)) | ((adv < 0) & (ratio < 1.0 - clip_eps))
    dlogp = np.where(flat, 0.0, -ratio * adv / B).astype(logp.dtype, copy=False)   # -r A / B off the flat parts
    stats = {"policy_loss": loss, "clip_frac": clip_frac, "approx_kl_k1": k1, "approx_kl_k3": k3,
             "outside_share": outside_share(dlogp, np.abs(ratio - 1.0) > clip_eps)}
    return loss, dlogp, stats


def kl_penalty_surrogate(logp: np.ndarray, logp_old: np.ndarray, adv: np.ndarray, kl: np.ndarray,
                         beta: float, clip_eps: float = 0.2):
    r"""L^KLPEN = -mean(r A) + beta * mean(KL), KL_t = KL(pi_old(. | s_t) || pi(. | s_t)) per state.

    .. math:: \frac{\partial L^{KLPEN}}{\partial \log\pi_t} = -\frac{r_t A_t}{B},\qquad
              \frac{\partial L^{KLPEN}}{\partial KL_t} = \frac{\beta}{B}

    Chain dkl through the distribution's ``kl_backward`` (q side) for the new parameters' gradient.
    ``clip_eps`` only defines the clip_frac diagnostic.
    Shapes: logp, logp_old, adv, kl (B,) -> (loss float, (dlogp (B,), dkl (B,)), stats dict with
    policy_loss, clip_frac, approx_kl_k1, approx_kl_k3, exact_kl, outside_share).
    Checked by ``tests/test_losses.py::test_surrogate_gradients`` (and through the logits by
    ``::test_penalty_gradient_through_the_distribution``).
    """
    beta = check_real("beta", beta)
    clip_eps = check_real("clip_eps", clip_eps, positive=True)
    logp = np.asarray(logp)
    B = logp.shape[0]
    logp_old = check_vector("logp_old", logp_old, B, logp.dtype)
    adv = check_vector("advantages", adv, B, logp.dtype)
    kl = check_vector("kl", kl, B, logp.dtype)
    ratio, clip_frac, k1, k3 = importance_ratios(logp, logp_old, clip_eps)
    exact_kl = float(kl.sum()) / B
    loss = -float(np.dot(ratio, adv)) / B + beta * exact_kl
    dlogp = -ratio * adv / B                                       # d(-mean(r A))/dlogp, dr/dlogp = r
    dkl = np.full(B, beta / B, dtype=logp.dtype)                   # d(beta mean(KL))/dKL_t
    stats = {"policy_loss": loss, "clip_frac": clip_frac, "approx_kl_k1": k1, "approx_kl_k3": k3,
             "exact_kl": exact_kl, "outside_share": outside_share(dlogp, np.abs(ratio - 1.0) > clip_eps)}
    return loss, (dlogp, dkl), stats


def normalize_advantages(adv: np.ndarray) -> np.ndarray:
    """(A - mean(A)) / (std(A) + 1e-8) over the given samples (population std), in their (float) dtype.

    Per minibatch, as cleanrl and stable-baselines3 do; the 1e-8 keeps a constant A finite (all zeros).
    Computed in float64, as ``advantage_scale``: in float32 the mean of a constant (0.1, say) is off by
    an ulp of 0.1, which the 1e-8 would turn into -0.43 for every sample.
    Checked by ``tests/test_losses.py::test_constant_advantages_normalize_to_zeros``.
    """
    adv = np.asarray(adv)
    a = adv.astype(np.float64)
    z = (a - a.mean()) / (a.std() + 1e-8)
    return z.astype(adv.dtype, copy=False) if adv.dtype.kind == "f" else z


@jit
def advantage_scale(adv, normalize):
    """(mean, divisor) with A_t = (adv_t - mean) / divisor: ``normalize_advantages``' (mean, std + 1e-8), or
    (0, 1) when not ``normalize``."""
    if not normalize:
        return 0.0, 1.0
    B = adv.shape[0]
    mean = 0.0
    for t in range(B):
        mean += adv[t]
    mean /= B
    var = 0.0
    for t in range(B):
        var += (adv[t] - mean) ** 2
    return mean, math.sqrt(var / B) + 1e-8


class SurrogateSample(NamedTuple):
    """One sample's share of the surrogate: dL/dlogp_t and the terms of the minibatch's sums."""

    dlogp: float        # dL_pi/dlogp_t
    objective: float    # min(r A, clip(r) A), or r A for the penalty
    k1: float           # logp_old - logp
    k3: float           # (r - 1) - log r
    clipped: float      # 1[|r - 1| > eps]


@jit
def surrogate_sample(logp, logp_old, A, B, penalty, clip_eps):
    """Sample t of ``clipped_surrogate`` (or of ``kl_penalty_surrogate``'s -r A) in a minibatch of B:
    its ``SurrogateSample``; the same formulas and the same convention at the kink."""
    d = logp - logp_old                                       # log r_t
    r = math.exp(d)
    if penalty:
        objective = r * A
        dlogp = -r * A / B
    else:
        objective = min(r * A, min(max(r, 1.0 - clip_eps), 1.0 + clip_eps) * A)
        flat = (A > 0 and r > 1.0 + clip_eps) or (A < 0 and r < 1.0 - clip_eps)
        dlogp = 0.0 if flat else -r * A / B
    clipped = 1.0 if abs(r - 1.0) > clip_eps else 0.0
    return SurrogateSample(dlogp, objective, -d, math.expm1(d) - d, clipped)


@jit
def add_sample(sums, s, kl, entropy):
    """``sums`` (a ``PolicySums``, plain) with one sample's terms added: its ``SurrogateSample`` s, its KL
    and its entropy."""
    objective, kl_sum, entropy_sum, k1, k3, clipped, weight, weight_outside = sums
    w = abs(s.dlogp)
    return (objective + s.objective, kl_sum + kl, entropy_sum + entropy, k1 + s.k1, k3 + s.k3, clipped + s.clipped,
            weight + w, weight_outside + w * s.clipped)


class PolicySums(NamedTuple):
    """The sums over a minibatch that a head's fused loss kernel returns (divide by B for means)."""

    objective: float    # of min(r A, clip(r) A) (or r A for the penalty)
    kl: float           # of KL(pi_old || pi), 0 without an old policy
    entropy: float      # of H(pi(. | s))
    k1: float
    k3: float
    clipped: float
    weight: float           # of |dL_pi/dlogp_t|
    weight_outside: float   # of |dL_pi/dlogp_t| over the samples outside the clip range


#: the ``PolicySums`` a head's loss kernel starts from (plain)
NO_SUMS = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def outside_share(dlogp: np.ndarray, clipped: np.ndarray) -> float:
    """sum_{t outside} |dL/dlogp_t| / sum_t |dL/dlogp_t|: the share of the surrogate's per-sample gradient
    weight carried by samples outside the clip range (0 when every weight is 0)."""
    weight = np.abs(np.asarray(dlogp, dtype=np.float64))
    # outside / (outside + inside), not / sum(weight): NumPy sums the two subsets and the whole in other
    # orders, and only this form stays in [0, 1] and is exactly 1 when nothing inside has weight
    outside, inside = float(weight[clipped].sum()), float(weight[~clipped].sum())
    return outside / (outside + inside) if outside + inside > 0 else 0.0
