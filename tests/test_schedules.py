"""Schedules and controllers: endpoints, monotonicity, and the direction of every feedback rule."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.schedules import AdaptiveBeta, EntropyCoefficient, schedule

positive = st.floats(1e-4, 10.0)


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from(["constant", "linear", "exponential"]), start=positive, end=positive,
       p=st.floats(0.0, 1.0), q=st.floats(0.0, 1.0))
def test_schedules_hit_their_endpoints_and_move_monotonically(kind, start, end, p, q):
    assert schedule(kind, start, end, 0.0) == pytest.approx(start)
    assert schedule(kind, start, end, 1.0) == pytest.approx(end if kind != "constant" else start)
    lo, hi = sorted((p, q))
    a, b = schedule(kind, start, end, lo), schedule(kind, start, end, hi)
    if kind != "constant":
        assert (b - a) * (end - start) >= -1e-12  # moves from start toward end, never back
    assert min(start, end) - 1e-12 <= a <= max(start, end) + 1e-12


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="'cosine'"):
        schedule("cosine", 1.0, 0.0, 0.5)


@settings(max_examples=100, deadline=None)
@given(beta=positive, kl=st.floats(0.0, 1.0), factor=st.floats(1.1, 4.0))
def test_adaptive_beta_grows_above_kl_max_shrinks_below_kl_min_and_holds_between(beta, kl, factor):
    kl_min, kl_max = 0.01 / 1.5, 0.015
    controller = AdaptiveBeta(beta, kl_min, kl_max, factor)
    new = controller.update(kl)
    if kl > kl_max:
        assert new == pytest.approx(beta * factor)
    elif kl < kl_min:
        assert new == pytest.approx(beta / factor)
    else:
        assert new == beta


@pytest.mark.parametrize("entropy, direction", [(0.1, +1), (2.0, -1)])
def test_auto_entropy_coefficient_rises_below_target_and_falls_above(entropy, direction):
    coef = EntropyCoefficient("auto", 0.01, 0.0, target_entropy=0.5, lr=1e-2)
    before = coef.at(0.0)
    for _ in range(20):
        coef.observe(entropy)
    assert (coef.at(0.5) - before) * direction > 0


def test_auto_entropy_state_round_trips():
    a = EntropyCoefficient("auto", 0.01, 0.0, target_entropy=0.5, lr=1e-2)
    for h in (0.1, 0.3, 0.9):
        a.observe(h)
    b = EntropyCoefficient("auto", 0.01, 0.0, target_entropy=0.5, lr=1e-2)
    b.load_state_dict(a.state_dict())
    a.observe(0.2)
    b.observe(0.2)
    assert a.value == b.value
