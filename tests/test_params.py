"""Laws of the flat-vector view of a parameter set: round trips, layout, in-place writes, errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.params import (CACHE_LINE, aligned_empty, aligned_zeros, assign_flat, contiguous_runs, flatten, num_params,
                           pack, unflatten)

FAST = settings(deadline=None, max_examples=60)

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def param_sets(draw, min_size=0):
    """An ordered dict of named float64 arrays of drawn shapes (scalars and empty arrays included)."""
    n = draw(st.integers(min_size, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    names = draw(st.lists(st.text("abcWbxyz0123", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))
    return {name: rng.standard_normal(draw(shapes)) for name in names}


@FAST
@given(params=param_sets())
def test_flatten_layout_is_insertion_order(params):
    theta = flatten(params)
    assert theta.shape == (num_params(params),) == (sum(p.size for p in params.values()),)
    offset = 0
    for p in params.values():
        np.testing.assert_array_equal(theta[offset:offset + p.size], p.ravel())
        offset += p.size


@FAST
@given(params=param_sets())
def test_flatten_returns_a_new_array(params):
    theta = flatten(params)
    before = {k: p.copy() for k, p in params.items()}
    theta += 1.0
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


@FAST
@given(params=param_sets())
def test_unflatten_flatten_round_trip_by_name(params):
    back = unflatten(flatten(params), params)
    assert list(back) == list(params)
    for name, p in params.items():
        assert back[name].shape == p.shape and back[name].dtype == p.dtype
        assert back[name] is not p
        np.testing.assert_array_equal(back[name], p)


@FAST
@given(params=param_sets(), seed=st.integers(0, 2**32 - 1))
def test_flatten_unflatten_round_trip_by_vector(params, seed):
    theta = np.random.default_rng(seed).standard_normal(num_params(params))
    np.testing.assert_array_equal(flatten(unflatten(theta, params)), theta)


@FAST
@given(params=param_sets(min_size=1), seed=st.integers(0, 2**32 - 1))
def test_assign_flat_writes_in_place(params, seed):
    """The same array objects receive the new values: holders of references see the update."""
    theta = np.random.default_rng(seed).standard_normal(num_params(params))
    objects = dict(params)  # the array objects, by name
    views = {k: p[...] for k, p in params.items()}  # views of the original buffers
    assign_flat(params, theta)
    assert all(params[k] is objects[k] for k in params)
    np.testing.assert_array_equal(flatten(params), theta)
    np.testing.assert_array_equal(flatten(views), theta)


@FAST
@given(params=param_sets(min_size=1), seed=st.integers(0, 2**32 - 1))
def test_assign_flat_keeps_float32_arrays(params, seed):
    params32 = {k: p.astype(np.float32) for k, p in params.items()}
    theta = np.random.default_rng(seed).standard_normal(num_params(params32)).astype(np.float32)
    assign_flat(params32, theta)
    assert all(p.dtype == np.float32 for p in params32.values())
    np.testing.assert_array_equal(flatten(params32), theta)


@FAST
@given(params=param_sets(), delta=st.integers(-3, 3).filter(bool))
def test_wrong_length_is_refused_and_named(params, delta):
    n = num_params(params)
    if n + delta < 0:
        delta = -delta
    theta = np.zeros(n + delta)
    before = flatten(params)
    with pytest.raises(ValueError, match=re.escape(f"({n},)") + ".*" + re.escape(str(theta.shape))):
        assign_flat(params, theta)
    np.testing.assert_array_equal(flatten(params), before)  # nothing was half-written
    with pytest.raises(ValueError):
        unflatten(theta, params)


def test_right_size_wrong_shape_is_refused():
    params = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    with pytest.raises(ValueError, match=re.escape("(9,)") + ".*" + re.escape("(3, 3)")):
        assign_flat(params, np.zeros((3, 3)))


# --- packed storage ---------------------------------------------------------------------------------------

@FAST
@given(params=param_sets())
def test_pack_keeps_names_shapes_values_and_shares_one_buffer(params):
    packed = pack(params)
    assert list(packed) == list(params)
    for name in params:
        assert packed[name].shape == params[name].shape
        np.testing.assert_array_equal(packed[name], params[name])
        assert not np.shares_memory(packed[name], params[name])
    runs = contiguous_runs(packed.values())
    assert len(runs) == (1 if num_params(params) else 0)
    if runs:
        assert runs[0].ctypes.data % CACHE_LINE == 0                   # the buffer starts on a cache line
        np.testing.assert_array_equal(runs[0], flatten(params))
        runs[0][...] = np.arange(runs[0].size)  # a write through the run is a write to every array
        np.testing.assert_array_equal(flatten(packed), np.arange(runs[0].size))


@FAST
@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
       alignment=st.sampled_from([16, 32, 64, 128]))
def test_aligned_empty_and_zeros_start_on_the_boundary_and_are_ordinary_arrays_of_their_own(shape, dtype, alignment):
    arrays = [aligned_empty(shape, dtype, alignment) for _ in range(2)] + [aligned_zeros(shape, dtype, alignment)]
    assert not np.any(arrays[2])                                        # aligned_zeros is zero-filled
    for a in arrays:
        assert a.size == 0 or a.ctypes.data % alignment == 0          # an empty array has no first element
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    if arrays[0].size:
        for a, b in zip(arrays, arrays[1:]):
            assert not np.shares_memory(a, b)
        arrays[0][...] = 1
        assert np.all(arrays[0] == 1)


@FAST
@given(params=param_sets(min_size=1), split=st.integers(0, 5))
def test_runs_follow_the_buffers_the_arrays_lie_in(params, split):
    """Two packed sets side by side give (at most) two runs; loose arrays one run each; the runs
    always cover every array once, in order."""
    names = list(params)
    split = min(split, len(names))
    first = pack({k: params[k] for k in names[:split]})
    second = pack({k: params[k] for k in names[split:]})
    arrays = [*first.values(), *second.values()]
    runs = contiguous_runs(arrays)
    assert sum(r.size for r in runs) == num_params(params)
    assert len(runs) <= 2
    np.testing.assert_array_equal(np.concatenate(runs) if runs else np.zeros(0), flatten(params))
    loose = [np.array(params[k], copy=True) for k in names]
    assert len(contiguous_runs(loose)) == sum(a.size > 0 for a in loose)


def test_pack_refuses_mixed_dtypes_and_runs_refuse_strided_arrays():
    with pytest.raises(ValueError, match=r"pack needs arrays of one dtype, got \['float32', 'float64'\]"):
        pack({"a": np.zeros(2, np.float32), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="C-contiguous"):
        contiguous_runs([np.zeros((3, 3))[:, 0]])
