"""The normalisers' kernels against their NumPy statements: the running merge, observation normalisation and
reward scaling (``ppo_np/normalize.py``)."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ppo_np.normalize import (EPS, ObsNormalizer, RewardScaler, RunningMeanStd, merge_moments_kernel,
                              merge_moments_reference)

values = st.floats(-1e3, 1e3, allow_nan=False)


def batches(d):
    return st.lists(arrays(np.float64, st.tuples(st.integers(1, 40), st.just(d)), elements=values), min_size=1,
                    max_size=5)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), d=st.integers(1, 6))
def test_the_merge_kernel_is_chans_merge_in_numpy(data, d):
    """To rounding only: NumPy sums a batch pairwise, the kernel row after row."""
    mean, var, count = np.zeros(d), np.ones(d), 1e-4
    kernel_mean, kernel_var, kernel_count = mean.copy(), var.copy(), count
    for batch in data.draw(batches(d)):
        mean, var, count = merge_moments_reference(mean, var, count, batch)
        kernel_count = merge_moments_kernel(kernel_mean, kernel_var, kernel_count, batch)
        assert kernel_count == count
        np.testing.assert_allclose(kernel_mean, mean, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(kernel_var, var, rtol=1e-10, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), splits=st.lists(st.integers(1, 30), min_size=1, max_size=6))
def test_running_mean_std_equals_the_statistics_of_everything_seen(seed, splits):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in splits]
    rms = RunningMeanStd((3,))
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    # exact pooled statistics of the data plus the prior: weight eps = 1e-4 of mean 0 and variance 1
    eps, n = 1e-4, len(data)
    mean = data.sum(axis=0) / (eps + n)
    var = (eps * (1.0 + mean**2) + ((data - mean) ** 2).sum(axis=0)) / (eps + n)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rms.var, var, rtol=1e-9, atol=1e-12)
    assert math.isclose(rms.count, n + eps)


@settings(max_examples=100, deadline=None)
@given(obs=arrays(np.float32, st.tuples(st.integers(1, 9), st.just(3)), elements=st.floats(-50, 50, width=32)),
       update=st.booleans())
def test_observations_normalised_by_the_statistics_after_the_merge(obs, update):
    norm = ObsNormalizer((3,), clip=2.5, enabled=True)
    norm.rms.update(np.array([[1.0, -2.0, 0.5], [3.0, 0.0, 0.25]]))
    before = (norm.rms.mean.copy(), norm.rms.var.copy(), norm.rms.count)
    out = norm(obs, update=update)
    if update:
        mean, var, count = merge_moments_reference(*before, obs.astype(np.float64))
    else:
        mean, var, count = before
    assert norm.rms.count == count
    want = np.clip((obs.astype(np.float64) - mean) / np.sqrt(var + EPS), -2.5, 2.5)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    assert out.dtype == np.float64 and np.all(np.abs(out) <= 2.5)
    np.testing.assert_array_equal(ObsNormalizer((3,), 2.5, enabled=False)(obs, update=True), obs)


def test_reward_scaling_tracks_the_discounted_return_of_valid_steps():
    """G <- gamma G + r; Var[G] from the valid envs' G only; G <- 0 after an episode's end; r / sqrt(Var[G]
    + eps), clipped: stated in NumPy step by step over episodes ending at random."""
    rng = np.random.default_rng(3)
    N, gamma = 5, 0.9
    scaler = RewardScaler(N, gamma, clip=4.0, enabled=True)
    returns, mean, var, count = np.zeros(N), 0.0, 1.0, 1e-4
    for t in range(60):
        rewards = rng.normal(2.0, 3.0, N)
        done, valid = rng.random(N) < 0.2, rng.random(N) < 0.8
        rewards *= valid
        got = scaler(rewards, done & valid, valid, update=True)
        returns = returns * gamma + rewards
        if valid.any():
            mean, var, count = merge_moments_reference(mean, var, count, returns[valid])
        returns[done & valid] = 0.0
        np.testing.assert_allclose(scaler.returns, returns, rtol=1e-13)
        assert np.isclose(scaler.rms.var, var, rtol=1e-10) and scaler.rms.count == count
        np.testing.assert_allclose(got, np.clip(rewards / np.sqrt(var + EPS), -4.0, 4.0), rtol=1e-10)
    frozen = scaler(np.full(N, 100.0), np.zeros(N, bool), np.ones(N, bool), update=False)
    assert scaler.rms.count == count and np.all(frozen == 4.0)   # no update, clipped
