"""Observation spaces: what the networks see is one flat vector per observation.

An MLP takes a vector, so every supported observation space is flattened, by gymnasium's own
``spaces.flatten`` (one rule in one place, used both in training and by ``predict``):

    Box              its entries in C order (a 1-D Box is used as it is; 2-D and higher are flattened)
    Discrete(n)      one-hot, n entries (entry k - start is 1 for observation k)
    MultiDiscrete    one one-hot block per component, in order
    MultiBinary      its bits, in C order
    Tuple            its parts in order, each flattened, concatenated
    Dict             its values in key order, each flattened, concatenated (gymnasium sorts the keys
                     of a Dict built from a mapping, so the order does not depend on how it was written)

Dict and Tuple nest. Refused, each with its own message: images (a Box of uint8 with 3 dimensions,
anywhere in the space) until ppo-np has a convolutional network, and spaces with no fixed size
(Text, Sequence, Graph, OneOf).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

_FLAT = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_observation_space(space: gym.Space, where: str = "observation space") -> None:
    """A ValueError naming ``space`` (or the part of it at fault) unless ppo-np can flatten it."""
    if isinstance(space, spaces.Box):
        if len(space.shape) == 3 and space.dtype == np.uint8:
            raise ValueError(f"{where} {space} is an image (a 3-D Box of uint8); ppo-np's networks are MLPs and "
                             "take no images yet (no convolutional network): flatten it or extract features with "
                             "a wrapper first")
        return
    if isinstance(space, _FLAT):
        return
    if isinstance(space, spaces.Dict):
        for key, part in space.spaces.items():
            check_observation_space(part, f"{where} [{key!r}]")
        return
    if isinstance(space, spaces.Tuple):
        for i, part in enumerate(space.spaces):
            check_observation_space(part, f"{where} [{i}]")
        return
    raise ValueError(f"{where} {space} is not supported; ppo-np takes Box, Discrete, MultiDiscrete, MultiBinary, "
                     "and Dict or Tuple of these (spaces with a fixed size, flattened into one vector)")


def is_flat(space: gym.Space) -> bool:
    """True for a 1-D Box: the networks take its observations as they are."""
    return isinstance(space, spaces.Box) and len(space.shape) == 1


def flat_dim(space: gym.Space) -> int:
    """The length of the flattened observation."""
    return int(spaces.flatdim(space))


def flatten_observations(space: gym.Space, obs) -> tuple[np.ndarray, bool]:
    """``(batch, single)``: raw observations of ``space`` as an (N, flat_dim) array, and whether ``obs``
    was one observation (N = 1) rather than a batch.

    One observation has the space's own form (a Box's shape, an integer for Discrete, a dict for a
    Dict); a batch adds a leading axis to every leaf (a Dict of arrays, a tuple of arrays). A ValueError
    names the shape expected when ``obs`` is neither.
    """
    single = _is_single(space, obs)
    if is_flat(space):
        return np.atleast_2d(np.asarray(obs)), single
    if single:
        return spaces.flatten(space, obs)[None], True
    batch = gym.vector.utils.batch_space(space, _batch_size(space, obs))
    return np.stack([spaces.flatten(space, o) for o in gym.vector.utils.iterate(batch, obs)]), False


def _is_single(space: gym.Space, obs) -> bool:
    """Whether ``obs`` is one observation of ``space`` (True) or a batch of them (False), by shape."""
    if isinstance(space, spaces.Dict):
        if not (isinstance(obs, dict) and set(obs) == set(space.spaces)):
            raise ValueError(f"expected a dict with keys {sorted(space.spaces)} for observation space {space}, "
                             f"got {_describe(obs)}")
        answers = {_is_single(part, obs[key]) for key, part in space.spaces.items()}
    elif isinstance(space, spaces.Tuple):
        if not (isinstance(obs, (tuple, list)) and len(obs) == len(space.spaces)):
            raise ValueError(f"expected a tuple of {len(space.spaces)} parts for observation space {space}, "
                             f"got {_describe(obs)}")
        answers = {_is_single(part, o) for part, o in zip(space.spaces, obs)}
    else:
        shape = np.shape(obs)
        if shape == space.shape:
            return True
        if len(shape) == len(space.shape) + 1 and shape[1:] == space.shape and shape[0] >= 1:
            return False
        raise ValueError(f"expected an observation of shape {space.shape} or a batch of shape (N, "
                         f"{', '.join(map(str, space.shape))}) for observation space {space}, got shape {shape}")
    if len(answers) != 1:
        raise ValueError(f"observation for {space} mixes single parts and batched parts")
    return answers.pop()


def _batch_size(space: gym.Space, obs) -> int:
    if isinstance(space, spaces.Dict):
        sizes = {_batch_size(part, obs[key]) for key, part in space.spaces.items()}
    elif isinstance(space, spaces.Tuple):
        sizes = {_batch_size(part, o) for part, o in zip(space.spaces, obs)}
    else:
        return int(np.shape(obs)[0])
    if len(sizes) != 1:
        raise ValueError(f"the parts of a batch of observations for {space} differ in length: {sorted(sizes)}")
    return sizes.pop()


def _describe(obs) -> str:
    return f"{type(obs).__name__}" + (f" with keys {sorted(obs)}" if isinstance(obs, dict) else "")
