r"""Numba kernels for the PPO rollout and update: GAE, rewards-to-go, shuffling, gathers, ratios.

Each kernel sits directly below its readable NumPy/Python reference (``*_reference``, the
specification), with the same signature; a public wrapper validates its input and calls the kernel;
``tests/test_kernels.py`` asserts that kernel and reference agree (to 1e-12 in float64). Numba
options live in ``ppo_np.jit``; every constant is an argument, never a module global.

Running without JIT: ``NUMBA_DISABLE_JIT=1 python ...`` turns every kernel into the plain Python
function it is written as (slow, but debuggable and coverable); the tests pass both ways, and the
shuffles are the same both ways (see "Minibatch shuffling").

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

Minibatch shuffling
-------------------
Each epoch draws a permutation of the B = T N samples and cuts it into minibatches of
``minibatch_size`` in order; if minibatch_size does not divide B the last minibatch is the smaller
remainder (no sample is ever dropped). The permutation is Fisher-Yates driven by Numba's own
Mersenne Twister, seeded inside the kernel. Numba's RNG is not NumPy's: it is a separate, per-thread
state that ``np.random.seed`` outside jitted code does not touch, so the kernel seeds it explicitly
on every call. Seeds come from ``epoch_seed(run_seed, update, epoch)`` (splitmix64), so a resumed
run reproduces its shuffles with no RNG state to save. The draw j = floor(u (i + 1)) uses only
u = np.random.random() (53-bit, the same algorithm in Numba and in NumPy's legacy MT19937 after the
same 32-bit seed), which makes the kernel agree exactly with ``permutation_reference`` (a
``np.random.RandomState``) and with itself under ``NUMBA_DISABLE_JIT=1``. The floor's bias is
below (i + 1) / 2^53.

Importance ratios
-----------------
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

Precision: every kernel computes in float64 and stores in its output's dtype (float32 or float64),
so float32 rollouts lose nothing to accumulation along T.

References: Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
Estimation" (2016); Schulman et al., "Proximal Policy Optimization Algorithms" (2017); J. Schulman,
"Approximating KL Divergence" (2020); S. Vigna, splitmix64 (2015); Durstenfeld, Algorithm 235 (1964).
"""
from __future__ import annotations

import math
import numbers

import numba
from numba import literal_unroll
import numpy as np

from ppo_np.jit import jit
from ppo_np.params import aligned_empty

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --- validation -------------------------------------------------------------------------------------

def _check_array(name: str, x, ndim: int, dtypes, allowed: str) -> np.ndarray:
    """x itself; a ValueError names it unless it is an ndarray with ``ndim`` axes and a dtype in ``dtypes``."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype {allowed}, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {x.ndim}-D with shape {x.shape}")
    return x


def _check_float_array(name: str, x, ndim: int) -> np.ndarray:
    """x itself, if a float32/float64 array with ``ndim`` axes; a ValueError naming it otherwise."""
    return _check_array(name, x, ndim, FLOAT_DTYPES, "float32 or float64")


def _check_same(name: str, x: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    """A ValueError unless x has the shape and dtype of ref."""
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {ref.shape}, got {x.shape}")
    if x.dtype != ref.dtype:
        raise ValueError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")


def _check_real(name: str, value, low: float, high: float, low_open: bool) -> float:
    """value as a float in [low, high] (or (low, high] if ``low_open``); a ValueError naming it otherwise."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in {interval}, got {value!r}")
    v = float(value)
    if not ((low < v if low_open else low <= v) and v <= high):  # also rejects nan
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def _check_int(name: str, value, low: int) -> int:
    """value as an int >= low; a ValueError naming it otherwise (bools and floats are refused)."""
    if type(value) is int and value >= low:  # the common case, without the ABC check's ~2 us
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_rollout(rewards, next_values, terminated, truncated, values=None) -> None:
    """The (T, N) rollout arrays: floats (each float32 or float64) and bools, all of one shape."""
    _check_float_array("rewards", rewards, 2)
    if values is not None:                                          # rewards_to_go has no V(s_t)
        _check_float_array("values", values, 2)
    _check_float_array("next_values", next_values, 2)
    _check_array("terminated", terminated, 2, (np.dtype(np.bool_),), "bool")
    _check_array("truncated", truncated, 2, (np.dtype(np.bool_),), "bool")
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
    Checked against ``gae_reference`` and closed forms in ``tests/test_kernels.py``.
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


# --- seeds and minibatch shuffling ------------------------------------------------------------------

def _splitmix64(x: int) -> int:
    """One splitmix64 step (Vigna): a bijection of 64-bit integers with strong avalanche."""
    mask = 0xFFFFFFFFFFFFFFFF
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def epoch_seed(run_seed: int, update: int, epoch: int) -> int:
    """A seed for one epoch's shuffle, a pure function of (run_seed, update, epoch).

    splitmix64(splitmix64(splitmix64(run_seed) ^ update) ^ epoch) >> 1: each integer is mixed in
    turn, so neighbouring (update, epoch) pairs give unrelated seeds, and the result lies in
    [0, 2^63) (safe as a signed 64-bit integer). A resumed run recomputes it: no RNG state to save.
    All three arguments are integers >= 0 and below 2^64.
    """
    run_seed = _check_int("run_seed", run_seed, 0)
    update = _check_int("update", update, 0)
    epoch = _check_int("epoch", epoch, 0)
    for name, value in (("run_seed", run_seed), ("update", update), ("epoch", epoch)):
        if value >= 1 << 64:
            raise ValueError(f"{name} must be below 2**64, got {value}")
    return _splitmix64(_splitmix64(_splitmix64(run_seed) ^ update) ^ epoch) >> 1


def _seed32(seed: int) -> int:
    """Fold a 64-bit seed into the 32 bits that Mersenne Twister seeding takes (high xor low)."""
    return (seed ^ (seed >> 32)) & 0xFFFFFFFF


def permutation_reference(n: int, seed32: int) -> np.ndarray:
    """The specification of ``permutation_kernel``: Fisher-Yates with NumPy's legacy MT19937.

    For i = n-1 .. 1: draw u in [0, 1), j = floor(u (i + 1)) in {0..i}, swap perm[i], perm[j].
    """
    rng = np.random.RandomState(seed32)                             # MT19937, init_genrand(seed32)
    perm = np.arange(n, dtype=np.int64)                             # (n,)
    for i in range(n - 1, 0, -1):
        j = int(rng.random_sample() * (i + 1))                      # uniform on {0, ..., i}
        perm[i], perm[j] = perm[j], perm[i]
    return perm


@jit
def permutation_kernel(n, seed32):
    """``permutation_reference`` on Numba's own MT19937, seeded here (it is not NumPy's state)."""
    np.random.seed(seed32)                                          # Numba's per-thread RNG
    perm = np.empty(n, dtype=np.int64)                              # (n,)
    for i in range(n):
        perm[i] = i
    for i in range(n - 1, 0, -1):
        j = int(np.random.random() * (i + 1))                       # uniform on {0, ..., i}
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp
    return perm


def permutation(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of 0..n-1 (int64, (n,)), a pure function of (n, seed).

    ``seed`` is an integer in [0, 2^64) (e.g. from ``epoch_seed``); its two 32-bit halves are
    xor-ed into the 32-bit seed of Numba's Mersenne Twister. The result is the same compiled or
    under ``NUMBA_DISABLE_JIT=1`` (where NumPy's global legacy RNG, which the plain-Python kernel
    then seeds, is saved and restored around the call).
    """
    n = _check_int("n", n, 0)
    seed = _check_int("seed", seed, 0)
    if seed >= 1 << 64:
        raise ValueError(f"seed must be below 2**64, got {seed}")
    if numba.config.DISABLE_JIT:
        state = np.random.get_state()                               # the kernel is plain Python:
        try:                                                        # keep NumPy's global RNG intact
            return permutation_kernel(n, _seed32(seed))
        finally:
            np.random.set_state(state)
    return permutation_kernel(n, _seed32(seed))


def minibatch_slices(n: int, minibatch_size: int) -> list[slice]:
    """Consecutive slices cutting range(n) into minibatches of ``minibatch_size``, in order.

    If minibatch_size does not divide n, the last slice is the smaller remainder; if
    minibatch_size >= n there is one slice of all n. No index is ever dropped.
    """
    n = _check_int("n", n, 1)
    minibatch_size = _check_int("minibatch_size", minibatch_size, 1)
    return [slice(start, min(start + minibatch_size, n)) for start in range(0, n, minibatch_size)]


def minibatch_indices(n: int, minibatch_size: int, seed: int) -> list[np.ndarray]:
    """One epoch's minibatches: ``permutation(n, seed)`` cut by ``minibatch_slices(n, minibatch_size)``.

    Returns a list of int64 index arrays (contiguous views of one permutation) that partition
    0..n-1; all have length minibatch_size except possibly the last (the remainder).
    """
    slices = minibatch_slices(n, minibatch_size)
    perm = permutation(n, seed)                                     # (n,)
    return [perm[s] for s in slices]


# --- gathering minibatch rows -----------------------------------------------------------------------

def gather_rows_reference(src, idx, out):
    """The specification of the gather kernels: out[k] = src[idx[k]] for every k; returns out."""
    out[...] = src[idx]
    return out


@jit
def gather_rows_1d_kernel(src, idx, out):
    """``gather_rows_reference`` for 1-D src: out[k] = src[idx[k]]."""
    for k in range(idx.shape[0]):
        out[k] = src[idx[k]]
    return out


@jit
def gather_rows_2d_kernel(src, idx, out):
    """``gather_rows_reference`` for 2-D src: row k of out is row idx[k] of src."""
    D = src.shape[1]
    for k in range(idx.shape[0]):
        i = idx[k]
        for d in range(D):
            out[k, d] = src[i, d]
    return out


def gather_rows(src, idx, out):
    """Copy the rows src[idx] into the preallocated ``out`` and return it (no allocation).

    Shapes: src (M,) or (M, D), any numeric or bool dtype; idx (B,) integers in [0, M) (converted
    to int64 if need be; negative indices are refused); out (B,) or (B, D), src's dtype,
    C-contiguous and writeable.
    """
    if not isinstance(src, np.ndarray) or src.ndim not in (1, 2):
        raise ValueError(f"src must be a 1-D or 2-D numpy array, got {getattr(src, 'shape', type(src).__name__)}")
    if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"idx must be a 1-D integer numpy array, got {getattr(idx, 'dtype', type(idx).__name__)}"
                         f" with shape {getattr(idx, 'shape', None)}")
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    want = (idx.shape[0],) + src.shape[1:]
    if out.shape != want:
        raise ValueError(f"out must have shape (len(idx),) + src.shape[1:] = {want}, got {out.shape}")
    if out.dtype != src.dtype:
        raise ValueError(f"out must have the dtype of src ({src.dtype}), got {out.dtype}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable")
    if idx.shape[0] > 0:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= src.shape[0]:
            raise ValueError(f"idx must lie in [0, {src.shape[0]}), got values in [{lo}, {hi}]")
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if src.ndim == 1:
        return gather_rows_1d_kernel(src, idx, out)
    return gather_rows_2d_kernel(src, idx, out)


class MinibatchGatherer:
    """Gather the same rows of several flat rollout arrays into buffers allocated once.

    The update loop gathers every field of a minibatch with one index array, hundreds of times per
    rollout. ``gather_rows`` checks all of its arguments on every call (10 us, against 1.3 us for
    the kernel itself); here the sources and buffers are checked once, at construction, and each
    call is one compiled pass (``gather_minibatch_kernel``) that checks the indices and copies the
    rows of every field: measured 3.7 us for the seven fields of a 64-row minibatch, against 9.9 us
    for seven ``gather_rows_*_kernel`` calls (best of 5).

    Args:
        sources: 1-D or 2-D C-contiguous arrays with the same number of rows M.
        max_rows: the largest minibatch; buffers hold this many rows, a call may ask for fewer.
    Calling it with idx (B,) int64 in [0, M), B <= max_rows, returns views of the buffers holding
    src[idx] for every source, valid until the next call.
    """

    def __init__(self, sources, max_rows: int):
        max_rows = _check_int("max_rows", max_rows, 1)
        self.sources = tuple(sources)
        if not self.sources:
            raise ValueError("MinibatchGatherer needs at least one source array")
        for k, src in enumerate(self.sources):
            if not isinstance(src, np.ndarray) or src.ndim not in (1, 2) or not src.flags.c_contiguous:
                raise ValueError(f"source {k} must be a 1-D or 2-D C-contiguous numpy array")
        rows = {src.shape[0] for src in self.sources}
        if len(rows) > 1:
            raise ValueError(f"sources must have the same number of rows, got {sorted(rows)}")
        self.n_rows = rows.pop()
        self.buffers = tuple(aligned_empty((max_rows, *src.shape[1:]), src.dtype) for src in self.sources)
        # every field as (M, D) rows, 1-D ones as D = 1, so that one kernel body copies them all
        self._pairs = tuple((src, buf) if src.ndim == 2 else (src[:, None], buf[:, None])
                            for src, buf in zip(self.sources, self.buffers))
        self._views: dict[int, tuple] = {}               # B -> the buffers' first B rows

    def __call__(self, idx: np.ndarray) -> tuple:
        if not (isinstance(idx, np.ndarray) and idx.ndim == 1 and idx.dtype == np.int64):
            raise ValueError(f"idx must be a 1-D int64 numpy array, got {getattr(idx, 'dtype', type(idx).__name__)}")
        B = idx.shape[0]
        if B > self.buffers[0].shape[0]:
            raise ValueError(f"idx has {B} rows, more than the buffers' {self.buffers[0].shape[0]}")
        idx = np.ascontiguousarray(idx)
        if not gather_minibatch_kernel(self._pairs, idx, self.n_rows):
            raise ValueError(f"idx must lie in [0, {self.n_rows}), got values in [{int(idx.min())}, {int(idx.max())}]")
        views = self._views.get(B)
        if views is None:
            views = self._views[B] = tuple(buf[:B] for buf in self.buffers)
        return views


def gather_minibatch_reference(pairs, idx, n):
    """The specification of ``gather_minibatch_kernel``: every (src, out) pair gets out[:B] = src[idx],
    unless an index lies outside [0, n) (then nothing is copied and the answer is False)."""
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        return False
    for src, out in pairs:
        out[:idx.shape[0]] = src[idx]
    return True


@jit
def gather_minibatch_kernel(pairs, idx, n):
    """For every (src (M, D), out (>= B, D)) in ``pairs``: out[k] = src[idx[k]] for k < B, after checking
    that every idx[k] lies in [0, n) (returns False, copying nothing, when one does not).

    ``pairs`` may mix dtypes (``literal_unroll`` compiles the body once per pair type).
    Checked by ``tests/test_kernels.py::test_gather_minibatch_kernel_matches_its_reference``.
    """
    B = idx.shape[0]
    for k in range(B):
        if idx[k] < 0 or idx[k] >= n:
            return False
    for pair in literal_unroll(pairs):
        gather_rows_2d_kernel(pair[0], idx, pair[1])      # out may hold more rows than B: the first B are written
    return True


# --- importance ratios ------------------------------------------------------------------------------

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
    _check_float_array("logp_new", logp_new, 1)
    _check_float_array("logp_old", logp_old, 1)
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
