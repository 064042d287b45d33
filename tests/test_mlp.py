"""Laws of the MLP: whole-network gradient checks, initialisation, dtypes, argument validation."""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ppo_np import layers
from ppo_np.gradcheck import DEFAULT_TOL, away_from_zero, randomize_biases, relative_error
from ppo_np.gradcheck_suite import check_mlp
from ppo_np.mlp import INFER_KERNEL_MAX_ROWS, MLP
from ppo_np.params import flatten

FAST = settings(deadline=None, max_examples=40)

seeds = st.integers(0, 2**32 - 1)
layer_sizes = st.lists(st.integers(1, 6), min_size=2, max_size=5).map(tuple)  # 0 to 3 hidden layers
activations = st.sampled_from(sorted(layers.ACTIVATIONS))


def pre_activations(mlp: MLP, x: np.ndarray) -> list[np.ndarray]:
    """a_l = h_{l-1} W_l + b_l for every hidden layer l (the inputs of the activation)."""
    _, cache = mlp.forward(x)
    return [cache.linear[l].x @ mlp.params[f"W{l}"] + mlp.params[f"b{l}"] for l in range(mlp.n_layers - 1)]


def resolvable(mlp: MLP, x: np.ndarray, rng: np.random.Generator, ratio: float = 1e-3) -> bool:
    """Whether central differences can resolve every gradient of the check at this test point.

    The check differences L = sum(dy * y); each entry carries a rounding error ~ eps S / h ~ 2e-10 S,
    with S = sum|dy * y|. An array whose true gradient is tiny next to S (behind a saturated tanh unit,
    or behind a ReLU layer with one live unit and a small outgoing weight) would measure that floor, not
    the backward: |g| / S ~ 1e-5 gives rel errors ~ 5e-6 with a correct backward. Arrays whose gradient
    is exactly zero (dead ReLU layers) are fine: both sides are exactly 0. ``check_gradients`` draws its
    dy first from rng, so a copy of rng yields the same dy.
    """
    y, cache = mlp.forward(x)
    dy = copy.deepcopy(rng).standard_normal(y.shape)
    dx, grads = mlp.backward(dy, cache)
    scale = float(np.sum(np.abs(dy * y)))
    return all(np.linalg.norm(g) >= ratio * scale for g in (dx, *grads.values()) if np.any(g))


@FAST
@given(sizes=layer_sizes, act=activations, B=st.integers(1, 5), hidden_gain=st.floats(0.5, 1.5),
       out_gain=st.floats(0.5, 2.0), seed=seeds)
def test_mlp_gradients(sizes, act, B, hidden_gain, out_gain, seed):
    """dx and every dW_l, db_l of a whole MLP match central differences to < 1e-6 (float64)."""
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, act, rng=rng, hidden_gain=hidden_gain, out_gain=out_gain)
    randomize_biases(mlp.params, rng)
    x = away_from_zero(rng, (B, sizes[0]))
    if act == "relu":  # stay away from the kink: a step of h = 1e-6 must not flip any unit
        assume(all(np.min(np.abs(a)) > 1e-4 for a in pre_activations(mlp, x)))
    assume(resolvable(mlp, x, rng))  # rejects < 1% of the drawn points
    checks = check_mlp(mlp, x, rng, f"mlp-{act}")
    assert [c.param for c in checks] == ["x", *mlp.params]
    for c in checks:
        assert c.ok and c.max_rel_error < DEFAULT_TOL, c


@FAST
@given(sizes=layer_sizes, act=activations, B=st.integers(1, 5), seed=seeds)
def test_backward_shapes_and_order(sizes, act, B, seed):
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, act, rng=rng)
    y, cache = mlp.forward(rng.standard_normal((B, sizes[0])))
    assert y.shape == (B, sizes[-1])
    dx, grads = mlp.backward(rng.standard_normal(y.shape), cache)
    assert dx.shape == (B, sizes[0])
    assert list(grads) == list(mlp.params) == [f"{k}{l}" for l in range(len(sizes) - 1) for k in "Wb"]
    for name, p in mlp.params.items():
        assert grads[name].shape == p.shape


@FAST
@given(sizes=layer_sizes, act=activations, B=st.integers(2, 5), seed=seeds)
def test_rows_are_independent(sizes, act, B, seed):
    """Each output row depends on its own input row only: the batch is a batch, nothing is mixed."""
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, act, rng=rng)
    x = rng.standard_normal((B, sizes[0]))
    y = mlp(x)
    np.testing.assert_allclose(y, mlp.forward(x)[0], rtol=1e-12, atol=1e-12)  # inference sums in its own order
    for i in range(B):
        np.testing.assert_allclose(y[i:i + 1], mlp(x[i:i + 1]), rtol=1e-12, atol=1e-12)


@FAST
@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6), act=activations, seed=seeds)
def test_no_hidden_layer_is_one_linear_layer(n_in, n_out, act, seed):
    rng = np.random.default_rng(seed)
    mlp = MLP((n_in, n_out), act, rng=rng)
    randomize_biases(mlp.params, rng)
    x = rng.standard_normal((3, n_in))
    np.testing.assert_allclose(mlp(x), layers.linear_forward(x, mlp.params["W0"], mlp.params["b0"])[0],
                               rtol=1e-12, atol=1e-12)


# --- initialisation --------------------------------------------------------------------------------

@FAST
@given(sizes=layer_sizes, out_gain=st.floats(0.001, 3.0), seed=seeds)
def test_init_orthogonal_with_gains_and_zero_biases(sizes, out_gain, seed):
    """Hidden layers: gain sqrt(2) by default; output layer: the given gain; every bias 0."""
    mlp = MLP(sizes, rng=np.random.default_rng(seed), out_gain=out_gain)
    L = len(sizes) - 1
    for l in range(L):
        W, b = mlp.params[f"W{l}"], mlp.params[f"b{l}"]
        assert W.shape == (sizes[l], sizes[l + 1]) and b.shape == (sizes[l + 1],)
        np.testing.assert_array_equal(b, 0.0)
        gain = out_gain if l == L - 1 else math.sqrt(2.0)
        gram = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
        np.testing.assert_allclose(gram, gain**2 * np.eye(min(W.shape)), rtol=0, atol=1e-10)


@FAST
@given(sizes=layer_sizes, seed=seeds)
def test_init_is_seeded(sizes, seed):
    a = MLP(sizes, rng=np.random.default_rng(seed))
    b = MLP(sizes, rng=np.random.default_rng(seed))
    c = MLP(sizes, rng=np.random.default_rng(seed + 1))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    # every weight of size > 1 is redrawn (a 1 x 1 orthogonal weight is only +-gain)
    redrawn = [n for n, p in a.params.items() if n.startswith("W") and p.size > 1]
    assume(redrawn)
    assert all(not np.array_equal(a.params[n], c.params[n]) for n in redrawn)


# --- dtypes ----------------------------------------------------------------------------------------

@FAST
@given(sizes=layer_sizes, act=activations, dtype=st.sampled_from(["float32", "float64", np.float32, np.float64]),
       seed=seeds)
def test_dtypes_flow_end_to_end(sizes, act, dtype, seed):
    """Parameters, output, dx and every gradient carry the MLP's dtype, whatever the input dtype."""
    rng = np.random.default_rng(seed)
    mlp = MLP(sizes, act, rng=rng, dtype=dtype)
    expected = np.dtype(dtype)
    assert mlp.dtype == expected
    assert all(p.dtype == expected for p in mlp.params.values())
    y, cache = mlp.forward(rng.standard_normal((3, sizes[0])))  # float64 input
    assert y.dtype == expected
    dx, grads = mlp.backward(rng.standard_normal(y.shape), cache)  # float64 upstream gradient
    assert dx.dtype == expected
    assert all(g.dtype == expected for g in grads.values())


@FAST
@given(sizes=layer_sizes, act=activations, seed=seeds)
def test_float32_agrees_with_float64(sizes, act, seed):
    """Same weights, same inputs: float32 output and gradient within 1e-5 relative of float64.

    The gradient is compared as one vector (dx and every parameter): a single small array, e.g. a
    1 x 1 weight behind a saturated tanh (1 - y^2 loses digits in float32) or a sum that nearly
    cancels, can legitimately differ by 1e-4 on its own, while the whole gradient stays ~1e-7 close.
    """
    rng = np.random.default_rng(seed)
    m32 = MLP(sizes, act, rng=rng, dtype="float32")
    randomize_biases(m32.params, rng)
    m64 = MLP(sizes, act, rng=np.random.default_rng(0), dtype="float64")
    for name, p in m32.params.items():
        m64.params[name][...] = p  # exactly the float32 weights, so only the arithmetic differs
    x = rng.standard_normal((4, sizes[0])).astype(np.float32).astype(np.float64)
    dy = rng.standard_normal((4, sizes[-1])).astype(np.float32).astype(np.float64)
    if act == "relu":  # a unit on the kink may switch between precisions
        assume(all(np.min(np.abs(a)) > 1e-3 for a in pre_activations(m64, x)))
    y32, c32 = m32.forward(x)
    y64, c64 = m64.forward(x)
    assert relative_error(y32, y64) < 1e-5
    dx32, g32 = m32.backward(dy, c32)
    dx64, g64 = m64.backward(dy, c64)
    assert relative_error(np.concatenate([dx32.ravel(), flatten(g32)]),
                          np.concatenate([dx64.ravel(), flatten(g64)])) < 1e-5


# --- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [(), (3,), (3, 0), (0, 3), (3, -1, 2), (3, 2.5, 1), ("a", 2), 5])
def test_bad_sizes_are_named(sizes):
    with pytest.raises(ValueError, match=re.escape(repr(sizes))):
        MLP(sizes, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["sigmoid", "", "Tanh"])
def test_bad_activation_is_named(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        MLP((3, 2), name, rng=np.random.default_rng(0))


@pytest.mark.parametrize("dtype", ["float16", "int64", "bogus", np.int32, np.complex128, object])
def test_bad_dtype_is_named(dtype):
    with pytest.raises(ValueError, match=re.escape(repr(dtype))):
        MLP((3, 2), rng=np.random.default_rng(0), dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, INFER_KERNEL_MAX_ROWS), hidden=st.lists(st.integers(1, 70), min_size=0, max_size=3),
       act=st.sampled_from(["tanh", "relu", "identity"]), dtype=st.sampled_from(["float32", "float64"]))
def test_infer_kernel_matches_forward(seed, rows, hidden, act, dtype):
    """Inference by the compiled loop nest (used up to INFER_KERNEL_MAX_ROWS rows) equals ``forward``."""
    rng = np.random.default_rng(seed)
    mlp = MLP((5, *hidden, 3), act, rng=rng, dtype=dtype)
    for p in mlp.params.values():
        p += rng.standard_normal(p.shape).astype(dtype) * 0.3  # biases too, so nothing is trivially zero
    x = rng.standard_normal((rows, 5)).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mlp(x), mlp.forward(x)[0], **tol)
    assert mlp(x).dtype == np.dtype(dtype)
