"""Input checks shared by the public wrappers of the kernels (``advantages``, ``ratios``).

Each returns its argument when it is acceptable and otherwise raises a ValueError whose message
starts with the argument's name and says what is allowed, so a caller can tell which input was bad.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_array(name: str, x, ndim: int, dtypes, allowed: str) -> np.ndarray:
    """x itself; a ValueError names it unless it is an ndarray with ``ndim`` axes and a dtype in ``dtypes``."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype {allowed}, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {x.ndim}-D with shape {x.shape}")
    return x


def check_float_array(name: str, x, ndim: int) -> np.ndarray:
    """x itself, if a float32/float64 array with ``ndim`` axes; a ValueError naming it otherwise."""
    return check_array(name, x, ndim, FLOAT_DTYPES, "float32 or float64")
