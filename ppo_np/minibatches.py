r"""Minibatches of one update: per-epoch seeds, a Numba shuffle, the cut into minibatches, and the gather.

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

Gathering
---------
The update loop copies the same rows of every per-sample field (observations, actions, old
log-probabilities, advantages, ...) into one minibatch, hundreds of times per rollout.
``MinibatchGatherer`` checks its sources and allocates its buffers once; each call is then one
compiled pass (``gather_minibatch_kernel``) that checks the indices and copies the rows of every
field, instead of one checked call per field.

Each kernel sits directly below its readable NumPy/Python reference (``*_reference``), with the same
signature; ``tests/test_minibatches.py`` asserts that they agree.

References: S. Vigna, splitmix64 (2015); Durstenfeld, Algorithm 235 (1964).
"""
from __future__ import annotations

import numbers

import numba
from numba import literal_unroll
import numpy as np

from ppo_np.jit import jit
from ppo_np.params import aligned_empty


def _check_int(name: str, value, low: int) -> int:
    """value as an int >= low; a ValueError naming it otherwise (bools and floats are refused)."""
    if type(value) is int and value >= low:  # the common case, without the slower ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


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


def epoch_minibatches(rows: np.ndarray, minibatch_size: int, run_seed: int, update: int, epochs: int):
    """For each epoch e = 0 .. epochs-1 of one update, the list of its minibatches of ``rows``.

    Epoch e shuffles ``rows`` (the indices of the samples to learn from, (n,) with n >= 1) by
    ``minibatch_indices(n, minibatch_size, epoch_seed(run_seed, update, e))``: each minibatch is an
    array of entries of ``rows``, and an epoch's minibatches partition them. Each epoch is shuffled
    when it is reached, so a caller that stops early (PPO's KL stop) draws no more shuffles.
    """
    if not (isinstance(rows, np.ndarray) and rows.ndim == 1 and rows.dtype.kind in "iu" and rows.size):
        raise ValueError(f"rows must be a non-empty 1-D integer numpy array, got "
                         f"{getattr(rows, 'dtype', type(rows).__name__)} with shape {getattr(rows, 'shape', None)}")
    _check_int("minibatch_size", minibatch_size, 1)
    epochs = _check_int("epochs", epochs, 0)
    slices = minibatch_slices(rows.size, minibatch_size)
    return ([order[s] for s in slices] for order in (epoch_order(rows, run_seed, update, e) for e in range(epochs)))


def epoch_order(rows: np.ndarray, run_seed: int, update: int, epoch: int) -> np.ndarray:
    """``rows`` in epoch ``epoch``'s shuffled order, which ``epoch_minibatches`` cuts into its minibatches:
    rows[permutation(n, epoch_seed(run_seed, update, epoch))]."""
    return rows[permutation(rows.size, epoch_seed(run_seed, update, epoch))]


# --- gathering minibatch rows -----------------------------------------------------------------------

class MinibatchGatherer:
    """Gather the same rows of several flat rollout arrays into buffers allocated once.

    The sources and buffers are checked once, at construction, since checking them on every call
    would cost more than the copy; each call is one compiled pass (``gather_minibatch_kernel``)
    that checks the indices and copies the rows of every field.

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


@jit
def gather_rows_2d_kernel(src, idx, out):
    """Row k of out becomes row idx[k] of src, for k < len(idx): the copy ``gather_minibatch_kernel``
    makes for each of its fields (specified, with it, by ``gather_minibatch_reference``)."""
    D = src.shape[1]
    for k in range(idx.shape[0]):
        i = idx[k]
        for d in range(D):
            out[k, d] = src[i, d]
    return out


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
    Checked by ``tests/test_minibatches.py::test_gather_minibatch_kernel_matches_its_reference``.
    """
    B = idx.shape[0]
    for k in range(B):
        if idx[k] < 0 or idx[k] >= n:
            return False
    for pair in literal_unroll(pairs):
        gather_rows_2d_kernel(pair[0], idx, pair[1])      # out may hold more rows than B: the first B are written
    return True

