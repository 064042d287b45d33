"""Laws of the minibatches: the shuffle kernel equals its reference, epochs partition a permutation,
seeds are deterministic and distinct, shuffles are uniform and the same compiled or not, the gatherer
copies the rows it is asked for, and input validation.

Runs compiled and under ``NUMBA_DISABLE_JIT=1`` (the kernels then run as plain Python).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import minibatches as MB

FAST = settings(deadline=None, max_examples=60)
SOME = settings(deadline=None, max_examples=25)


@FAST
@given(n=st.integers(0, 200), seed=st.integers(0, 2**64 - 1))
def test_permutation_kernel_matches_reference(n, seed):
    """Numba's MT19937 + Fisher-Yates draws exactly NumPy's legacy-RandomState permutation."""
    np.testing.assert_array_equal(MB.permutation(n, seed), MB.permutation_reference(n, MB._seed32(seed)))


@FAST
@given(n=st.integers(1, 300), minibatch_size=st.integers(1, 80), seed=st.integers(0, 2**63 - 1))
def test_minibatches_partition_a_permutation(n, minibatch_size, seed):
    """Each epoch is a permutation of 0..n-1; its minibatches, in order, are that permutation cut
    into pieces of minibatch_size (the last one the remainder); same seed, same minibatches."""
    perm = MB.permutation(n, seed)
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    mbs = MB.minibatch_indices(n, minibatch_size, seed)
    np.testing.assert_array_equal(np.concatenate(mbs), perm)
    sizes = [len(mb) for mb in mbs]
    assert sizes[:-1] == [minibatch_size] * (len(mbs) - 1)
    assert sizes[-1] == (n % minibatch_size or min(minibatch_size, n))
    assert all(mb.dtype == np.int64 for mb in mbs)
    again = MB.minibatch_indices(n, minibatch_size, seed)
    assert all(np.array_equal(x, y) for x, y in zip(mbs, again))


@FAST
@given(n=st.integers(1, 120), minibatch_size=st.integers(1, 50), run_seed=st.integers(0, 2**64 - 1),
       update=st.integers(0, 1000), epochs=st.integers(0, 4), offset=st.integers(0, 7))
def test_epoch_minibatches_are_each_epochs_seeded_cut_of_the_rows(n, minibatch_size, run_seed, update, epochs,
                                                                    offset):
    """Epoch e's minibatches are rows[minibatch_indices(n, minibatch_size, epoch_seed(run_seed, update, e))]:
    every epoch partitions the rows, one list per epoch, epochs shuffled apart."""
    rows = np.arange(n, dtype=np.int64) * 3 + offset                      # the valid sample indices
    got = list(MB.epoch_minibatches(rows, minibatch_size, run_seed, update, epochs))
    assert len(got) == epochs
    for epoch, minibatches in enumerate(got):
        want = MB.minibatch_indices(n, minibatch_size, MB.epoch_seed(run_seed, update, epoch))
        assert len(minibatches) == len(want)
        for mb, idx in zip(minibatches, want):
            np.testing.assert_array_equal(mb, rows[idx])
        np.testing.assert_array_equal(np.sort(np.concatenate(minibatches)), rows)


@SOME
@given(run_seed=st.integers(0, 2**64 - 1), update=st.integers(0, 10**6), epoch=st.integers(0, 100))
def test_epoch_seeds_are_deterministic_and_distinct(run_seed, update, epoch):
    """epoch_seed is a pure function into [0, 2^63); changing any one argument changes the seed
    and (for n = 64) the shuffle."""
    s = MB.epoch_seed(run_seed, update, epoch)
    assert s == MB.epoch_seed(run_seed, update, epoch) and 0 <= s < 2**63
    others = [MB.epoch_seed((run_seed + 1) % 2**64, update, epoch),
              MB.epoch_seed(run_seed, update + 1, epoch), MB.epoch_seed(run_seed, update, epoch + 1)]
    assert s not in others
    perm = MB.permutation(64, s)
    assert not any(np.array_equal(perm, MB.permutation(64, o)) for o in others)


def test_epoch_seeds_of_a_run_are_all_distinct():
    """Over 200 updates x 10 epochs of one run, no two epochs share a seed or a shuffle."""
    seeds_ = {MB.epoch_seed(7, u, e) for u in range(200) for e in range(10)}
    assert len(seeds_) == 2000
    shuffles = {MB.permutation(32, s).tobytes() for s in seeds_}
    assert len(shuffles) == 2000


def test_permutations_are_uniform():
    """All 4! = 24 orders of 4 items are equally likely: over the seeds of 4800 epochs, a
    chi-square test on their counts (23 dof) stays below 70 (p ~ 1e-6). Catches Sattolo's
    off-by-one (j < i), which only ever draws the 6 cyclic orders. Deterministic: fixed seeds."""
    counts: dict[bytes, int] = {}
    for e in range(4800):
        key = MB.permutation(4, MB.epoch_seed(0, e // 10, e % 10)).tobytes()
        counts[key] = counts.get(key, 0) + 1
    expected = 4800 / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values()) + (24 - len(counts)) * expected
    assert len(counts) == 24 and chi2 < 70, (len(counts), chi2)


def test_permutation_ignores_and_keeps_numpy_global_rng():
    """Numba's RNG is seeded inside the kernel: NumPy's global seed does not change the shuffle,
    and the shuffle does not advance NumPy's global RNG (compiled or not)."""
    np.random.seed(1)
    a = MB.permutation(50, 123)
    after_a = np.random.random()
    np.random.seed(2)
    b = MB.permutation(50, 123)
    np.random.seed(1)
    np.testing.assert_array_equal(a, b)
    assert np.random.random() == after_a


def test_shuffle_is_reproduced_by_a_fresh_process_with_the_other_jit_mode():
    """A fresh interpreter (no shared state), with NUMBA_DISABLE_JIT flipped, draws the same
    minibatches: a resumed run, compiled or not, reproduces its shuffles from the seeds alone."""
    code = ("from ppo_np import minibatches as MB; import numpy as np; "
            "print(np.concatenate(MB.minibatch_indices(1000, 64, MB.epoch_seed(3, 17, 2))).tolist())")
    env = dict(os.environ)
    env["NUMBA_DISABLE_JIT"] = "0" if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0") else "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = np.concatenate(MB.minibatch_indices(1000, 64, MB.epoch_seed(3, 17, 2)))
    assert eval(out.stdout) == here.tolist()


@pytest.mark.parametrize("name,call", [
    ("n", lambda: MB.permutation(-1, 0)),
    ("seed", lambda: MB.permutation(5, -1)),
    ("seed", lambda: MB.permutation(5, 2**64)),
    ("seed", lambda: MB.permutation(5, 1.0)),
    ("minibatch_size", lambda: MB.minibatch_indices(10, 0, 0)),
    ("n", lambda: MB.minibatch_slices(0, 4)),
    ("run_seed", lambda: MB.epoch_seed(-1, 0, 0)),
    ("update", lambda: MB.epoch_seed(0, True, 0)),
    ("epoch", lambda: MB.epoch_seed(0, 0, 2**64)),
    ("rows", lambda: MB.epoch_minibatches(np.zeros(0, np.int64), 4, 0, 0, 1)),
    ("rows", lambda: MB.epoch_minibatches(np.zeros(3), 4, 0, 0, 1)),
    ("minibatch_size", lambda: MB.epoch_minibatches(np.arange(3), 0, 0, 0, 1)),
    ("epochs", lambda: MB.epoch_minibatches(np.arange(3), 2, 0, 0, -1)),
])
def test_bad_input_names_the_value(name, call):
    """Seeds, shuffles and minibatch cuts: a ValueError whose message starts with the bad argument's name."""
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.integers(1, 60), D=st.integers(1, 5), max_rows=st.integers(1, 30),
       data=st.data())
def test_minibatch_gatherer_equals_the_reference_for_every_source(seed, M, D, max_rows, data):
    rng = np.random.default_rng(seed)
    sources = [rng.standard_normal((M, D)).astype(np.float32), rng.standard_normal(M), rng.integers(0, 5, M),
               rng.random(M) < 0.5]
    gather = MB.MinibatchGatherer(sources, max_rows)
    for _ in range(3):  # buffers are reused across calls
        B = data.draw(st.integers(0, max_rows))
        idx = rng.integers(0, M, B).astype(np.int64)
        for got, src in zip(gather(idx), sources):
            np.testing.assert_array_equal(got, src[idx])
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
    got = MB.gather_minibatch_kernel(tuple(zip(sources, outs[0])), idx, M)
    want = MB.gather_minibatch_reference(tuple(zip(sources, outs[1])), idx, M)
    assert got == want == (not (bad and B))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_minibatch_gatherer_refuses_bad_sources_and_indices():
    a, b = np.arange(20.0).reshape(10, 2), np.zeros(9)
    with pytest.raises(ValueError, match="same number of rows"):
        MB.MinibatchGatherer([a, b], 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        MB.MinibatchGatherer([a.T], 4)
    gather = MB.MinibatchGatherer([a], 4)
    with pytest.raises(ValueError, match="more than the buffers' 4"):
        gather(np.arange(5, dtype=np.int64))
    before = gather(np.array([3, 1], dtype=np.int64))[0].copy()
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        gather(np.array([0, 10], dtype=np.int64))
    np.testing.assert_array_equal(gather.buffers[0][:2], before)     # a refused call copies nothing
    with pytest.raises(ValueError, match="int64"):
        gather(np.array([0, 1], dtype=np.int32))
