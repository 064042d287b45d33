r"""Layers as pure functions: ``y, cache = *_forward(x, ...)``, ``grads = *_backward(dy, cache)``.

Notation: a minibatch is a matrix x of shape (B, n) (B samples, n features). For a scalar loss L we
write dy = dL/dy for the upstream gradient, same shape as y, and return dx = dL/dx and the parameter
gradients. Nothing here keeps state or changes a parameter: backward only computes gradients, so the
caller can clip them globally before any optimiser sees them.

Linear, y = x W + b with W of shape (n, m):
    y_{bj} = \sum_i x_{bi} W_{ij} + b_j
    dL/dW_{ij} = \sum_b x_{bi} dy_{bj}      ->  dW = x^T dy        (n, m)
    dL/db_j    = \sum_b dy_{bj}             ->  db = 1^T dy        (m,)
    dL/dx_{bi} = \sum_j dy_{bj} W_{ij}      ->  dx = dy W^T        (B, n)

Elementwise activations, y = f(x), dx = dy * f'(x):
    tanh:     f'(x) = 1 - tanh(x)^2 = 1 - y^2   (so the cache keeps y, not x)
    ReLU:     f'(x) = 1[x > 0]                  (the cache keeps the mask; f'(0) := 0)
    identity: f'(x) = 1

Orthogonal initialisation (Saxe et al. 2014): W has orthonormal columns (n >= m) or rows (n < m),
scaled by a gain, so that W^T W = gain^2 I (or W W^T = gain^2 I).

Each derivative is checked by central differences in ``tests/test_layers.py``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LinearCache(NamedTuple):
    """What ``linear_backward`` needs: the input x (for dW = x^T dy) and W (for dx = dy W^T)."""

    x: np.ndarray
    W: np.ndarray


class TanhCache(NamedTuple):
    """tanh keeps its output y because dx = dy * (1 - y^2)."""

    y: np.ndarray


class ReluCache(NamedTuple):
    """ReLU keeps the mask 1[x > 0] because dx = dy * 1[x > 0]."""

    mask: np.ndarray


class IdentityCache(NamedTuple):
    """The identity needs nothing: dx = dy."""


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, LinearCache]:
    """y = x W + b.

    Shapes: x (B, n), W (n, m), b (m,) -> y (B, m).
    """
    return x @ W + b, LinearCache(x, W)


def linear_backward(dy: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of y = x W + b.

    .. math:: dx = dy\,W^T,\qquad dW = x^T dy,\qquad db = \textstyle\sum_b dy_{b\cdot}

    Shapes: dy (B, m) -> dx (B, n), dW (n, m), db (m,).
    Checked by ``tests/test_layers.py::test_linear_gradients``.
    """
    x, W = cache
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, TanhCache]:
    """y = tanh(x), elementwise; any shape."""
    y = np.tanh(x)
    return y, TanhCache(y)


def tanh_backward(dy: np.ndarray, cache: TanhCache) -> np.ndarray:
    r"""dx = dy * (1 - y^2), since d tanh(x)/dx = 1 - tanh(x)^2.

    Shapes: dy and dx as y. Checked by ``tests/test_layers.py::test_activation_gradients``.
    """
    return dy * (1.0 - cache.y * cache.y)


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    """y = max(x, 0), elementwise; any shape."""
    mask = x > 0
    return x * mask, ReluCache(mask)


def relu_backward(dy: np.ndarray, cache: ReluCache) -> np.ndarray:
    r"""dx = dy * 1[x > 0] (the subgradient 0 is taken at the kink x = 0).

    Shapes: dy and dx as y. Checked by ``tests/test_layers.py::test_activation_gradients``.
    """
    return dy * cache.mask


def identity_forward(x: np.ndarray) -> tuple[np.ndarray, IdentityCache]:
    """y = x."""
    return x, IdentityCache()


def identity_backward(dy: np.ndarray, cache: IdentityCache) -> np.ndarray:
    """dx = dy. Checked by ``tests/test_layers.py::test_activation_gradients``."""
    return dy


class Activation(NamedTuple):
    """A forward/backward pair, looked up by name in ``ACTIVATIONS``."""

    forward: object
    backward: object


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(tanh_forward, tanh_backward),
    "relu": Activation(relu_forward, relu_backward),
    "identity": Activation(identity_forward, identity_backward),
}


def activation(name: str) -> Activation:
    """The activation called ``name``; a ValueError lists the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}") from None


def orthogonal(shape: tuple[int, int], gain: float, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """A (n, m) matrix with W^T W = gain^2 I if n >= m, else W W^T = gain^2 I.

    QR of a standard normal matrix, with the signs of R's diagonal folded into Q so that Q is drawn
    uniformly (Haar) from the orthogonal matrices rather than biased by the QR convention.
    """
    n, m = shape
    if n < 1 or m < 1:
        raise ValueError(f"orthogonal init needs a shape of positive sizes, got {shape}")
    a = rng.standard_normal((max(n, m), min(n, m)))  # tall: QR gives orthonormal columns
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # (max, min) * (min,)
    if n < m:
        q = q.T
    return np.ascontiguousarray(gain * q, dtype=dtype)
