"""Laws of the layer functions: gradients by central differences, forward semantics, orthogonal init.

Every gradient check runs in float64 with a random upstream gradient (see ``ppo_np.gradcheck``) and
must reach a relative error below 1e-6.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ppo_np import layers
from ppo_np.gradcheck import DEFAULT_TOL, away_from_zero, check_gradients

FAST = settings(deadline=None, max_examples=40)

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 7)


def assert_checks_pass(checks, names):
    assert [c.param for c in checks] == list(names)
    for c in checks:
        assert c.ok and c.max_rel_error < DEFAULT_TOL, c


# --- gradients -------------------------------------------------------------------------------------

@FAST
@given(B=sizes, n=sizes, m=sizes, scale=st.floats(0.1, 10.0), seed=seeds)
def test_linear_gradients(B, n, m, scale, seed):
    """dx = dy W^T, dW = x^T dy, db = sum_b dy match central differences of sum(dy * (x W + b))."""
    rng = np.random.default_rng(seed)
    arrays = {"x": scale * rng.standard_normal((B, n)), "W": rng.standard_normal((n, m)),
              "b": rng.standard_normal(m)}

    def forward():
        return layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[0]

    def backward(dy):
        dx, dW, db = layers.linear_backward(dy, layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[1])
        assert dx.shape == (B, n) and dW.shape == (n, m) and db.shape == (m,)
        return {"x": dx, "W": dW, "b": db}

    assert_checks_pass(check_gradients("linear", forward, backward, arrays, rng), ["x", "W", "b"])


@FAST
@given(name=st.sampled_from(sorted(layers.ACTIVATIONS)),
       shape=st.lists(sizes, min_size=1, max_size=3).map(tuple),
       scale=st.floats(0.1, 3.0), seed=seeds)
def test_activation_gradients(name, shape, scale, seed):
    """dx = dy * f'(x) for tanh, relu and identity, at points at least 0.1 away from ReLU's kink."""
    rng = np.random.default_rng(seed)
    act = layers.activation(name)
    x = scale * away_from_zero(rng, shape)
    # Resolvable test point: each central difference of L = sum(dy * y) carries a rounding error
    # ~ eps S / h ~ 2e-10 S, S = sum|dy * y|. When every entry of a small x sits deep in tanh's tails,
    # 1 - y^2 ~ 1e-6 and the check would measure that floor, not the backward. check_gradients draws
    # its dy first from rng, so a copy of rng yields the same dy.
    y = act.forward(x)[0]
    dy = copy.deepcopy(rng).standard_normal(y.shape)
    assume(np.linalg.norm(act.backward(dy, act.forward(x)[1])) >= 1e-3 * np.sum(np.abs(dy * y)))

    def backward(dy):
        dx = act.backward(dy, act.forward(x)[1])
        assert dx.shape == x.shape and dx.dtype == np.float64
        return {"x": dx}

    assert_checks_pass(check_gradients(name, lambda: act.forward(x)[0], backward, {"x": x}, rng), ["x"])


# --- forward semantics and purity ------------------------------------------------------------------

@FAST
@given(B=sizes, n=sizes, m=sizes, seed=seeds)
def test_linear_forward_is_affine_map(B, n, m, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.standard_normal((B, n)), rng.standard_normal((n, m)), rng.standard_normal(m)
    y, cache = layers.linear_forward(x, W, b)
    np.testing.assert_allclose(y, np.einsum("bi,ij->bj", x, W) + b[None, :], rtol=1e-12, atol=1e-12)
    assert cache.x is x and cache.W is W  # the named cache keeps what backward needs, no copies


@FAST
@given(shape=st.lists(sizes, min_size=1, max_size=3).map(tuple), seed=seeds)
def test_activation_forward_values(shape, seed):
    x = 3.0 * np.random.default_rng(seed).standard_normal(shape)
    np.testing.assert_array_equal(layers.activation("tanh").forward(x)[0], np.tanh(x))
    np.testing.assert_array_equal(layers.activation("relu").forward(x)[0], np.maximum(x, 0.0))
    assert layers.activation("identity").forward(x)[0] is x
    assert isinstance(layers.tanh_forward(x)[1], layers.TanhCache)
    np.testing.assert_array_equal(layers.tanh_forward(x)[1].y, np.tanh(x))  # tanh caches its output
    np.testing.assert_array_equal(layers.relu_forward(x)[1].mask, x > 0)   # relu caches the mask


def test_relu_subgradient_at_kink_is_zero():
    x = np.array([[-1.0, 0.0, -0.0, 2.0]])
    dx = layers.relu_backward(np.ones_like(x), layers.relu_forward(x)[1])
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0, 1.0]])


@FAST
@given(B=sizes, n=sizes, m=sizes, name=st.sampled_from(sorted(layers.ACTIVATIONS)), seed=seeds)
def test_forward_backward_leave_their_arguments_unchanged(B, n, m, name, seed):
    """Layers are pure: no argument and no cache entry is modified by forward or backward."""
    rng = np.random.default_rng(seed)
    x, W, b, dy = (rng.standard_normal(s) for s in ((B, n), (n, m), (m,), (B, m)))
    before = [a.copy() for a in (x, W, b, dy)]
    y, cache = layers.linear_forward(x, W, b)
    act = layers.activation(name)
    z, act_cache = act.forward(y)
    y_before = y.copy()
    act.backward(dy, act_cache)
    layers.linear_backward(dy, cache)
    for a, a0 in zip((x, W, b, dy, y), (*before, y_before)):
        np.testing.assert_array_equal(a, a0)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="'sigmoid'"):
        layers.activation("sigmoid")


# --- orthogonal init -------------------------------------------------------------------------------

@FAST
@given(n=st.integers(1, 16), m=st.integers(1, 16), gain=st.floats(0.01, 5.0), seed=seeds)
def test_orthogonal_init(n, m, gain, seed):
    """W^T W = gain^2 I (n >= m) or W W^T = gain^2 I (n < m), to 1e-10."""
    W = layers.orthogonal((n, m), gain, np.random.default_rng(seed))
    assert W.shape == (n, m) and W.dtype == np.float64 and W.flags.c_contiguous
    gram = W.T @ W if n >= m else W @ W.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(n, m)), rtol=0, atol=1e-10)


@FAST
@given(n=st.integers(1, 16), m=st.integers(1, 16), gain=st.floats(0.01, 5.0), seed=seeds)
def test_orthogonal_init_float32(n, m, gain, seed):
    W = layers.orthogonal((n, m), gain, np.random.default_rng(seed), np.float32)
    assert W.dtype == np.float32
    W64 = W.astype(np.float64)
    gram = W64.T @ W64 if n >= m else W64 @ W64.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(n, m)), rtol=0, atol=1e-5 * gain**2)


@FAST
@given(n=st.integers(1, 8), m=st.integers(1, 8), seed=seeds)
def test_orthogonal_init_is_seeded(n, m, seed):
    """Same seed, same matrix; another seed, another matrix (a 1 x 1 one is only +-1, so excluded)."""
    assume(n * m > 1)
    a = layers.orthogonal((n, m), 1.0, np.random.default_rng(seed))
    b = layers.orthogonal((n, m), 1.0, np.random.default_rng(seed))
    c = layers.orthogonal((n, m), 1.0, np.random.default_rng(seed + 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_orthogonal_init_has_no_sign_bias():
    """Q's signs are fixed by R's diagonal, so each entry is symmetric about 0 (Haar measure)."""
    rng = np.random.default_rng(0)
    first_entries = np.array([layers.orthogonal((4, 4), 1.0, rng)[0, 0] for _ in range(4000)])
    # E[W_00] = 0 and Var = 1/4 under Haar: the mean of 4000 draws has std 1/sqrt(16000) ~ 0.008
    assert abs(first_entries.mean()) < 0.04


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (-1, 2)])
def test_orthogonal_init_rejects_empty_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        layers.orthogonal(shape, 1.0, np.random.default_rng(0))


@settings(max_examples=80, deadline=None)
@given(B=st.integers(1, 13), n=st.integers(1, 40), m=st.integers(1, 70), dtype=st.sampled_from([np.float32, np.float64]),
       seed=seeds)
def test_matmul_rows_sums_each_entry_in_order(B, n, m, dtype, seed):
    """out[r, j] = sum_i x[r, i] M[i, j], added in the order i = 0 .. n-1 in the arrays' dtype: the same bits
    whether the rows go one at a time or four at a time (fan-in >= ROW_BLOCK_MIN_FAN_IN), ragged tails too."""
    rng = np.random.default_rng(seed)
    x, M = rng.standard_normal((B, n)).astype(dtype), rng.standard_normal((n, m)).astype(dtype)
    expected = np.zeros((B, m), dtype)
    for i in range(n):
        expected += x[:, i:i + 1] * M[i]
    out = np.full((B, m), np.nan, dtype)
    layers.matmul_rows(x, M, out)
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), cols=st.integers(1, 70), scale=st.floats(0.01, 20.0))
def test_tanh_float32_kernel_matches_numpy(seed, rows, cols, scale):
    """The float32 rational tanh is within 4e-7 of tanh (a few float32 ulps), odd, and bounded by 1."""
    x = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)
    y, cache = layers.tanh_forward(x)
    assert y.dtype == np.float32 and cache.y is y
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=0, atol=4e-7)
    np.testing.assert_array_equal(layers.tanh_forward(-x)[0], -y)
    assert np.all(np.abs(y) <= 1.0)


def test_tanh_float32_kernel_edge_values():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 9.0, -9.0, 1e30], np.float32)
    y = layers.tanh_forward(x)[0]
    assert np.isnan(y[0])  # NaN propagates: the clamp's comparisons are false for it
    np.testing.assert_array_max_ulp(y[1:], np.tanh(x[1:]), maxulp=2)
