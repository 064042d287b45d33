"""Laws of Adam and of global-norm clipping, checked against a plain-Python per-scalar reference."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.gradcheck import away_from_zero
from ppo_np.optim import Adam, clip_grad_norm, clip_scales, global_norm, squared_norm
from ppo_np.params import flatten, pack

FAST = settings(deadline=None, max_examples=40)
SLOW = settings(deadline=None, max_examples=10)

seeds = st.integers(0, 2**32 - 1)
shape_lists = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), min_size=1, max_size=3)


def random_params(rng: np.random.Generator, shapes, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Named float64 arrays (0-d ones stay arrays, so that in-place updates reach them)."""
    return {f"p{i}": np.asarray(scale * rng.standard_normal(s)) for i, s in enumerate(shapes)}


def adam_reference(theta: list[float], grads: list[list[float]], lrs: list[float],
                   beta1: float, beta2: float, eps: float) -> list[float]:
    """Textbook Adam (Kingma & Ba 2015, Algorithm 1), one Python float at a time."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
            m_hat = m[i] / (1.0 - beta1**t)
            v_hat = v[i] / (1.0 - beta2**t)
            theta[i] = theta[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
    return theta


# --- Adam ------------------------------------------------------------------------------------------

@FAST
@given(shapes=shape_lists, lr=st.floats(1e-5, 1e-1), log10_scale=st.floats(-1, 4), seed=seeds)
def test_first_step_is_lr_times_sign(shapes, lr, log10_scale, seed):
    """At t = 1, m_hat = g and v_hat = g^2: each coordinate moves by lr * g / (|g| + eps) ~ lr * sign(g)."""
    rng = np.random.default_rng(seed)
    params = random_params(rng, shapes)
    grads = {k: 10.0**log10_scale * away_from_zero(rng, p.shape) for k, p in params.items()}
    before = {k: p.copy() for k, p in params.items()}
    opt = Adam(params, lr=lr)
    opt.step(grads)
    for k, g in grads.items():
        moved = params[k] - before[k]
        np.testing.assert_allclose(moved, -lr * g / (np.abs(g) + opt.eps), rtol=1e-9, atol=1e-15)
        # |moved + lr sign(g)| = lr eps / (|g| + eps) <= lr eps / |g|; plus rounding of the subtraction
        bound = lr * opt.eps / np.abs(g) + 1e-15
        assert np.all(np.abs(moved + lr * np.sign(g)) <= bound)


@FAST
@given(shapes=shape_lists, steps=st.integers(1, 30), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.9999),
       log10_eps=st.floats(-10, -3), seed=seeds)
def test_many_steps_match_scalar_reference(shapes, steps, beta1, beta2, log10_eps, seed):
    """Many steps, with the lr changed between steps, equal textbook Adam on each scalar to 1e-12."""
    rng = np.random.default_rng(seed)
    eps = 10.0**log10_eps
    params = random_params(rng, shapes)
    theta0 = flatten(params).tolist()
    grad_seq = [random_params(rng, shapes, scale=float(rng.uniform(0.01, 10))) for _ in range(steps)]
    lrs = rng.uniform(1e-4, 1e-1, size=steps).tolist()
    opt = Adam(params, lr=1.0, betas=(beta1, beta2), eps=eps)
    for grads, lr in zip(grad_seq, lrs):
        opt.lr = lr  # annealing: the next step uses the new lr
        opt.step(grads)
    expected = adam_reference(theta0, [flatten(g).tolist() for g in grad_seq], lrs, beta1, beta2, eps)
    np.testing.assert_allclose(flatten(params), expected, rtol=1e-12, atol=1e-12)
    assert opt.t == steps


@FAST
@given(shapes=shape_lists, steps=st.integers(1, 20), log10_c=st.floats(-3, 3), seed=seeds)
def test_invariant_to_gradient_scale(shapes, steps, log10_c, seed):
    """With eps negligible, gradients c * g (c > 0) give the same trajectory as g."""
    rng = np.random.default_rng(seed)
    c = 10.0**log10_c
    p1 = random_params(rng, shapes)
    p2 = {k: p.copy() for k, p in p1.items()}
    opt1, opt2 = Adam(p1, lr=1e-2, eps=1e-30), Adam(p2, lr=1e-2, eps=1e-30)
    for _ in range(steps):
        g = {k: away_from_zero(rng, p.shape, margin=0.01) for k, p in p1.items()}
        opt1.step(g)
        opt2.step({k: c * a for k, a in g.items()})
    np.testing.assert_allclose(flatten(p2), flatten(p1), rtol=1e-12, atol=1e-12)


@SLOW
@given(d=st.integers(1, 8), seed=seeds)
def test_converges_on_convex_quadratic(d, seed):
    """f(x) = 1/2 (x - x*)^T A (x - x*), eigenvalues of A in [0.1, 10]: f drops by > 1000x."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    A = q @ np.diag(np.exp(rng.uniform(np.log(0.1), np.log(10.0), d))) @ q.T
    x_star = 3.0 * rng.standard_normal(d)
    params = {"x": 3.0 * rng.standard_normal(d)}

    def f(x):
        return 0.5 * (x - x_star) @ A @ (x - x_star)

    f0 = f(params["x"])
    opt = Adam(params, lr=0.1)
    for _ in range(1000):
        opt.step({"x": A @ (params["x"] - x_star)})  # grad f = A (x - x*)
    assert f(params["x"]) <= 1e-3 * f0


@FAST
@given(shapes=shape_lists, before=st.integers(0, 10), after=st.integers(1, 10), seed=seeds)
def test_state_round_trip_continues_bit_identically(shapes, before, after, seed):
    """Export after k steps, restore into a fresh Adam over copied params: both continue identically."""
    rng = np.random.default_rng(seed)
    params = random_params(rng, shapes)
    targets = random_params(rng, shapes)

    def grads_of(p):  # the gradient of 1/2 ||p - target||^2 + noise: depends on the params
        return {k: p[k] - targets[k] + 0.1 * np.sin(7.0 * p[k]) for k in p}

    opt = Adam(params, lr=0.05, betas=(0.8, 0.99), eps=1e-6)
    for _ in range(before):
        opt.step(grads_of(params))
    opt.lr = 0.03  # an annealed lr is part of the state
    state = opt.state_dict()
    copies = {k: p.copy() for k, p in params.items()}
    fresh = Adam(copies, lr=1.0, betas=(0.8, 0.99), eps=1e-6)
    fresh.load_state_dict(state)
    assert fresh.t == opt.t == before and fresh.lr == opt.lr
    for _ in range(after):
        opt.step(grads_of(params))
        fresh.step(grads_of(copies))
        for k in params:
            assert np.array_equal(params[k], copies[k])


@FAST
@given(shapes=shape_lists, seed=seeds)
def test_state_dict_holds_copies(shapes, seed):
    rng = np.random.default_rng(seed)
    params = random_params(rng, shapes)
    opt = Adam(params)
    opt.step(random_params(rng, shapes))
    state = opt.state_dict()
    saved = {k: np.array(v, copy=True) for k, v in state.items()}
    opt.step(random_params(rng, shapes))  # moves m and v, must not move the exported state
    for k in state:
        assert np.array_equal(state[k], saved[k])


def test_load_state_dict_refuses_mismatched_state():
    params = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    opt = Adam(params)
    good = opt.state_dict()
    with pytest.raises(ValueError, match=re.escape("'m/W'") + ".*" + re.escape("(3, 2)")):
        opt.load_state_dict({**good, "m/W": np.zeros((3, 2))})
    missing = {k: v for k, v in good.items() if k != "v/b"}
    with pytest.raises(ValueError, match=re.escape("'v/b'")):
        opt.load_state_dict(missing)


def test_updates_in_place_and_keeps_dtype():
    params = {"W": np.ones((2, 3), dtype=np.float32), "b": np.ones(3)}
    objects = dict(params)
    opt = Adam(params, lr=0.1)
    opt.step({"W": np.ones((2, 3)), "b": -np.ones(3)})
    assert all(params[k] is objects[k] for k in params)
    assert params["W"].dtype == np.float32
    assert np.all(params["W"] < 1.0) and np.all(params["b"] > 1.0)


@pytest.mark.parametrize("kwargs, shown", [
    ({"lr": 0.0}, "0.0"), ({"lr": -1e-3}, "-0.001"), ({"lr": float("nan")}, "nan"),
    ({"betas": (1.0, 0.999)}, "(1.0, 0.999)"), ({"betas": (0.9, 1.0)}, "(0.9, 1.0)"),
    ({"betas": (-0.1, 0.999)}, "(-0.1, 0.999)"),
    ({"eps": 0.0}, "0.0"), ({"eps": -1e-8}, "-1e-08"),
])
def test_invalid_hyperparameters_are_named(kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        Adam({"x": np.zeros(2)}, **kwargs)


@pytest.mark.parametrize("params, shown", [
    ({}, "got none in 0 arrays"), ({"w": np.zeros(0)}, "got none in 1 arrays"),
    ({"w": np.zeros((0, 3), np.float32), "b": np.zeros(0)}, "got none in 2 arrays"),
    ({"w": [0.0, 1.0]}, "'w' is a list"), ({"w": 3.0}, "'w' is a float"),
    ({"w": np.zeros(2, np.int64)}, "'w' is int64"), (np.zeros(3), "got a ndarray"),
])
def test_parameters_that_cannot_be_updated_in_place_are_named(params, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        Adam(params)


# --- clipping --------------------------------------------------------------------------------------

def reference_norm(*grad_sets) -> float:
    flat = [g.ravel() for gs in grad_sets for g in gs.values()]
    return float(np.linalg.norm(np.concatenate(flat))) if flat else 0.0


def random_grads(rng: np.random.Generator, shapes, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Named arrays with entries >= 0.1 * scale in magnitude, so every set has a norm well above 0."""
    return {f"g{i}": np.asarray(scale * away_from_zero(rng, s)) for i, s in enumerate(shapes)}


def assert_common_factor(clipped: dict, original: dict, factor: float) -> None:
    """Every array was multiplied by the same factor: the direction of the whole gradient is kept."""
    for k in original:
        np.testing.assert_allclose(clipped[k], factor * original[k], rtol=1e-12, atol=0)


@FAST
@given(shapes=shape_lists, log10_scale=st.floats(-3, 3), max_norm=st.floats(1e-3, 1e3), seed=seeds)
def test_clip_bounds_norm_and_keeps_direction(shapes, log10_scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = random_grads(rng, shapes, scale=10.0**log10_scale)
    original = {k: g.copy() for k, g in grads.items()}
    objects = dict(grads)
    norm = clip_grad_norm(grads, max_norm=max_norm)
    after = global_norm(grads)
    assert norm == pytest.approx(reference_norm(original), rel=1e-12)  # the pre-clip norm
    assert all(grads[k] is objects[k] for k in grads)  # in place
    assert after <= max_norm * (1 + 1e-12)
    if norm > max_norm:
        assert after == pytest.approx(max_norm, rel=1e-7)  # shrunk to the bound, not below it
    assert_common_factor(grads, original, after / norm)
    if norm <= max_norm:  # below the bound: a no-op, bit for bit
        for k in grads:
            assert np.array_equal(grads[k], original[k])


@FAST
@given(shapes=shape_lists, seed=seeds)
def test_clip_below_bound_is_bit_identical(shapes, seed):
    rng = np.random.default_rng(seed)
    grads = random_params(rng, shapes)
    original = {k: g.copy() for k, g in grads.items()}
    norm = global_norm(grads)
    assert clip_grad_norm(grads, max_norm=1.5 * norm + 1e-300) == norm
    if norm > 0:
        assert clip_grad_norm(grads, max_norm=norm) == norm  # exactly at the bound: still a no-op
    for k in grads:
        assert np.array_equal(grads[k], original[k])


@FAST
@given(actor_shapes=shape_lists, critic_shapes=shape_lists, actor_scale=st.floats(0.1, 10),
       critic_scale=st.floats(0.1, 10), max_norm=st.floats(0.05, 5), seed=seeds)
def test_clip_jointly_and_separately(actor_shapes, critic_shapes, actor_scale, critic_scale, max_norm, seed):
    """Jointly: one factor for both sets, joint norm = sqrt(n_a^2 + n_c^2). Separately: each set bounded."""
    rng = np.random.default_rng(seed)
    actor = random_grads(rng, actor_shapes, actor_scale)
    critic = random_grads(rng, critic_shapes, critic_scale)
    a0, c0 = ({k: g.copy() for k, g in gs.items()} for gs in (actor, critic))

    ja, jc = ({k: g.copy() for k, g in gs.items()} for gs in (actor, critic))
    joint = clip_grad_norm(ja, jc, max_norm=max_norm)
    assert joint == pytest.approx(math.hypot(global_norm(a0), global_norm(c0)), rel=1e-12)
    assert global_norm(ja, jc) <= max_norm * (1 + 1e-12)
    factor = global_norm(ja, jc) / joint
    assert_common_factor(ja, a0, factor)  # one factor for both sets
    assert_common_factor(jc, c0, factor)

    norm_a = clip_grad_norm(actor, max_norm=max_norm)
    norm_c = clip_grad_norm(critic, max_norm=max_norm)
    assert math.hypot(norm_a, norm_c) == pytest.approx(joint, rel=1e-12)
    for clipped, orig, n in ((actor, a0, norm_a), (critic, c0, norm_c)):
        assert global_norm(clipped) <= max_norm * (1 + 1e-12)
        assert_common_factor(clipped, orig, global_norm(clipped) / n)
    if min(norm_a, norm_c) < max_norm < max(norm_a, norm_c):  # separately, only the larger set shrinks
        small, small0 = (actor, a0) if norm_a < norm_c else (critic, c0)
        assert all(np.array_equal(small[k], small0[k]) for k in small0)


@FAST
@given(shapes=shape_lists, seed=seeds)
def test_global_norm_matches_concatenated_norm(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = random_params(rng, shapes), random_params(rng, shapes[::-1], scale=3.0)
    assert global_norm(a, b) == pytest.approx(reference_norm(a, b), rel=1e-12)
    assert global_norm() == 0.0
    flat_a, flat_b = flatten(a), flatten(b)              # a set given as one flat array: the same sum
    assert global_norm(flat_a, flat_b) == global_norm({"a": flat_a}, {"b": flat_b})
    assert global_norm(flat_a) == global_norm({"a": flat_a})


@FAST
@given(shapes=shape_lists, actor_scale=st.floats(0.01, 10), critic_scale=st.floats(0.01, 10),
       max_norm=st.floats(0.05, 5), dtype=st.sampled_from([np.float32, np.float64]), seed=seeds)
def test_the_kernels_clip_scales_bound_each_norm(shapes, actor_scale, critic_scale, max_norm, dtype, seed):
    """squared_norm is ||g||^2 (float64, within rounding of the sum of squares); clip_scales' factors bring
    the joint norm, or each network's, to at most max_norm, and are 1 where it already is; the norm it
    reports is that of both networks either way."""
    rng = np.random.default_rng(seed)
    actor = flatten(random_grads(rng, shapes, actor_scale)).astype(dtype)
    critic = flatten(random_grads(rng, shapes[::-1], critic_scale)).astype(dtype)
    sq_a, sq_c = squared_norm(actor), squared_norm(critic)
    assert sq_a == pytest.approx(float(np.sum(actor.astype(np.float64) ** 2)), rel=1e-12)
    for joint in (True, False):
        norm, scale_a, scale_c = clip_scales(sq_a, sq_c, max_norm, joint)
        assert norm == pytest.approx(math.sqrt(sq_a + sq_c), rel=1e-15)
        assert 0 < scale_a <= 1 and 0 < scale_c <= 1
        if joint:
            assert scale_a == scale_c and norm * scale_a <= max_norm * (1 + 1e-12)
            assert (scale_a == 1.0) == (norm <= max_norm)
        else:
            for sq, scale in ((sq_a, scale_a), (sq_c, scale_c)):
                assert math.sqrt(sq) * scale <= max_norm * (1 + 1e-12)
                assert (scale == 1.0) == (math.sqrt(sq) <= max_norm)


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("nan")])
def test_clip_refuses_nonpositive_max_norm(max_norm):
    grads = {"x": np.ones(3)}
    with pytest.raises(ValueError, match=re.escape(repr(max_norm))):
        clip_grad_norm(grads, max_norm=max_norm)
    assert np.array_equal(grads["x"], np.ones(3))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
       steps=st.integers(1, 5), lr=st.floats(1e-5, 1e-1), scale=st.floats(1e-3, 1.0))
def test_fused_adam_kernel_equals_its_reference(seed, sizes, steps, lr, scale):
    from ppo_np.optim import adam_update_kernel, adam_update_reference

    rng = np.random.default_rng(seed)
    params = [tuple(rng.standard_normal(n) for n in sizes) for _ in range(2)]
    params[1] = tuple(p.copy() for p in params[0])
    moments = [tuple(tuple(np.zeros(n) for n in sizes) for _ in range(2)) for _ in range(2)]   # (ms, vs) each
    for t in range(1, steps + 1):
        grads = tuple(rng.standard_normal(n) for n in sizes)
        bias = (1 - 0.9**t, 1 - 0.999**t)
        adam_update_kernel(params[0], grads, moments[0], (scale, lr, 0.9, 0.999, 1e-5, *bias))
        adam_update_reference(params[1], grads, moments[1], (scale, lr, 0.9, 0.999, 1e-5, *bias))
    for a, b in zip(params[0], params[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
       steps=st.integers(1, 5))
def test_fused_adam_kernel_in_float32_stays_within_rounding_of_its_reference(seed, sizes, steps):
    """float32, the dtype training uses: the kernel may round its scalar products differently from
    NumPy's float32 arithmetic, so they agree to float32 rounding, not bit for bit."""
    from ppo_np.optim import adam_update_kernel, adam_update_reference

    rng = np.random.default_rng(seed)
    start = tuple(rng.standard_normal(n).astype(np.float32) for n in sizes)
    params = [tuple(p.copy() for p in start) for _ in range(2)]
    moments = [tuple(tuple(np.zeros(n, np.float32) for n in sizes) for _ in range(2)) for _ in range(2)]
    for t in range(1, steps + 1):
        grads = tuple(rng.standard_normal(n).astype(np.float32) for n in sizes)
        bias = (1 - 0.9**t, 1 - 0.999**t)
        adam_update_kernel(params[0], grads, moments[0], (0.5, 1e-3, 0.9, 0.999, 1e-5, *bias))
        adam_update_reference(params[1], grads, moments[1], (0.5, 1e-3, 0.9, 0.999, 1e-5, *bias))
    for a, b, p0 in zip(params[0], params[1], start):
        assert a.dtype == b.dtype == np.float32
        # the steps agree to float32 rounding: relatively, and to one rounding of the parameter per step (a
        # fixed atol of 1e-7 was below one float32 step of a parameter >= 1, where a one-ulp difference is 1.2e-7)
        rounding = steps * np.spacing(np.maximum(np.abs(a), np.abs(b)))
        assert np.all(np.abs(a - b) <= 1e-4 * np.abs(b - p0) + rounding)


@FAST
@given(shapes=shape_lists, steps=st.integers(1, 10), seed=seeds)
def test_packed_parameters_step_exactly_as_loose_ones(shapes, steps, seed):
    """One kernel pass over a packed buffer (``params.pack``) is the same Adam as one pass per array,
    through ``step`` or ``step_flat``."""
    rng = np.random.default_rng(seed)
    loose = random_params(rng, shapes)
    packed, flat_fed = pack(loose), pack(loose)
    opts = Adam(loose, lr=1e-2), Adam(packed, lr=1e-2), Adam(flat_fed, lr=1e-2)
    for _ in range(steps):
        grads = random_params(rng, shapes)
        opts[0].step(grads)
        opts[1].step(grads)
        opts[2].step_flat(flatten(grads))
    for name in loose:
        np.testing.assert_array_equal(packed[name], loose[name])
        np.testing.assert_array_equal(flat_fed[name], loose[name])
    for state in (opts[1].state_dict(), opts[2].state_dict()):
        for key, value in opts[0].state_dict().items():
            np.testing.assert_array_equal(state[key], value)


@FAST
@given(shapes=shape_lists, steps=st.integers(1, 5), max_norm=st.floats(1e-3, 10.0), seed=seeds)
def test_step_flat_scale_is_clipping_before_the_step(shapes, steps, max_norm, seed):
    """step_flat(g, clip_coefficient(||g||, c)) is clip_grad_norm(g, c) then step_flat(g), bit for bit
    in float64, and leaves g as it was."""
    from ppo_np.optim import clip_coefficient

    rng = np.random.default_rng(seed)
    start = pack(random_params(rng, shapes))
    scaled, clipped = {k: v.copy() for k, v in start.items()}, {k: v.copy() for k, v in start.items()}
    opts = Adam(pack(scaled), lr=1e-2), Adam(pack(clipped), lr=1e-2)
    for _ in range(steps):
        grad = flatten(random_params(rng, shapes)) * 10.0 ** rng.uniform(-3, 3)
        kept = grad.copy()
        opts[0].step_flat(grad, clip_coefficient(global_norm({"g": grad}), max_norm))
        np.testing.assert_array_equal(grad, kept)
        clip_grad_norm({"g": grad}, max_norm=max_norm)
        opts[1].step_flat(grad)
    for name in start:
        np.testing.assert_array_equal(opts[0].params[name], opts[1].params[name])


@FAST
@given(shapes=shape_lists, steps=st.integers(2, 5), seed=seeds)
def test_step_flat_reads_a_reused_gradient_buffer_anew(shapes, steps, seed):
    """The update loop passes the same buffer every minibatch with new contents: each step uses them."""
    rng = np.random.default_rng(seed)
    start = pack(random_params(rng, shapes))
    reused, fresh = Adam(pack(start), lr=1e-2), Adam(pack(start), lr=1e-2)
    buffer = np.zeros(sum(p.size for p in start.values()))
    for _ in range(steps):
        grad = flatten(random_params(rng, shapes))
        buffer[:] = grad
        reused.step_flat(buffer, 0.5)
        fresh.step_flat(grad.copy(), 0.5)
    for name in start:
        np.testing.assert_array_equal(reused.params[name], fresh.params[name])


@settings(deadline=None, max_examples=30)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float32", "float64"]))
def test_parameter_norms_kernel_matches_its_reference(sizes, seed, dtype):
    from ppo_np.optim import add_parameter_norms, parameter_bounds, parameter_norms
    from ppo_np.params import flatten

    rng = np.random.default_rng(seed)
    grads = {f"p{i}": rng.standard_normal(n).astype(dtype) for i, n in enumerate(sizes)}
    sums = np.ones(len(sizes))
    add_parameter_norms(flatten(grads), parameter_bounds(grads), sums)
    np.testing.assert_allclose(sums - 1.0, list(parameter_norms(grads).values()), rtol=1e-5 if dtype == "float32" else 1e-12)
