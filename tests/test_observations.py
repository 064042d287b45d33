"""Observation spaces: the documented flattening order, single observations against batches, and every
refused space with its message."""
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.observations import check_observation_space, flat_dim, flatten_observations

NESTED = spaces.Dict({"pos": spaces.Box(-1.0, 1.0, (2, 2), np.float32),
                      "mode": spaces.Discrete(3, start=1),
                      "extra": spaces.Tuple((spaces.MultiBinary(2), spaces.MultiDiscrete([2, 3])))})


def test_the_flattening_order_is_the_documented_one():
    # keys in sorted order (extra, mode, pos); Tuple parts in order; Discrete and MultiDiscrete one-hot;
    # Box entries in C order
    obs = {"pos": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "mode": 2,
           "extra": (np.array([1, 0], np.int8), np.array([1, 2]))}
    batch, single = flatten_observations(NESTED, obs)
    assert single and flat_dim(NESTED) == 2 + (2 + 3) + 3 + 4
    np.testing.assert_array_equal(batch, [[1, 0,  0, 1, 0, 0, 1,  0, 1, 0,  1, 2, 3, 4]])


def test_dict_order_does_not_depend_on_how_the_dict_was_written():
    a = spaces.Dict({"b": spaces.Discrete(2), "a": spaces.Box(0, 1, (1,))})
    b = spaces.Dict({"a": spaces.Box(0, 1, (1,)), "b": spaces.Discrete(2)})
    obs = {"a": np.array([0.5], np.float32), "b": 1}
    np.testing.assert_array_equal(flatten_observations(a, obs)[0], flatten_observations(b, obs)[0])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_a_batch_flattens_row_by_row_like_single_observations(n, seed):
    NESTED.seed(seed)
    items = [NESTED.sample() for _ in range(n)]
    batched = gym.vector.utils.concatenate(NESTED, items, gym.vector.utils.create_empty_array(NESTED, n))
    rows, single = flatten_observations(NESTED, batched)
    assert not single and rows.shape == (n, flat_dim(NESTED))
    for row, item in zip(rows, items):
        np.testing.assert_array_equal(row, flatten_observations(NESTED, item)[0][0])


@pytest.mark.parametrize("space, obs, single, rows", [
    (spaces.Box(-1, 1, (3,)), np.zeros(3), True, 1),
    (spaces.Box(-1, 1, (3,)), np.zeros((5, 3)), False, 5),
    (spaces.Discrete(4), 2, True, 1),
    (spaces.Discrete(4), np.array([0, 3]), False, 2),
    (spaces.Box(-1, 1, (2, 3)), np.zeros((2, 3)), True, 1),
    (spaces.Box(-1, 1, (2, 3)), np.zeros((4, 2, 3)), False, 4),
])
def test_single_observations_and_batches_are_told_apart_by_shape(space, obs, single, rows):
    batch, is_single = flatten_observations(space, obs)
    assert is_single == single and batch.shape == (rows, flat_dim(space))


@pytest.mark.parametrize("space, obs, fragment", [
    (spaces.Box(-1, 1, (3,)), np.zeros(4), r"expected an observation of shape \(3,\) or a batch of shape \(N, 3\)"),
    (spaces.Box(-1, 1, (3,)), np.zeros((2, 2, 3)), "got shape \\(2, 2, 3\\)"),
    (spaces.Dict({"a": spaces.Discrete(2)}), {"b": 1}, r"expected a dict with keys \['a'\]"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))), (1,), "expected a tuple of 2 parts"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))), (1, np.array([0, 1])), "mixes single parts and batched"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))), (np.array([1]), np.array([0, 1])), "differ in length"),
])
def test_observations_of_the_wrong_form_are_named(space, obs, fragment):
    with pytest.raises(ValueError, match=fragment):
        flatten_observations(space, obs)


@pytest.mark.parametrize("space, fragment", [
    (spaces.Box(0, 255, (32, 32, 3), np.uint8), r"is an image \(a 3-D Box of uint8\).*no convolutional network"),
    (spaces.Dict({"x": spaces.Box(0, 1, (2,)), "cam": spaces.Box(0, 255, (8, 8, 1), np.uint8)}),
     r"observation space \['cam'\] Box\(0, 255, \(8, 8, 1\), uint8\) is an image"),
    (spaces.Tuple((spaces.Discrete(2), spaces.Text(4))), r"observation space \[1\] Text.*is not supported"),
    (spaces.Sequence(spaces.Discrete(2)), "Sequence.*is not supported; ppo-np takes Box, Discrete"),
    (spaces.Graph(spaces.Box(0, 1, (2,)), None), "Graph.*is not supported"),
    (spaces.OneOf([spaces.Discrete(2), spaces.Discrete(3)]), "OneOf.*is not supported"),
])
def test_refused_spaces_get_their_message(space, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_observation_space(space)


@pytest.mark.parametrize("space", [spaces.Box(-1, 1, (3,)), spaces.Box(0, 255, (8, 8), np.uint8),
                                   spaces.Box(0, 255, (4, 4, 3), np.float32), spaces.Discrete(3), NESTED])
def test_supported_spaces_pass(space):
    check_observation_space(space)
