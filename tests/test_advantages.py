"""Laws of GAE and rewards-to-go: each kernel equals its reference, then GAE's closed forms and
boundaries, and input validation.

Runs compiled and under ``NUMBA_DISABLE_JIT=1`` (the kernels then run as plain Python).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppo_np import advantages as A

FAST = settings(deadline=None, max_examples=60)

seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from([np.float32, np.float64])
gammas = st.one_of(st.just(1.0), st.floats(0.01, 1.0))
lambdas = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def tol(dtype) -> dict:
    """Tolerances for comparing two computations done in float64 and stored in ``dtype``."""
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-7, atol=1e-6)


@st.composite
def rollouts(draw, max_T: int = 12, max_N: int = 4, dtype=None):
    """A (T, N) rollout: float arrays from a seeded rng, flag patterns drawn by hypothesis."""
    T, N = draw(st.integers(1, max_T)), draw(st.integers(1, max_N))
    dt = draw(dtypes) if dtype is None else dtype
    rng = np.random.default_rng(draw(seeds))
    flags = hnp.arrays(np.bool_, (T, N))
    return dict(
        rewards=rng.standard_normal((T, N)).astype(dt),
        values=rng.standard_normal((T, N)).astype(dt),
        next_values=rng.standard_normal((T, N)).astype(dt),
        terminated=draw(flags),
        truncated=draw(flags),
    )


def rtg_args(ro: dict) -> dict:
    """The rollout's arguments to rewards_to_go (it does not read V(s_t))."""
    return {k: v for k, v in ro.items() if k != "values"}


def consistent_episode(rng, T: int, end: int, terminal: bool, dtype=np.float64) -> dict:
    """One env (N = 1) whose episode ends at step ``end`` (terminated or truncated), with
    next_values[t] = values[t + 1] inside the episode, so that GAE(lambda=1) telescopes."""
    values = rng.standard_normal((T, 1))
    next_values = np.empty((T, 1))
    next_values[:-1] = values[1:]
    next_values[-1] = rng.standard_normal()
    next_values[end] = rng.standard_normal()                   # the final observation's value
    terminated = np.zeros((T, 1), bool)
    truncated = np.zeros((T, 1), bool)
    (terminated if terminal else truncated)[end] = True
    return dict(rewards=rng.standard_normal((T, 1)).astype(dtype), values=values.astype(dtype),
                next_values=next_values.astype(dtype), terminated=terminated, truncated=truncated)


# --- every kernel equals its reference --------------------------------------------------------------

@FAST
@given(ro=rollouts(), gamma=gammas, gae_lambda=lambdas)
def test_gae_kernel_matches_reference(ro, gamma, gae_lambda):
    """gae == gae_reference (advantages and returns), in the rewards' dtype."""
    adv, ret = A.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    adv_ref, ret_ref = A.gae_reference(**ro, gamma=gamma, gae_lambda=gae_lambda)
    dt = ro["rewards"].dtype
    assert adv.dtype == ret.dtype == dt and adv.shape == ro["rewards"].shape
    np.testing.assert_allclose(adv, adv_ref, **tol(dt))
    np.testing.assert_allclose(ret, ret_ref, **tol(dt))


@FAST
@given(ro=rollouts(), gamma=gammas)
def test_rewards_to_go_kernel_matches_reference(ro, gamma):
    """rewards_to_go == rewards_to_go_reference, in the rewards' dtype."""
    out = A.rewards_to_go(**rtg_args(ro), gamma=gamma)
    ref = A.rewards_to_go_reference(**rtg_args(ro), gamma=gamma)
    assert out.dtype == ro["rewards"].dtype
    np.testing.assert_allclose(out, ref, **tol(out.dtype))


# --- GAE: special cases and closed forms ------------------------------------------------------------

@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas)
def test_lambda_zero_gives_td_error(ro, gamma):
    """lambda = 0: A_t = delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t), at every step."""
    adv, _ = A.gae(**ro, gamma=gamma, gae_lambda=0.0)
    delta = ro["rewards"] + gamma * (1.0 - ro["terminated"]) * ro["next_values"] - ro["values"]
    np.testing.assert_allclose(adv, delta, rtol=1e-12, atol=1e-12)


@FAST
@given(T=st.integers(1, 15), data=st.data(), gamma=gammas, seed=seeds)
def test_lambda_one_is_monte_carlo_return_minus_value(T, data, gamma, seed):
    """lambda = 1, episode terminating at step k inside the rollout: for t <= k,
    A_t = sum_{j=t..k} gamma^(j-t) r_j - V(s_t); and rewards_to_go gives that sum itself."""
    end = data.draw(st.integers(0, T - 1))
    ro = consistent_episode(np.random.default_rng(seed), T, end, terminal=True)
    adv, ret = A.gae(**ro, gamma=gamma, gae_lambda=1.0)
    rtg = A.rewards_to_go(**rtg_args(ro), gamma=gamma)
    r, v = ro["rewards"][:, 0], ro["values"][:, 0]
    for t in range(end + 1):
        mc = sum(gamma ** (j - t) * r[j] for j in range(t, end + 1))
        np.testing.assert_allclose(adv[t, 0], mc - v[t], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(rtg[t, 0], mc, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret[: end + 1], rtg[: end + 1], rtol=1e-10, atol=1e-10)


@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas)
def test_rewards_to_go_is_gae_lambda_one_returns_when_values_chain(ro, gamma):
    """With next_values[t] = values[t + 1] wherever step t did not end an episode, GAE's
    lambda = 1 returns equal the rewards-to-go, at every step and under any flag pattern."""
    done = ro["terminated"] | ro["truncated"]
    nv = ro["next_values"].copy()
    nv[:-1] = np.where(done[:-1], nv[:-1], ro["values"][1:])
    ro["next_values"] = nv
    _, ret = A.gae(**ro, gamma=gamma, gae_lambda=1.0)
    np.testing.assert_allclose(ret, A.rewards_to_go(**rtg_args(ro), gamma=gamma), rtol=1e-10, atol=1e-10)


@FAST
@given(L=st.integers(1, 30), extra=st.integers(0, 5), r=st.floats(-5, 5), v=st.floats(-5, 5),
       v_last=st.floats(-5, 5), gamma=gammas, gae_lambda=lambdas, terminal=st.booleans())
def test_closed_form_constant_reward_and_value(L, extra, r, v, v_last, gamma, gae_lambda, terminal):
    """Constant reward r and constant V = v on an episode of L steps (then `extra` steps of another).
    With c = gamma lambda, m = L - 1 - t steps to the end, and B = 0 (terminated) or
    gamma v_last (truncated, bootstrapping from the final observation's value v_last):
        A_t = (r + gamma v - v)(1 - c^m)/(1 - c) + c^m (r + B - v)      ((1-c^m)/(1-c) = m if c = 1)
        R_t = r (1 - gamma^(m+1))/(1 - gamma) + gamma^(m+1) B / gamma   (rewards-to-go, m+1 if gamma = 1)."""
    T = L + extra
    rewards = np.full((T, 1), r)
    values = np.full((T, 1), v)
    next_values = np.full((T, 1), v)
    next_values[L - 1] = v_last
    terminated = np.zeros((T, 1), bool)
    truncated = np.zeros((T, 1), bool)
    (terminated if terminal else truncated)[L - 1] = True
    adv, _ = A.gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
    rtg = A.rewards_to_go(rewards, next_values, terminated, truncated, gamma)
    c = gamma * gae_lambda
    B = 0.0 if terminal else gamma * v_last
    for t in range(L):
        m = L - 1 - t
        geo_c = m if c == 1.0 else (1 - c ** m) / (1 - c)
        want_adv = (r + gamma * v - v) * geo_c + c ** m * (r + B - v)
        geo_g = m + 1 if gamma == 1.0 else (1 - gamma ** (m + 1)) / (1 - gamma)
        want_rtg = r * geo_g + gamma ** m * B
        np.testing.assert_allclose(adv[t, 0], want_adv, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rtg[t, 0], want_rtg, rtol=1e-9, atol=1e-9)


# --- GAE: episode boundaries ------------------------------------------------------------------------

@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas, gae_lambda=lambdas, data=st.data(), seed=seeds)
def test_no_leakage_across_episode_boundary(ro, gamma, gae_lambda, data, seed):
    """If env n's episode ends at step k (terminated or truncated), changing anything of env n
    after k (rewards, values, next values, flags) leaves its advantages, returns and
    rewards-to-go at steps <= k unchanged, and every other env's entirely unchanged."""
    T, N = ro["rewards"].shape
    assume(T >= 2)
    k = data.draw(st.integers(0, T - 2))
    n = data.draw(st.integers(0, N - 1))
    ro["terminated"][k, n] |= data.draw(st.booleans())
    ro["truncated"][k, n] |= not ro["terminated"][k, n]         # the episode ends at k either way
    rng = np.random.default_rng(seed)
    after = {key: x.copy() for key, x in ro.items()}
    for key in ("rewards", "values", "next_values"):
        after[key][k + 1:, n] = rng.standard_normal(T - k - 1)
    for key in ("terminated", "truncated"):
        after[key][k + 1:, n] = rng.random(T - k - 1) < 0.5
    before_gae = A.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    after_gae = A.gae(**after, gamma=gamma, gae_lambda=gae_lambda)
    keep = np.ones((T, N), bool)
    keep[k + 1:, n] = False
    for x, y in zip(before_gae, after_gae):
        np.testing.assert_array_equal(x[keep], y[keep])
    rtg_before = A.rewards_to_go(**rtg_args(ro), gamma=gamma)
    rtg_after = A.rewards_to_go(**rtg_args(after), gamma=gamma)
    np.testing.assert_array_equal(rtg_before[keep], rtg_after[keep])


@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas, gae_lambda=lambdas, shift=st.floats(0.5, 10.0))
def test_terminated_never_bootstraps_truncated_always_does(ro, gamma, gae_lambda, shift):
    """Shifting V(s_{t+1}) by s at steps that terminated changes nothing anywhere; at a step t
    that was truncated (not terminated) it changes A_t and R_t by exactly gamma s."""
    nv = ro["next_values"] + shift * ro["terminated"]
    adv, ret = A.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    adv2, ret2 = A.gae(**{**ro, "next_values": nv}, gamma=gamma, gae_lambda=gae_lambda)
    np.testing.assert_array_equal(adv, adv2)
    rtg = A.rewards_to_go(**rtg_args(ro), gamma=gamma)
    np.testing.assert_array_equal(rtg, A.rewards_to_go(**{**rtg_args(ro), "next_values": nv}, gamma=gamma))

    trunc_only = ro["truncated"] & ~ro["terminated"]
    for t, n in zip(*np.nonzero(trunc_only)):
        nv = ro["next_values"].copy()
        nv[t, n] += shift
        adv2, _ = A.gae(**{**ro, "next_values": nv}, gamma=gamma, gae_lambda=gae_lambda)
        rtg2 = A.rewards_to_go(**{**rtg_args(ro), "next_values": nv}, gamma=gamma)
        np.testing.assert_allclose(adv2[t, n] - adv[t, n], gamma * shift, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rtg2[t, n] - rtg[t, n], gamma * shift, rtol=1e-9, atol=1e-9)


@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas, gae_lambda=lambdas, a=st.floats(-3, 3), seed=seeds)
def test_advantages_are_linear_in_rewards(ro, gamma, gae_lambda, a, seed):
    """A(r1 + a r2; V) = A(r1; V) + a A(r2; V = 0): the rewards enter linearly, the values
    affinely; likewise the rewards-to-go, R(r1 + a r2) = R(r1) + a R(r2; V = 0)."""
    r2 = np.random.default_rng(seed).standard_normal(ro["rewards"].shape)
    zeros = np.zeros_like(r2)
    lhs, _ = A.gae(**{**ro, "rewards": ro["rewards"] + a * r2}, gamma=gamma, gae_lambda=gae_lambda)
    A1, _ = A.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    A2, _ = A.gae(**{**ro, "rewards": r2, "values": zeros, "next_values": zeros},
                  gamma=gamma, gae_lambda=gae_lambda)
    np.testing.assert_allclose(lhs, A1 + a * A2, rtol=1e-9, atol=1e-9)
    rtg = lambda **kw: A.rewards_to_go(**{**rtg_args(ro), **kw}, gamma=gamma)  # noqa: E731
    np.testing.assert_allclose(rtg(rewards=ro["rewards"] + a * r2),
                               rtg() + a * rtg(rewards=r2, next_values=zeros), rtol=1e-9, atol=1e-9)


@FAST
@given(ro=rollouts(), gamma=gammas, gae_lambda=lambdas, data=st.data())
def test_permuting_envs_permutes_outputs(ro, gamma, gae_lambda, data):
    """Environments are independent: permuting the N columns of every input permutes the outputs."""
    N = ro["rewards"].shape[1]
    p = np.array(data.draw(st.permutations(range(N))), dtype=np.intp)
    permuted = {key: x[:, p] for key, x in ro.items()}                # non-contiguous views, too
    for x, y in zip(A.gae(**ro, gamma=gamma, gae_lambda=gae_lambda),
                    A.gae(**permuted, gamma=gamma, gae_lambda=gae_lambda)):
        np.testing.assert_array_equal(x[:, p], y)
    np.testing.assert_array_equal(A.rewards_to_go(**rtg_args(ro), gamma=gamma)[:, p],
                                  A.rewards_to_go(**rtg_args(permuted), gamma=gamma))


def test_mixed_float_dtypes_give_the_rewards_dtype():
    """float32 rewards with float64 values (and the reverse): outputs follow the rewards."""
    rng = np.random.default_rng(0)
    flags = np.zeros((5, 2), bool)
    for rdt, vdt in ((np.float32, np.float64), (np.float64, np.float32)):
        r, v = rng.standard_normal((5, 2)).astype(rdt), rng.standard_normal((5, 2)).astype(vdt)
        adv, ret = A.gae(r, v, v, flags, flags, 0.99, 0.95)
        assert adv.dtype == ret.dtype == rdt
        assert A.rewards_to_go(r, v, flags, flags, 0.99).dtype == rdt


# --- bad input --------------------------------------------------------------------------------------

def _rollout(T=4, N=2, dtype=np.float64):
    rng = np.random.default_rng(0)
    f = lambda: rng.standard_normal((T, N)).astype(dtype)  # noqa: E731
    return dict(rewards=f(), values=f(), next_values=f(),
                terminated=np.zeros((T, N), bool), truncated=np.zeros((T, N), bool))


def _bad_gae_cases():
    ro = _rollout()
    yield "gamma", {**ro, "gamma": 0.0, "gae_lambda": 0.9}
    yield "gamma", {**ro, "gamma": 1.5, "gae_lambda": 0.9}
    yield "gamma", {**ro, "gamma": float("nan"), "gae_lambda": 0.9}
    yield "gamma", {**ro, "gamma": "0.99", "gae_lambda": 0.9}
    yield "gae_lambda", {**ro, "gamma": 0.99, "gae_lambda": -0.1}
    yield "gae_lambda", {**ro, "gamma": 0.99, "gae_lambda": 1.01}
    yield "values", {**ro, "values": ro["values"][:3], "gamma": 0.99, "gae_lambda": 0.9}
    yield "next_values", {**ro, "next_values": ro["next_values"].astype(np.float16), "gamma": 0.99, "gae_lambda": 0.9}
    yield "rewards", {**ro, "rewards": ro["rewards"].ravel(), "gamma": 0.99, "gae_lambda": 0.9}
    yield "rewards", {**ro, "rewards": ro["rewards"].astype(np.int64), "gamma": 0.99, "gae_lambda": 0.9}
    yield "rewards", {**ro, "rewards": ro["rewards"].tolist(), "gamma": 0.99, "gae_lambda": 0.9}
    yield "terminated", {**ro, "terminated": ro["terminated"].astype(np.float64), "gamma": 0.99, "gae_lambda": 0.9}
    yield "truncated", {**ro, "truncated": ro["truncated"][:, :1], "gamma": 0.99, "gae_lambda": 0.9}


@pytest.mark.parametrize("name,kwargs", list(_bad_gae_cases()))
def test_bad_gae_input_names_the_value(name, kwargs):
    """Each bad argument of gae raises a ValueError whose message starts with its name."""
    with pytest.raises(ValueError, match=rf"^{name} must"):
        A.gae(**kwargs)
    if name != "gae_lambda" and name != "values":
        rtg_kwargs = {k: v for k, v in kwargs.items() if k not in ("values", "gae_lambda")}
        with pytest.raises(ValueError, match=rf"^{name} must"):
            A.rewards_to_go(**rtg_kwargs)
