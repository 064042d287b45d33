"""Parameters as named arrays *and* as one flat vector.

A parameter set is an ordered ``dict[str, np.ndarray]`` (insertion order is the vector order). The
gradient of a parameter set is a dict with the same names and shapes. Gradient checks, checkpoints
and the conjugate-gradient solver of TRPO treat a network as one vector theta; these helpers are the
only place that knows how the vector is laid out.

A network's arrays are also *stored* that way: ``pack`` puts them in one contiguous buffer, each a
view of its own stretch, so that an optimiser can update all of them in one pass over that buffer
(``contiguous_runs`` finds such stretches) instead of one call per array. The buffer starts on a
cache line (``aligned_empty``), as do the buffers of the fused minibatch step.
"""
from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]

#: bytes in a cache line, and in an AVX-512 register
CACHE_LINE = 64


def aligned_empty(shape, dtype, alignment: int = CACHE_LINE) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose first element sits on an ``alignment``-byte boundary.

    NumPy's allocator only promises 16 bytes. A compiled loop along rows of 64 float32 reads and
    writes them as whole 64-byte registers, and when the rows straddle cache lines each access costs
    two (on an AVX-512 machine the first-layer product ran twice as long, and the whole ``FusedLoss``
    step about a tenth longer). The array is a view of a slightly longer one
    of the same dtype, 1-D, so ``contiguous_runs`` sees the views of a packed buffer as one run.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    spare = -(-alignment // dtype.itemsize)                 # elements enough to reach the next boundary
    raw = np.empty(size + spare, dtype)                     # NumPy aligns raw to at least its itemsize
    start = (-raw.ctypes.data % alignment) // dtype.itemsize
    return raw[start:start + size].reshape(shape)


def aligned_zeros(shape, dtype, alignment: int = CACHE_LINE) -> np.ndarray:
    """``np.zeros(shape, dtype)`` on an ``alignment``-byte boundary (``aligned_empty``, filled with 0)."""
    out = aligned_empty(shape, dtype, alignment)
    out.fill(0)
    return out


def num_params(params: Params) -> int:
    """Total number of scalars in the set."""
    return sum(p.size for p in params.values())


def flatten(params: Params) -> np.ndarray:
    """theta = concat(ravel(p) for p in params.values()), a new (num_params,) array."""
    if not params:
        return np.zeros(0)
    return np.concatenate([p.ravel() for p in params.values()])


def assign_flat(params: Params, theta: np.ndarray) -> None:
    """Write the vector theta back into the arrays of ``params``, in place.

    In place matters: optimisers and the actor hold references to these same arrays.
    """
    theta = np.asarray(theta)
    expected = num_params(params)
    if theta.shape != (expected,):
        raise ValueError(f"flat parameter vector must have shape ({expected},), got {theta.shape}")
    offset = 0
    for p in params.values():
        p[...] = theta[offset:offset + p.size].reshape(p.shape)
        offset += p.size


def unflatten(theta: np.ndarray, like: Params) -> Params:
    """A new dict shaped like ``like`` holding the entries of theta (for gradients as vectors)."""
    out = {name: np.empty_like(p) for name, p in like.items()}
    assign_flat(out, theta)
    return out


def pack(params: Params) -> Params:
    """The same values in one new contiguous buffer: a dict of views of it, same names, shapes, order.

    All arrays must share one dtype. The buffer is ``contiguous_runs(packed.values())[0]``.
    """
    dtypes = {p.dtype for p in params.values()}
    if len(dtypes) > 1:
        raise ValueError(f"pack needs arrays of one dtype, got {sorted(str(d) for d in dtypes)}")
    buffer = aligned_empty(num_params(params), dtypes.pop() if dtypes else np.float64)
    packed = views_of(buffer, params)
    for name, p in params.items():
        packed[name][...] = p
    return packed


def views_of(flat: np.ndarray, like: Params) -> Params:
    """Views of the vector ``flat`` named and shaped like ``like``, in the layout of ``flatten``."""
    views, offset = {}, 0
    for name, p in like.items():
        views[name] = flat[offset:offset + p.size].reshape(p.shape)
        offset += p.size
    return views


def contiguous_runs(arrays) -> list[np.ndarray]:
    """1-D views covering the arrays in order, one per maximal run of arrays that lie back to back in
    one 1-D buffer (as ``pack`` lays them out); an array that does not continue the previous one
    starts a new run, an empty one is skipped. Every array must be C-contiguous.
    """
    runs: list[np.ndarray] = []
    previous_end, previous_owner = None, None
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("contiguous_runs needs C-contiguous arrays")
        if a.size == 0:  # holds nothing, and its data pointer need not lie where its neighbours end
            continue
        owner = a.base if a.base is not None else a
        start = a.__array_interface__["data"][0]
        if runs and owner is previous_owner and owner.ndim == 1 and start == previous_end and a.dtype == runs[-1].dtype:
            runs[-1] = _extend(runs[-1], a.size)
        else:
            runs.append(a.reshape(-1))
        previous_end, previous_owner = start + a.nbytes, owner
    return runs


def _extend(run: np.ndarray, n: int) -> np.ndarray:
    """The 1-D view ``run`` made n elements longer, in the buffer that owns it."""
    owner = run.base if run.base is not None else run
    offset = (run.__array_interface__["data"][0] - owner.__array_interface__["data"][0]) // run.itemsize
    return owner[offset:offset + run.size + n]
