r"""Importance ratios of a minibatch and PPO's debug statistics (clip fraction, two KL estimates).

For B samples with log-probabilities logp_old (under the policy that collected them) and logp_new
(under the current policy), with d = logp_new - logp_old:

    ratio        = exp(d)                             r_i = pi_new(a_i|s_i) / pi_old(a_i|s_i)
    clip_frac    = mean(|ratio - 1| > clip_eps)       share of samples the clipped objective clips
    approx_kl_k1 = mean(-d) = mean(logp_old - logp_new)
    approx_kl_k3 = mean((ratio - 1) - log ratio) = mean(expm1(d) - d)

k1 and k3 are Schulman's estimators of KL(pi_old || pi_new) from samples of pi_old: k1 is unbiased
but noisy and can be negative; k3 is unbiased too and never negative, because e^d >= 1 + d. It is
computed as expm1(d) - d so that the inequality survives rounding: expm1 is accurate for small d
and, with d exactly representable, a faithfully rounded expm1(d) is >= d.

``importance_ratios_reference`` (NumPy, the specification) sits directly above the one-pass Numba
kernel, with the same signature; the public ``importance_ratios`` validates its input and calls the
kernel; ``tests/test_ratios.py`` asserts that they agree and checks the identities above.

References: Schulman et al., "Proximal Policy Optimization Algorithms" (2017); J. Schulman,
"Approximating KL Divergence" (2020).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ppo_np.jit import jit
from ppo_np.validate import check_float_array


def _check_same(name: str, x: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    """A ValueError unless x has the shape and dtype of ref."""
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {ref.shape}, got {x.shape}")
    if x.dtype != ref.dtype:
        raise ValueError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")


def importance_ratios_reference(logp_new: np.ndarray, logp_old: np.ndarray, clip_eps: float):
    """The specification of ``importance_ratios_kernel``, in NumPy (see the module docstring).

    Statistics are taken in float64; ``ratio`` is returned in the inputs' dtype, and the clip
    fraction counts the returned ratios.
    """
    d = logp_new.astype(np.float64) - logp_old.astype(np.float64)      # (B,) log r
    ratio = np.exp(d).astype(logp_new.dtype)                             # (B,) r = exp(d)
    clip_frac = np.mean(np.abs(ratio.astype(np.float64) - 1.0) > clip_eps)
    approx_kl_k1 = np.mean(-d)                                           # mean(logp_old - logp_new)
    approx_kl_k3 = np.mean(np.expm1(d) - d)                              # mean((r - 1) - log r)
    return ratio, float(clip_frac), float(approx_kl_k1), float(approx_kl_k3)


@jit
def importance_ratios_kernel(logp_new, logp_old, clip_eps):
    """``importance_ratios_reference`` in one pass; returns (ratio, clip_frac, k1, k3)."""
    n = logp_new.shape[0]
    ratio = np.empty_like(logp_new)                                      # (B,)
    n_clipped = 0
    sum_k1 = 0.0
    sum_k3 = 0.0
    for i in range(n):
        d = np.float64(logp_new[i]) - np.float64(logp_old[i])            # log r_i
        ratio[i] = math.exp(d)                                           # r_i, cast to the dtype
        if abs(np.float64(ratio[i]) - 1.0) > clip_eps:                   # 1[|r_i - 1| > eps]
            n_clipped += 1
        sum_k1 -= d                                                      # logp_old - logp_new
        sum_k3 += math.expm1(d) - d                                      # (r_i - 1) - log r_i
    return ratio, n_clipped / n, sum_k1 / n, sum_k3 / n


def importance_ratios(logp_new: np.ndarray, logp_old: np.ndarray, clip_eps: float):
    r"""Importance ratios and the PPO debug statistics, in one pass.

    .. math:: r_i = e^{d_i},\quad d_i = \log\pi_{new}(a_i|s_i) - \log\pi_{old}(a_i|s_i)

    Returns ``(ratio, clip_frac, approx_kl_k1, approx_kl_k3)``:
        ratio         (B,) array, dtype of the inputs: exp(logp_new - logp_old)
        clip_frac     float: mean(|ratio - 1| > clip_eps), counted on the returned ratios
        approx_kl_k1  float: mean(logp_old - logp_new)
        approx_kl_k3  float: mean((ratio - 1) - log ratio), >= 0 (computed as expm1(d) - d)
    The floats are accumulated in float64.

    Shapes: logp_new, logp_old (B,), same float32/float64 dtype, B >= 1; clip_eps > 0 and finite.
    """
    check_float_array("logp_new", logp_new, 1)
    check_float_array("logp_old", logp_old, 1)
    _check_same("logp_old", logp_old, "logp_new", logp_new)
    if logp_new.shape[0] == 0:
        raise ValueError("logp_new must hold at least one sample, got shape (0,)")
    if isinstance(clip_eps, bool) or not isinstance(clip_eps, numbers.Real) \
            or not (float(clip_eps) > 0 and math.isfinite(clip_eps)):
        raise ValueError(f"clip_eps must be a finite real number > 0, got {clip_eps!r}")
    clip_eps = float(clip_eps)
    ratio, clip_frac, k1, k3 = importance_ratios_kernel(
        np.ascontiguousarray(logp_new), np.ascontiguousarray(logp_old), clip_eps)
    return ratio, float(clip_frac), float(k1), float(k3)
