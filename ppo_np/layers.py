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

from ppo_np.jit import jit


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
    """y = tanh(x), elementwise; any shape. float32 goes through ``tanh_float32_kernel``."""
    if x.dtype == np.float32 and x.flags.c_contiguous:
        y = tanh_float32_kernel(x, np.empty_like(x), TANH_FLOAT32)
    else:
        y = np.tanh(x)
    return y, TanhCache(y)


# Odd rational approximation of tanh on [-c, c], c = 7.9053111 (beyond it tanh rounds to +-1 in
# float32): tanh(x) ~ x P(x^2) / Q(x^2), deg P = 6, deg Q = 3, the coefficients of Eigen's
# generic_fast_tanh_float. Max abs error 3e-7 against float64 tanh, a few float32 ulps; float64
# arrays keep np.tanh, so gradient checks (float64) see the exact function.
TANH_FLOAT32 = np.array([
    7.90531110763549805,                                                  # c, the clamp
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,   # P, highest degree first
    5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03,  # Q
], dtype=np.float32)


@jit
def tanh_rational(v, k):
    """tanh(v) ~ v P(v^2) / Q(v^2), v clamped to [-k[0], k[0]]; ``k`` is ``TANH_FLOAT32``."""
    c = k[0]
    v = c if v > c else v           # branch-free selects: NaN passes through both
    v = -c if v < -c else v
    v2 = v * v
    p = ((((((k[1] * v2 + k[2]) * v2 + k[3]) * v2 + k[4]) * v2 + k[5]) * v2 + k[6]) * v2 + k[7]) * v
    q = ((k[8] * v2 + k[9]) * v2 + k[10]) * v2 + k[11]
    return p / q


@jit
def tanh_float32_kernel(x, out, k):
    """out = tanh_rational(x) elementwise; np.tanh is its reference.

    A loop LLVM vectorises (strict IEEE, no fastmath), where NumPy's float32 tanh runs one entry at a
    time.
    Checked by ``tests/test_layers.py::test_tanh_float32_kernel_matches_numpy``.
    """
    n = x.size
    flat_x, flat_out = x.reshape(n), out.reshape(n)
    for i in range(n):
        flat_out[i] = tanh_rational(flat_x[i], k)
    return out


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


# --- the same activations inside compiled kernels ---------------------------------------------------

#: how a compiled kernel names each activation of ``ACTIVATIONS``
ACTIVATION_CODES = {"identity": 0, "tanh": 1, "relu": 2}


class CompiledActivation(NamedTuple):
    """An activation as the compiled kernels take it.

    code: ``ACTIVATION_CODES[name]``; rational_tanh: tanh is ``tanh_rational`` (float32 networks, as
    ``tanh_forward`` does for float32 arrays) rather than np.tanh; tanh_coeffs: ``TANH_FLOAT32``.
    """

    code: int
    rational_tanh: bool
    tanh_coeffs: np.ndarray


def compiled_activation(name: str, dtype) -> CompiledActivation:
    """The ``CompiledActivation`` of activation ``name`` for arrays of ``dtype``."""
    activation(name)  # a ValueError for an unknown name
    return CompiledActivation(ACTIVATION_CODES[name], np.dtype(dtype) == np.float32, TANH_FLOAT32)


@jit
def activate(v, act):
    """f(v) for one entry, ``act`` a ``CompiledActivation``: ``tanh_forward``, ``relu_forward`` or ``identity_forward`` (their references).

    ReLU is v * 1[v > 0] as in ``relu_forward``, so NaN and -inf give NaN in both. Every constant is
    a float32, so f(v) keeps v's precision: Numba types a Python int or float beside a float32 as
    float64, and one such constant makes a whole float32 loop convert both ways.
    """
    code, rational_tanh, tanh_coeffs = act
    if code == 1:
        return tanh_rational(v, tanh_coeffs) if rational_tanh else np.tanh(v)
    if code == 2:
        return v if v > 0 else v * np.float32(0)
    return v


@jit
def activation_derivative(y, code):
    """f'(x) read off the output y = f(x), in y's precision: tanh 1 - y^2, ReLU 1[y > 0], identity 1.

    The factors of ``tanh_backward``, ``relu_backward`` and ``identity_backward`` (1[y > 0] = 1[x > 0]).
    """
    one = np.float32(1)
    if code == 1:
        return one - y * y
    if code == 2:
        return one if y > 0 else np.float32(0)
    return one


#: the fan-in from which ``matmul_rows`` takes four rows at a time: below it there is little of M's rows
#: to share, and the accumulator costs more than it saves (on 256 x 2 x 64 it was slower)
ROW_BLOCK_MIN_FAN_IN = 16


@jit
def matmul_rows(x, M, out):
    """out = x M row by row, the inner loop along a contiguous row of M (LLVM vectorises it).

    For the thin products (a fan-in or fan-out of a few units, or a few rows) where a BLAS call costs
    more than its arithmetic. Shapes: x (B, n), M (n, m) -> out (B, m). With a fan-in n of at least
    ``ROW_BLOCK_MIN_FAN_IN``, four rows at a time into a (4, m) accumulator of its own, each row of M
    loaded once for the four (8 x 64 x 64, the rollout's hidden layer: 2.0 us against 2.5-3.0 row by
    row). Every entry is summed over i in the same order either way: the same bits. Checked by
    ``tests/test_layers.py::test_matmul_rows_sums_each_entry_in_order``.
    """
    B, n = x.shape
    m = M.shape[1]
    r = 0
    if n >= ROW_BLOCK_MIN_FAN_IN:
        acc = np.empty((4, m), dtype=out.dtype)
        while r + 4 <= B:
            acc[:] = 0
            for i in range(n):
                x0, x1, x2, x3 = x[r, i], x[r + 1, i], x[r + 2, i], x[r + 3, i]
                for j in range(m):
                    M_ij = M[i, j]
                    acc[0, j] += x0 * M_ij
                    acc[1, j] += x1 * M_ij
                    acc[2, j] += x2 * M_ij
                    acc[3, j] += x3 * M_ij
            out[r:r + 4] = acc
            r += 4
    for r in range(r, B):
        for j in range(m):
            out[r, j] = 0
        for i in range(n):
            x_ri = x[r, i]
            for j in range(m):
                out[r, j] += x_ri * M[i, j]


@jit
def bias_activation_kernel(a, b, act):
    """h = f(a + b) in place: ``layers.linear_forward``'s "+ b", then ``layers.activate``.

    Shapes: a (B, n) C-contiguous, b (n,); act a ``layers.CompiledActivation``.
    """
    B, n = a.shape
    for r in range(B):
        for j in range(n):
            a[r, j] = activate(a[r, j] + b[j], act)


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
