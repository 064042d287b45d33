"""Laws of the rollout kernels: each kernel equals its reference, then GAE's closed forms and
boundaries, shuffling determinism, importance-ratio identities, and input validation.

Runs compiled and under ``NUMBA_DISABLE_JIT=1`` (the kernels then run as plain Python).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppo_np import kernels as K

FAST = settings(deadline=None, max_examples=60)
SOME = settings(deadline=None, max_examples=25)

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
    adv, ret = K.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    adv_ref, ret_ref = K.gae_reference(**ro, gamma=gamma, gae_lambda=gae_lambda)
    dt = ro["rewards"].dtype
    assert adv.dtype == ret.dtype == dt and adv.shape == ro["rewards"].shape
    np.testing.assert_allclose(adv, adv_ref, **tol(dt))
    np.testing.assert_allclose(ret, ret_ref, **tol(dt))


@FAST
@given(ro=rollouts(), gamma=gammas)
def test_rewards_to_go_kernel_matches_reference(ro, gamma):
    """rewards_to_go == rewards_to_go_reference, in the rewards' dtype."""
    out = K.rewards_to_go(**rtg_args(ro), gamma=gamma)
    ref = K.rewards_to_go_reference(**rtg_args(ro), gamma=gamma)
    assert out.dtype == ro["rewards"].dtype
    np.testing.assert_allclose(out, ref, **tol(out.dtype))


@FAST
@given(B=st.integers(1, 50), dt=dtypes, scale=st.floats(1e-6, 3.0), eps=st.floats(1e-3, 1.0), seed=seeds)
def test_importance_ratios_kernel_matches_reference(B, dt, scale, eps, seed):
    """importance_ratios == importance_ratios_reference: ratio array and the three statistics."""
    rng = np.random.default_rng(seed)
    new, old = (scale * rng.standard_normal((2, B))).astype(dt)
    ratio, clip_frac, k1, k3 = K.importance_ratios(new, old, eps)
    ratio_ref, clip_ref, k1_ref, k3_ref = K.importance_ratios_reference(new, old, eps)
    assert ratio.dtype == dt and ratio.shape == (B,)
    assert all(type(x) is float for x in (clip_frac, k1, k3))
    np.testing.assert_allclose(ratio, ratio_ref, **tol(dt))
    assert clip_frac == clip_ref
    np.testing.assert_allclose([k1, k3], [k1_ref, k3_ref], rtol=1e-12, atol=1e-15)


@FAST
@given(n=st.integers(0, 200), seed=st.integers(0, 2**64 - 1))
def test_permutation_kernel_matches_reference(n, seed):
    """Numba's MT19937 + Fisher-Yates draws exactly NumPy's legacy-RandomState permutation."""
    np.testing.assert_array_equal(K.permutation(n, seed), K.permutation_reference(n, K._seed32(seed)))


@FAST
@given(M=st.integers(1, 20), D=st.one_of(st.none(), st.integers(1, 5)), B=st.integers(0, 30),
       dt=st.sampled_from([np.float32, np.float64, np.int64, np.bool_]), seed=seeds)
def test_gather_rows_matches_reference(M, D, B, dt, seed):
    """gather_rows writes src[idx] into the given out (1-D and 2-D) and returns that same array."""
    rng = np.random.default_rng(seed)
    src = (10 * rng.standard_normal((M,) if D is None else (M, D))).astype(dt)
    idx = rng.integers(0, M, size=B)
    out = np.empty((B,) + src.shape[1:], dt)
    ref = K.gather_rows_reference(src, idx, np.empty_like(out))
    got = K.gather_rows(src, idx, out)
    assert got is out
    np.testing.assert_array_equal(out, ref)


# --- GAE: special cases and closed forms ------------------------------------------------------------

@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas)
def test_lambda_zero_gives_td_error(ro, gamma):
    """lambda = 0: A_t = delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t), at every step."""
    adv, _ = K.gae(**ro, gamma=gamma, gae_lambda=0.0)
    delta = ro["rewards"] + gamma * (1.0 - ro["terminated"]) * ro["next_values"] - ro["values"]
    np.testing.assert_allclose(adv, delta, rtol=1e-12, atol=1e-12)


@FAST
@given(T=st.integers(1, 15), data=st.data(), gamma=gammas, seed=seeds)
def test_lambda_one_is_monte_carlo_return_minus_value(T, data, gamma, seed):
    """lambda = 1, episode terminating at step k inside the rollout: for t <= k,
    A_t = sum_{j=t..k} gamma^(j-t) r_j - V(s_t); and rewards_to_go gives that sum itself."""
    end = data.draw(st.integers(0, T - 1))
    ro = consistent_episode(np.random.default_rng(seed), T, end, terminal=True)
    adv, ret = K.gae(**ro, gamma=gamma, gae_lambda=1.0)
    rtg = K.rewards_to_go(**rtg_args(ro), gamma=gamma)
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
    _, ret = K.gae(**ro, gamma=gamma, gae_lambda=1.0)
    np.testing.assert_allclose(ret, K.rewards_to_go(**rtg_args(ro), gamma=gamma), rtol=1e-10, atol=1e-10)


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
    adv, _ = K.gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
    rtg = K.rewards_to_go(rewards, next_values, terminated, truncated, gamma)
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
    before_gae = K.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    after_gae = K.gae(**after, gamma=gamma, gae_lambda=gae_lambda)
    keep = np.ones((T, N), bool)
    keep[k + 1:, n] = False
    for x, y in zip(before_gae, after_gae):
        np.testing.assert_array_equal(x[keep], y[keep])
    rtg_before = K.rewards_to_go(**rtg_args(ro), gamma=gamma)
    rtg_after = K.rewards_to_go(**rtg_args(after), gamma=gamma)
    np.testing.assert_array_equal(rtg_before[keep], rtg_after[keep])


@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas, gae_lambda=lambdas, shift=st.floats(0.5, 10.0))
def test_terminated_never_bootstraps_truncated_always_does(ro, gamma, gae_lambda, shift):
    """Shifting V(s_{t+1}) by s at steps that terminated changes nothing anywhere; at a step t
    that was truncated (not terminated) it changes A_t and R_t by exactly gamma s."""
    nv = ro["next_values"] + shift * ro["terminated"]
    adv, ret = K.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    adv2, ret2 = K.gae(**{**ro, "next_values": nv}, gamma=gamma, gae_lambda=gae_lambda)
    np.testing.assert_array_equal(adv, adv2)
    rtg = K.rewards_to_go(**rtg_args(ro), gamma=gamma)
    np.testing.assert_array_equal(rtg, K.rewards_to_go(**{**rtg_args(ro), "next_values": nv}, gamma=gamma))

    trunc_only = ro["truncated"] & ~ro["terminated"]
    for t, n in zip(*np.nonzero(trunc_only)):
        nv = ro["next_values"].copy()
        nv[t, n] += shift
        adv2, _ = K.gae(**{**ro, "next_values": nv}, gamma=gamma, gae_lambda=gae_lambda)
        rtg2 = K.rewards_to_go(**{**rtg_args(ro), "next_values": nv}, gamma=gamma)
        np.testing.assert_allclose(adv2[t, n] - adv[t, n], gamma * shift, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rtg2[t, n] - rtg[t, n], gamma * shift, rtol=1e-9, atol=1e-9)


@FAST
@given(ro=rollouts(dtype=np.float64), gamma=gammas, gae_lambda=lambdas, a=st.floats(-3, 3), seed=seeds)
def test_advantages_are_linear_in_rewards(ro, gamma, gae_lambda, a, seed):
    """A(r1 + a r2; V) = A(r1; V) + a A(r2; V = 0): the rewards enter linearly, the values
    affinely; likewise the rewards-to-go, R(r1 + a r2) = R(r1) + a R(r2; V = 0)."""
    r2 = np.random.default_rng(seed).standard_normal(ro["rewards"].shape)
    zeros = np.zeros_like(r2)
    lhs, _ = K.gae(**{**ro, "rewards": ro["rewards"] + a * r2}, gamma=gamma, gae_lambda=gae_lambda)
    A1, _ = K.gae(**ro, gamma=gamma, gae_lambda=gae_lambda)
    A2, _ = K.gae(**{**ro, "rewards": r2, "values": zeros, "next_values": zeros},
                  gamma=gamma, gae_lambda=gae_lambda)
    np.testing.assert_allclose(lhs, A1 + a * A2, rtol=1e-9, atol=1e-9)
    rtg = lambda **kw: K.rewards_to_go(**{**rtg_args(ro), **kw}, gamma=gamma)  # noqa: E731
    np.testing.assert_allclose(rtg(rewards=ro["rewards"] + a * r2),
                               rtg() + a * rtg(rewards=r2, next_values=zeros), rtol=1e-9, atol=1e-9)


@FAST
@given(ro=rollouts(), gamma=gammas, gae_lambda=lambdas, data=st.data())
def test_permuting_envs_permutes_outputs(ro, gamma, gae_lambda, data):
    """Environments are independent: permuting the N columns of every input permutes the outputs."""
    N = ro["rewards"].shape[1]
    p = np.array(data.draw(st.permutations(range(N))), dtype=np.intp)
    permuted = {key: x[:, p] for key, x in ro.items()}                # non-contiguous views, too
    for x, y in zip(K.gae(**ro, gamma=gamma, gae_lambda=gae_lambda),
                    K.gae(**permuted, gamma=gamma, gae_lambda=gae_lambda)):
        np.testing.assert_array_equal(x[:, p], y)
    np.testing.assert_array_equal(K.rewards_to_go(**rtg_args(ro), gamma=gamma)[:, p],
                                  K.rewards_to_go(**rtg_args(permuted), gamma=gamma))


def test_mixed_float_dtypes_give_the_rewards_dtype():
    """float32 rewards with float64 values (and the reverse): outputs follow the rewards."""
    rng = np.random.default_rng(0)
    flags = np.zeros((5, 2), bool)
    for rdt, vdt in ((np.float32, np.float64), (np.float64, np.float32)):
        r, v = rng.standard_normal((5, 2)).astype(rdt), rng.standard_normal((5, 2)).astype(vdt)
        adv, ret = K.gae(r, v, v, flags, flags, 0.99, 0.95)
        assert adv.dtype == ret.dtype == rdt
        assert K.rewards_to_go(r, v, flags, flags, 0.99).dtype == rdt


# --- shuffling --------------------------------------------------------------------------------------

@FAST
@given(n=st.integers(1, 300), minibatch_size=st.integers(1, 80), seed=st.integers(0, 2**63 - 1))
def test_minibatches_partition_a_permutation(n, minibatch_size, seed):
    """Each epoch is a permutation of 0..n-1; its minibatches, in order, are that permutation cut
    into pieces of minibatch_size (the last one the remainder); same seed, same minibatches."""
    perm = K.permutation(n, seed)
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    mbs = K.minibatch_indices(n, minibatch_size, seed)
    np.testing.assert_array_equal(np.concatenate(mbs), perm)
    sizes = [len(mb) for mb in mbs]
    assert sizes[:-1] == [minibatch_size] * (len(mbs) - 1)
    assert sizes[-1] == (n % minibatch_size or min(minibatch_size, n))
    assert all(mb.dtype == np.int64 for mb in mbs)
    again = K.minibatch_indices(n, minibatch_size, seed)
    assert all(np.array_equal(x, y) for x, y in zip(mbs, again))


@SOME
@given(run_seed=st.integers(0, 2**64 - 1), update=st.integers(0, 10**6), epoch=st.integers(0, 100))
def test_epoch_seeds_are_deterministic_and_distinct(run_seed, update, epoch):
    """epoch_seed is a pure function into [0, 2^63); changing any one argument changes the seed
    and (for n = 64) the shuffle."""
    s = K.epoch_seed(run_seed, update, epoch)
    assert s == K.epoch_seed(run_seed, update, epoch) and 0 <= s < 2**63
    others = [K.epoch_seed((run_seed + 1) % 2**64, update, epoch),
              K.epoch_seed(run_seed, update + 1, epoch), K.epoch_seed(run_seed, update, epoch + 1)]
    assert s not in others
    perm = K.permutation(64, s)
    assert not any(np.array_equal(perm, K.permutation(64, o)) for o in others)


def test_epoch_seeds_of_a_run_are_all_distinct():
    """Over 200 updates x 10 epochs of one run, no two epochs share a seed or a shuffle."""
    seeds_ = {K.epoch_seed(7, u, e) for u in range(200) for e in range(10)}
    assert len(seeds_) == 2000
    shuffles = {K.permutation(32, s).tobytes() for s in seeds_}
    assert len(shuffles) == 2000


def test_permutations_are_uniform():
    """All 4! = 24 orders of 4 items are equally likely: over the seeds of 4800 epochs, a
    chi-square test on their counts (23 dof) stays below 70 (p ~ 1e-6). Catches Sattolo's
    off-by-one (j < i), which only ever draws the 6 cyclic orders. Deterministic: fixed seeds."""
    counts: dict[bytes, int] = {}
    for e in range(4800):
        key = K.permutation(4, K.epoch_seed(0, e // 10, e % 10)).tobytes()
        counts[key] = counts.get(key, 0) + 1
    expected = 4800 / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values()) + (24 - len(counts)) * expected
    assert len(counts) == 24 and chi2 < 70, (len(counts), chi2)


def test_permutation_ignores_and_keeps_numpy_global_rng():
    """Numba's RNG is seeded inside the kernel: NumPy's global seed does not change the shuffle,
    and the shuffle does not advance NumPy's global RNG (compiled or not)."""
    np.random.seed(1)
    a = K.permutation(50, 123)
    after_a = np.random.random()
    np.random.seed(2)
    b = K.permutation(50, 123)
    np.random.seed(1)
    np.testing.assert_array_equal(a, b)
    assert np.random.random() == after_a


def test_shuffle_is_reproduced_by_a_fresh_process_with_the_other_jit_mode():
    """A fresh interpreter (no shared state), with NUMBA_DISABLE_JIT flipped, draws the same
    minibatches: a resumed run, compiled or not, reproduces its shuffles from the seeds alone."""
    code = ("from ppo_np import kernels as K; import numpy as np; "
            "print(np.concatenate(K.minibatch_indices(1000, 64, K.epoch_seed(3, 17, 2))).tolist())")
    env = dict(os.environ)
    env["NUMBA_DISABLE_JIT"] = "0" if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0") else "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = np.concatenate(K.minibatch_indices(1000, 64, K.epoch_seed(3, 17, 2)))
    assert eval(out.stdout) == here.tolist()


# --- importance ratios ------------------------------------------------------------------------------

@FAST
@given(B=st.integers(1, 50), dt=dtypes, eps=st.floats(1e-3, 1.0), seed=seeds)
def test_equal_policies_give_unit_ratio_and_zero_kl(B, dt, eps, seed):
    """logp_new = logp_old: every ratio is exactly 1, nothing is clipped, both KL estimates are 0."""
    logp = (-np.abs(np.random.default_rng(seed).standard_normal(B))).astype(dt)
    ratio, clip_frac, k1, k3 = K.importance_ratios(logp, logp.copy(), eps)
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
    ratio, clip_frac, k1, k3 = K.importance_ratios(new, old, eps)
    assert clip_frac == np.count_nonzero(np.abs(ratio - 1.0) > eps) / new.shape[0]
    assert k3 >= 0.0
    np.testing.assert_allclose(k1, np.mean(old - new), rtol=1e-12, atol=1e-14)


def test_clip_fraction_on_exact_boundaries():
    """Ratios exactly 1 +- eps are not clipped; just beyond them are."""
    eps = 0.25                                                       # 1.25 and 0.75 are exact
    r = np.array([1.0, 1.25, 0.75, 1.5, 0.5, np.nextafter(1.25, 2.0)])
    ratio, clip_frac, _, _ = K.importance_ratios(np.log(r), np.zeros_like(r), eps)
    expect = np.abs(ratio - 1.0) > eps
    assert clip_frac == expect.mean()
    assert not expect[0] and expect[3] and expect[4]


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
        K.gae(**kwargs)
    if name != "gae_lambda" and name != "values":
        rtg_kwargs = {k: v for k, v in kwargs.items() if k not in ("values", "gae_lambda")}
        with pytest.raises(ValueError, match=rf"^{name} must"):
            K.rewards_to_go(**rtg_kwargs)


@pytest.mark.parametrize("name,call", [
    ("logp_old", lambda: K.importance_ratios(np.zeros(3), np.zeros(4), 0.2)),
    ("logp_old", lambda: K.importance_ratios(np.zeros(3), np.zeros(3, np.float32), 0.2)),
    ("logp_new", lambda: K.importance_ratios(np.zeros((3, 1)), np.zeros((3, 1)), 0.2)),
    ("logp_new", lambda: K.importance_ratios(np.zeros(0), np.zeros(0), 0.2)),
    ("clip_eps", lambda: K.importance_ratios(np.zeros(3), np.zeros(3), 0.0)),
    ("clip_eps", lambda: K.importance_ratios(np.zeros(3), np.zeros(3), float("inf"))),
    ("n", lambda: K.permutation(-1, 0)),
    ("seed", lambda: K.permutation(5, -1)),
    ("seed", lambda: K.permutation(5, 2**64)),
    ("seed", lambda: K.permutation(5, 1.0)),
    ("minibatch_size", lambda: K.minibatch_indices(10, 0, 0)),
    ("n", lambda: K.minibatch_slices(0, 4)),
    ("run_seed", lambda: K.epoch_seed(-1, 0, 0)),
    ("update", lambda: K.epoch_seed(0, True, 0)),
    ("epoch", lambda: K.epoch_seed(0, 0, 2**64)),
    ("src", lambda: K.gather_rows(np.zeros((2, 2, 2)), np.zeros(1, np.int64), np.zeros((1, 2, 2)))),
    ("idx", lambda: K.gather_rows(np.zeros(4), np.zeros(2), np.zeros(2))),
    ("idx", lambda: K.gather_rows(np.zeros(4), np.array([0, 4]), np.zeros(2))),
    ("idx", lambda: K.gather_rows(np.zeros(4), np.array([-1, 0]), np.zeros(2))),
    ("out", lambda: K.gather_rows(np.zeros((4, 3)), np.array([0, 1]), np.zeros((2, 2)))),
    ("out", lambda: K.gather_rows(np.zeros(4), np.array([0, 1]), np.zeros(2, np.float32))),
    ("out", lambda: K.gather_rows(np.zeros((4, 3)), np.array([0, 1]), np.zeros((3, 2)).T)),
])
def test_bad_input_names_the_value(name, call):
    """Every other public kernel: a ValueError whose message starts with the bad argument's name."""
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 60), D=st.integers(1, 5), max_rows=st.integers(1, 30),
       data=st.data())
def test_minibatch_gatherer_equals_the_reference_for_every_source(seed, M, D, max_rows, data):
    rng = np.random.default_rng(seed)
    sources = [rng.standard_normal((M, D)).astype(np.float32), rng.standard_normal(M), rng.integers(0, 5, M),
               rng.random(M) < 0.5]
    gather = K.MinibatchGatherer(sources, max_rows)
    for _ in range(3):  # buffers are reused across calls
        B = data.draw(st.integers(0, max_rows))
        idx = rng.integers(0, M, B).astype(np.int64)
        for got, src in zip(gather(idx), sources):
            np.testing.assert_array_equal(got, K.gather_rows_reference(src, idx, np.empty_like(got)))
            assert got.dtype == src.dtype and got.shape == (B, *src.shape[1:])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 40), D=st.integers(1, 4), B=st.integers(0, 12),
       bad=st.booleans())
def test_gather_minibatch_kernel_matches_its_reference(seed, M, D, B, bad):
    """Mixed dtypes and widths, in-range and out-of-range indices: same answer, same buffers."""
    rng = np.random.default_rng(seed)
    sources = (rng.standard_normal((M, D)).astype(np.float32), rng.integers(-9, 9, (M, 1)), rng.random((M, 1)) < 0.5)
    idx = rng.integers(0, M, B).astype(np.int64)
    if bad and B:
        idx[rng.integers(B)] = rng.choice([-1, M])
    outs = [tuple(np.zeros((B + 2, src.shape[1]), src.dtype) for src in sources) for _ in range(2)]
    got = K.gather_minibatch_kernel(tuple(zip(sources, outs[0])), idx, M)
    want = K.gather_minibatch_reference(tuple(zip(sources, outs[1])), idx, M)
    assert got == want == (not (bad and B))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_minibatch_gatherer_refuses_bad_sources_and_indices():
    a, b = np.arange(20.0).reshape(10, 2), np.zeros(9)
    with pytest.raises(ValueError, match="same number of rows"):
        K.MinibatchGatherer([a, b], 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.MinibatchGatherer([a.T], 4)
    gather = K.MinibatchGatherer([a], 4)
    with pytest.raises(ValueError, match="more than the buffers' 4"):
        gather(np.arange(5, dtype=np.int64))
    before = gather(np.array([3, 1], dtype=np.int64))[0].copy()
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        gather(np.array([0, 10], dtype=np.int64))
    np.testing.assert_array_equal(gather.buffers[0][:2], before)     # a refused call copies nothing
    with pytest.raises(ValueError, match="int64"):
        gather(np.array([0, 1], dtype=np.int32))
