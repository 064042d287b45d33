r"""Advantages and value targets of a rollout: GAE and rewards-to-go, each a Numba kernel beside its reference.

Each kernel sits directly below its readable NumPy/Python reference (``*_reference``, the
specification), with the same signature; a public wrapper validates its input and calls the kernel;
``tests/test_advantages.py`` asserts that kernel and reference agree (to 1e-12 in float64) and checks
the closed forms below. Numba options live in ``ppo_np.jit``; every constant is an argument.
Under ``NUMBA_DISABLE_JIT=1`` every kernel runs as the plain Python function it is written as.

Rollout layout
--------------
Rollout arrays are (T, N): T steps of N environments, row t holding step t of every env (C order,
so the kernels walk contiguous rows). For step t of env n:
    r_t            reward                                      rewards[t, n]
    V(s_t)         value of the observation acted on            values[t, n]
    V(s_{t+1})     value of the true next state                 next_values[t, n]
                   (if the episode ended at t, the value of its final observation, not of the
                   reset observation that the vectorised env returns in its place)
    terminated_t   the MDP ended (goal, death): nothing follows, so no bootstrap
    truncated_t    a time limit cut the episode: the future exists, so bootstrap from V(s_{t+1})
If both flags are set, terminated wins. Either flag ends the episode: nothing after step t may
leak into the estimates at or before t.

GAE (Schulman et al. 2016, "High-dimensional continuous control using GAE")
--------------------------------------------------------------------------
    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)                 (TD error)
    A_t     = delta_t + gamma lambda (1 - terminated_t)(1 - truncated_t) A_{t+1}
with A_T = 0 past the rollout, so the last step bootstraps through V(s_T) alone. Unrolled within
an episode that runs to step t + K (its last step, or the rollout's last), with c = gamma lambda,

    A_t = sum_{k=0..K} c^k delta_{t+k},

which is the exponentially weighted mix (weights (1 - lambda) lambda^(j-1)) of the j-step
advantage estimates. lambda = 0 gives A_t = delta_t (one-step TD, low variance, biased by V);
lambda = 1 telescopes the V(s_{t+k}) terms of consecutive deltas (when next_values[t] equals
values[t + 1] inside the episode) to

    A_t = sum_{k=0..K} gamma^k r_{t+k} + gamma^{K+1} [bootstrap] V(s_{t+K+1}) - V(s_t),

the Monte-Carlo return minus the baseline ([bootstrap] = 0 at termination, 1 otherwise). The value
target is returns_t = A_t + V(s_t), the TD(lambda) return.

Rewards-to-go
-------------
The discounted return within an episode, R_t = sum_k gamma^(k-t) r_k, cut at the episode's end:
    R_t = r_t + gamma (1 - terminated_t) B_t,   B_t = V(s_{t+1})  if truncated_t or t = T - 1,
                                                B_t = R_{t+1}     otherwise.
It bootstraps from V(s_{t+1}) at truncation and at the rollout's end, never at termination. It
equals GAE's returns with lambda = 1 when next_values[t] = values[t + 1] inside every episode.

Precision: both kernels compute in float64 and store in the rewards' dtype (float32 or float64), so
float32 rollouts lose nothing to accumulation along T.

References: Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
Estimation" (2016); Schulman et al., "Proximal Policy Optimization Algorithms" (2017).
"""
from __future__ import annotations

import numbers

import numpy as np

from ppo_np.jit import jit
from ppo_np.validate import check_array, check_float_array


def _check_real(name: str, value, low: float, high: float, low_open: bool) -> float:
    """value as a float in [low, high] (or (low, high] if ``low_open``); a ValueError naming it otherwise."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in {interval}, got {value!r}")
    v = float(value)
    if not ((low < v if low_open else low <= v) and v <= high):  # also rejects nan
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def _check_rollout(rewards, next_values, terminated, truncated, values=None) -> None:
    """The (T, N) rollout arrays: floats (each float32 or float64) and bools, all of one shape."""
    check_float_array("rewards", rewards, 2)
    if values is not None:                                          # rewards_to_go has no V(s_t)
        check_float_array("values", values, 2)
    check_float_array("next_values", next_values, 2)
    check_array("terminated", terminated, 2, (np.dtype(np.bool_),), "bool")
    check_array("truncated", truncated, 2, (np.dtype(np.bool_),), "bool")
    for name, x in (("values", values), ("next_values", next_values),
                    ("terminated", terminated), ("truncated", truncated)):
        if x is not None and x.shape != rewards.shape:
            raise ValueError(f"{name} must have the shape of rewards {rewards.shape}, got {x.shape}")


# --- GAE --------------------------------------------------------------------------------------------

def gae_reference(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """The specification of ``gae_kernel``: NumPy over the N envs, a Python loop backward over T.

    See the module docstring for the recursion. Computes in float64; returns (advantages, returns),
    both (T, N) in the rewards' dtype.
    """
    r = rewards.astype(np.float64)                                  # (T, N)
    v = values.astype(np.float64)                                   # (T, N)
    nv = next_values.astype(np.float64)                             # (T, N)
    not_term = 1.0 - terminated.astype(np.float64)                  # (T, N) 1 - terminated_t
    not_done = not_term * (1.0 - truncated.astype(np.float64))      # (T, N) (1 - term_t)(1 - trunc_t)
    T, N = r.shape
    adv = np.zeros((T, N))                                          # (T, N)
    last = np.zeros(N)                                              # (N,) A_{t+1}; A_T = 0
    for t in range(T - 1, -1, -1):
        # delta_t = r_t + gamma * (1 - term_t) * V(s_{t+1}) - V(s_t)
        delta = r[t] + gamma * not_term[t] * nv[t] - v[t]           # (N,)
        # A_t = delta_t + gamma * lambda * (1 - term_t) * (1 - trunc_t) * A_{t+1}
        last = delta + gamma * gae_lambda * not_done[t] * last      # (N,)
        adv[t] = last
    return adv.astype(rewards.dtype), (adv + v).astype(rewards.dtype)


@jit
def gae_kernel(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    """``gae_reference``, otherwise identical, one element at a time: t backward, n inner (rows)."""
    T, N = rewards.shape
    adv = np.empty_like(rewards)                                    # (T, N)
    ret = np.empty_like(rewards)                                    # (T, N)
    last = np.zeros(N)                                              # (N,) A_{t+1} in float64
    c = gamma * gae_lambda
    for t in range(T - 1, -1, -1):
        for n in range(N):
            not_term = 1.0 - np.float64(terminated[t, n])
            not_done = not_term * (1.0 - np.float64(truncated[t, n]))
            v = np.float64(values[t, n])
            # delta_t = r_t + gamma * (1 - term_t) * V(s_{t+1}) - V(s_t)
            delta = np.float64(rewards[t, n]) + gamma * not_term * np.float64(next_values[t, n]) - v
            # A_t = delta_t + gamma * lambda * (1 - term_t) * (1 - trunc_t) * A_{t+1}
            a = delta + c * not_done * last[n]
            last[n] = a
            adv[t, n] = a
            ret[t, n] = a + v                                       # TD(lambda) return
    return adv, ret


def gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda):
    r"""Generalized advantage estimates and TD(lambda) returns for a (T, N) rollout.

    .. math::
        \delta_t = r_t + \gamma (1 - \mathrm{term}_t) V(s_{t+1}) - V(s_t), \qquad
        A_t = \delta_t + \gamma\lambda (1 - \mathrm{term}_t)(1 - \mathrm{trunc}_t) A_{t+1},
        \quad A_T = 0, \qquad \mathrm{returns}_t = A_t + V(s_t)

    Args:
        rewards, values, next_values: (T, N) float32 or float64; next_values[t] is V(s_{t+1}) of
            the true next state (the final observation when the episode ended at t). Finite.
        terminated, truncated: (T, N) bool; terminated stops the bootstrap, either flag stops the
            recursion (see the module docstring).
        gamma: discount in (0, 1]; gae_lambda: in [0, 1].
    Returns ``(advantages, returns)``, each (T, N) in the rewards' dtype (computed in float64).
    Checked against ``gae_reference`` and closed forms in ``tests/test_advantages.py``.
    """
    _check_rollout(rewards, next_values, terminated, truncated, values=values)
    gamma = _check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    gae_lambda = _check_real("gae_lambda", gae_lambda, 0.0, 1.0, low_open=False)
    c = np.ascontiguousarray
    return gae_kernel(c(rewards), c(values), c(next_values), c(terminated), c(truncated), gamma, gae_lambda)


# --- rewards-to-go ----------------------------------------------------------------------------------

def rewards_to_go_reference(rewards, next_values, terminated, truncated, gamma):
    """The specification of ``rewards_to_go_kernel``: NumPy over N, a Python loop backward over T.

    R_t = r_t + gamma (1 - term_t) B_t with B_t = V(s_{t+1}) if trunc_t or t = T - 1, else R_{t+1}.
    Computes in float64; returns (T, N) in the rewards' dtype.
    """
    r = rewards.astype(np.float64)                                  # (T, N)
    nv = next_values.astype(np.float64)                             # (T, N)
    not_term = 1.0 - terminated.astype(np.float64)                  # (T, N)
    T, N = r.shape
    out = np.zeros((T, N))                                          # (T, N)
    later = np.zeros(N)                                             # (N,) R_{t+1}
    for t in range(T - 1, -1, -1):
        boot = nv[t] if t == T - 1 else np.where(truncated[t], nv[t], later)  # (N,) B_t
        later = r[t] + gamma * not_term[t] * boot                   # R_t = r_t + gamma (1 - term_t) B_t
        out[t] = later
    return out.astype(rewards.dtype)


@jit
def rewards_to_go_kernel(rewards, next_values, terminated, truncated, gamma):
    """``rewards_to_go_reference``, otherwise identical, one element at a time (t backward, n inner)."""
    T, N = rewards.shape
    out = np.empty_like(rewards)                                    # (T, N)
    later = np.zeros(N)                                             # (N,) R_{t+1} in float64
    for t in range(T - 1, -1, -1):
        for n in range(N):
            if t == T - 1 or truncated[t, n]:
                boot = np.float64(next_values[t, n])                # bootstrap from V(s_{t+1})
            else:
                boot = later[n]                                     # R_{t+1}
            not_term = 1.0 - np.float64(terminated[t, n])
            rt = np.float64(rewards[t, n]) + gamma * not_term * boot  # R_t = r_t + gamma (1 - term_t) B_t
            later[n] = rt
            out[t, n] = rt
    return out


def rewards_to_go(rewards, next_values, terminated, truncated, gamma):
    r"""Discounted rewards-to-go within each episode, a Monte-Carlo value target.

    .. math:: R_t = r_t + \gamma (1 - \mathrm{term}_t) B_t,\quad
              B_t = V(s_{t+1}) \text{ if } \mathrm{trunc}_t \text{ or } t = T-1, \text{ else } R_{t+1}

    Args: as ``gae`` (rewards, next_values (T, N) float32/float64; terminated, truncated (T, N)
    bool; gamma in (0, 1]). Returns (T, N) in the rewards' dtype (computed in float64).
    Equals ``gae(..., gae_lambda=1)[1]`` when next_values[t] = values[t + 1] inside every episode.
    """
    _check_rollout(rewards, next_values, terminated, truncated)
    gamma = _check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    c = np.ascontiguousarray
    return rewards_to_go_kernel(c(rewards), c(next_values), c(terminated), c(truncated), gamma)

