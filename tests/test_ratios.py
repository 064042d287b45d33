"""Laws of the importance ratios: the kernel equals its reference, the ratio and clip-fraction
identities, k3 >= 0, and input validation.

Runs compiled and under ``NUMBA_DISABLE_JIT=1`` (the kernel then runs as plain Python).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppo_np import ratios as R

FAST = settings(deadline=None, max_examples=60)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float32, np.float64])


def tol(dtype) -> dict:
    """Tolerances for comparing two computations done in float64 and stored in ``dtype``."""
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-7, atol=1e-6)


@FAST
@given(B=st.integers(1, 50), dt=dtypes, scale=st.floats(1e-6, 3.0), eps=st.floats(1e-3, 1.0), seed=seeds)
def test_importance_ratios_kernel_matches_reference(B, dt, scale, eps, seed):
    """importance_ratios == importance_ratios_reference: ratio array and the three statistics."""
    rng = np.random.default_rng(seed)
    new, old = (scale * rng.standard_normal((2, B))).astype(dt)
    ratio, clip_frac, k1, k3 = R.importance_ratios(new, old, eps)
    ratio_ref, clip_ref, k1_ref, k3_ref = R.importance_ratios_reference(new, old, eps)
    assert ratio.dtype == dt and ratio.shape == (B,)
    assert all(type(x) is float for x in (clip_frac, k1, k3))
    np.testing.assert_allclose(ratio, ratio_ref, **tol(dt))
    assert clip_frac == clip_ref
    np.testing.assert_allclose([k1, k3], [k1_ref, k3_ref], rtol=1e-12, atol=1e-15)


@FAST
@given(B=st.integers(1, 50), dt=dtypes, eps=st.floats(1e-3, 1.0), seed=seeds)
def test_equal_policies_give_unit_ratio_and_zero_kl(B, dt, eps, seed):
    """logp_new = logp_old: every ratio is exactly 1, nothing is clipped, both KL estimates are 0."""
    logp = (-np.abs(np.random.default_rng(seed).standard_normal(B))).astype(dt)
    ratio, clip_frac, k1, k3 = R.importance_ratios(logp, logp.copy(), eps)
    np.testing.assert_array_equal(ratio, np.ones(B, dt))
    assert (clip_frac, k1, k3) == (0.0, 0.0, 0.0)


@FAST
@given(new=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-30, 5)),
       data=st.data(), eps=st.floats(1e-4, 2.0))
def test_clip_fraction_counts_exactly_and_k3_is_non_negative(new, data, eps):
    """clip_frac = #{i : |r_i - 1| > eps} / B exactly (on the returned ratios, ties not counted);
    k3 >= 0 for any inputs, including differences at rounding level; k1 = mean(logp_old - logp_new)."""
    old = data.draw(hnp.arrays(np.float64, new.shape, elements=st.floats(-30, 5)))
    nudge = data.draw(st.booleans())
    if nudge:                                                        # differences of a few ulps
        old = np.nextafter(new, new + data.draw(st.sampled_from([-1.0, 1.0])))
    ratio, clip_frac, k1, k3 = R.importance_ratios(new, old, eps)
    assert clip_frac == np.count_nonzero(np.abs(ratio - 1.0) > eps) / new.shape[0]
    assert k3 >= 0.0
    np.testing.assert_allclose(k1, np.mean(old - new), rtol=1e-12, atol=1e-14)


def test_clip_fraction_on_exact_boundaries():
    """Ratios exactly 1 +- eps are not clipped; just beyond them are."""
    eps = 0.25                                                       # 1.25 and 0.75 are exact
    r = np.array([1.0, 1.25, 0.75, 1.5, 0.5, np.nextafter(1.25, 2.0)])
    ratio, clip_frac, _, _ = R.importance_ratios(np.log(r), np.zeros_like(r), eps)
    expect = np.abs(ratio - 1.0) > eps
    assert clip_frac == expect.mean()
    assert not expect[0] and expect[3] and expect[4]


@pytest.mark.parametrize("name,call", [
    ("logp_old", lambda: R.importance_ratios(np.zeros(3), np.zeros(4), 0.2)),
    ("logp_old", lambda: R.importance_ratios(np.zeros(3), np.zeros(3, np.float32), 0.2)),
    ("logp_new", lambda: R.importance_ratios(np.zeros((3, 1)), np.zeros((3, 1)), 0.2)),
    ("logp_new", lambda: R.importance_ratios(np.zeros(0), np.zeros(0), 0.2)),
    ("clip_eps", lambda: R.importance_ratios(np.zeros(3), np.zeros(3), 0.0)),
    ("clip_eps", lambda: R.importance_ratios(np.zeros(3), np.zeros(3), float("inf"))),
])
def test_bad_input_names_the_value(name, call):
    """importance_ratios: a ValueError whose message starts with the bad argument's name."""
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()

