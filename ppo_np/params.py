"""Parameters as named arrays *and* as one flat vector.

A parameter set is an ordered ``dict[str, np.ndarray]`` (insertion order is the vector order). The
gradient of a parameter set is a dict with the same names and shapes. Gradient checks, checkpoints
and the conjugate-gradient solver of TRPO treat a network as one vector theta; these helpers are the
only place that knows how the vector is laid out.
"""
from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


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
