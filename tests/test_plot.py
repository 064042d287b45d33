"""The plots: panels chosen by the run's algorithm, and the smoothing drawn over each metric."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppo_np.plot import panels_for, smoothed


def test_each_algorithm_gets_its_own_panels():
    keys = {algo: [key for key, _ in panels_for(algo)] for algo in ("clip", "penalty", "trpo")}
    for algo, panel in keys.items():
        assert {"episode_return", "policy_loss", "value_loss", "grad_norm", "exact_kl"} <= set(panel), algo
    assert "beta" in keys["penalty"] and "beta" not in keys["clip"] and "beta" not in keys["trpo"]
    assert "clip_frac" in keys["clip"] and "clip_frac" not in keys["trpo"]
    assert {"step_size", "line_search_backtracks"} <= set(keys["trpo"])
    assert panels_for(None) == panels_for("clip")   # a run directory without config.json


@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), max_size=60))
def test_smoothing_keeps_gaps_stays_within_the_range_and_starts_at_the_first_value(values):
    out = smoothed(values)
    assert len(out) == len(values)
    assert [math.isnan(v) for v in out] == [math.isnan(v) for v in values]
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        first = next(v for v in out if not math.isnan(v))
        assert first == finite[0]
        assert all(min(finite) - 1e-6 <= v <= max(finite) + 1e-6 for v in out if not math.isnan(v))


def test_smoothing_a_constant_gives_the_constant():
    assert smoothed([3.0] * 50) == pytest.approx([3.0] * 50)
