"""Benchmark the rollout kernels (``ppo_np.advantages``, ``minibatches``, ``ratios``) against their references;
compile and cache-load times.

    python benchmarks/bench_kernels.py            # a readable table
    python benchmarks/bench_kernels.py --json     # one JSON object (machine, versions, results)

For each rollout size (T, N) from (128, 4) to (2048, 64):
    gae            public wrapper (validation + kernel) vs ``gae_reference`` (NumPy over N, a
                   Python loop over T) vs the pure-Python loop (the kernel's own ``py_func``);
    rewards_to_go  wrapper vs ``rewards_to_go_reference``;
    importance_ratios on B = T N samples, wrapper vs ``importance_ratios_reference``;
    permutation    of B, wrapper vs ``permutation_reference`` (the same Fisher-Yates on a NumPy
                   RandomState, in Python) and NumPy's own ``RandomState.permutation`` (C);
    gather         all B rows of a (B, 8) float64 array in permutation order, by a
                   ``MinibatchGatherer`` (buffers allocated once), vs ``gather_minibatch_reference``
                   (out[:B] = src[idx]) and ``np.take(src, idx, axis=0, out=out)``.
Each time is the median over ``--repeats`` repeats, after one warm-up call; a repeat runs the call
enough times to last >= 20 ms (timeit's autorange) and reports the time per call in seconds.

Compile time: a fresh interpreter with an empty temporary NUMBA_CACHE_DIR calls each kernel once
(float64 arguments; gae also float32) and times each first call (type inference + LLVM + writing
the cache); a second fresh interpreter with that now-warm cache times the same first calls (loading
machine code from the cache). Before them, ``numba_init`` times compiling a trivial uncached
function, which absorbs Numba's one-time start-up (LLVM initialisation) so the per-kernel times
do not include it.

Targets (issue 4): gae >= 100x faster than the pure-Python loop at (2048, 8), and no slower than
the vectorised NumPy reference at any size; ``targets`` in the JSON says whether they were met.
Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import timeit

import numpy as np

SIZES = [(128, 4), (128, 64), (512, 16), (2048, 8), (2048, 64)]
GAMMA, GAE_LAMBDA, CLIP_EPS = 0.99, 0.95, 0.2
GATHER_WIDTH = 8


def median_time(fn, repeats: int) -> float:
    """Median seconds per call of ``fn()`` over ``repeats`` repeats, after one warm-up call."""
    fn()
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()                                  # calls per repeat, >= 0.2 s total
    number = max(1, number // 10)                                  # ... so >= ~20 ms per repeat
    return statistics.median(t / number for t in timer.repeat(repeat=repeats, number=number))


def rollout(T: int, N: int, dtype, seed: int = 0) -> dict:
    """A random (T, N) rollout with ~2% terminations and ~1% truncations."""
    rng = np.random.default_rng(seed)
    return dict(rewards=rng.standard_normal((T, N)).astype(dtype),
                values=rng.standard_normal((T, N)).astype(dtype),
                next_values=rng.standard_normal((T, N)).astype(dtype),
                terminated=rng.random((T, N)) < 0.02, truncated=rng.random((T, N)) < 0.01)


def row(kernel: str, T: int, N: int, dtype, times: dict) -> dict:
    """One result: seconds per call of each implementation, and the kernel's speedups over them."""
    out = {"kernel": kernel, "T": T, "N": N, "dtype": np.dtype(dtype).name}
    out.update({f"{name}_s": float(f"{t:.3g}") for name, t in times.items()})
    for name, t in times.items():
        if name != "kernel":
            out[f"speedup_vs_{name}"] = round(t / times["kernel"], 1)
    return out


def bench_sizes(repeats: int) -> list[dict]:
    """Time every kernel at every size (see the module docstring)."""
    from ppo_np import advantages as A, minibatches as MB, ratios as R

    py_gae = getattr(A.gae_kernel, "py_func", A.gae_kernel)                  # the kernel as plain Python
    results = []
    for T, N in SIZES:
        for dt in (np.float32, np.float64):
            ro = rollout(T, N, dt)
            times = {"kernel": median_time(lambda: A.gae(**ro, gamma=GAMMA, gae_lambda=GAE_LAMBDA), repeats),
                     "reference": median_time(lambda: A.gae_reference(**ro, gamma=GAMMA, gae_lambda=GAE_LAMBDA), repeats),
                     "python_loop": median_time(lambda: py_gae(*ro.values(), GAMMA, GAE_LAMBDA), max(3, repeats // 3))}
            results.append(row("gae", T, N, dt, times))

        ro = rollout(T, N, np.float64)
        rtg = {k: v for k, v in ro.items() if k != "values"}
        results.append(row("rewards_to_go", T, N, np.float64, {
            "kernel": median_time(lambda: A.rewards_to_go(**rtg, gamma=GAMMA), repeats),
            "reference": median_time(lambda: A.rewards_to_go_reference(**rtg, gamma=GAMMA), repeats)}))

        B = T * N
        rng = np.random.default_rng(1)
        logp_old = -np.abs(rng.standard_normal(B))
        logp_new = logp_old + 0.1 * rng.standard_normal(B)
        results.append(row("importance_ratios", T, N, np.float64, {
            "kernel": median_time(lambda: R.importance_ratios(logp_new, logp_old, CLIP_EPS), repeats),
            "reference": median_time(lambda: R.importance_ratios_reference(logp_new, logp_old, CLIP_EPS), repeats)}))

        seed = MB.epoch_seed(0, 1, 2)
        results.append(row("permutation", T, N, np.int64, {
            "kernel": median_time(lambda: MB.permutation(B, seed), repeats),
            "reference": median_time(lambda: MB.permutation_reference(B, MB._seed32(seed)), max(3, repeats // 3)),
            "numpy": median_time(lambda: np.random.RandomState(MB._seed32(seed)).permutation(B), repeats)}))

        src = rng.standard_normal((B, GATHER_WIDTH))
        idx = MB.permutation(B, seed)
        out = np.empty_like(src)
        gather = MB.MinibatchGatherer([src], B)
        results.append(row("gather", T, N, np.float64, {
            "kernel": median_time(lambda: gather(idx), repeats),
            "reference": median_time(lambda: MB.gather_minibatch_reference(((src, out),), idx, B), repeats),
            "numpy_take": median_time(lambda: np.take(src, idx, axis=0, out=out), repeats)}))
    return results


# The script run by the compile-time subprocesses: time the first call of each kernel.
_FIRST_CALLS = r"""
import json, time
import numpy as np
t0 = time.perf_counter()
from ppo_np import advantages as A, minibatches as MB, ratios as R
times = {"import": time.perf_counter() - t0}
import numba
t0 = time.perf_counter(); numba.njit(lambda x: x + 1)(1); times["numba_init"] = time.perf_counter() - t0
T, N = 8, 2
rng = np.random.default_rng(0)
flags = np.zeros((T, N), bool)
def first(name, fn):
    t0 = time.perf_counter(); fn(); times[name] = time.perf_counter() - t0
for dt in (np.float64, np.float32):
    r = rng.standard_normal((T, N)).astype(dt)
    first(f"gae[{np.dtype(dt).name}]", lambda: A.gae(r, r, r, flags, flags, 0.99, 0.95))
r = rng.standard_normal((T, N))
first("rewards_to_go[float64]", lambda: A.rewards_to_go(r, r, flags, flags, 0.99))
first("importance_ratios[float64]", lambda: R.importance_ratios(r[0], r[1], 0.2))
first("permutation", lambda: MB.permutation(10, 1))
first("gather[1-D and 2-D float64]", lambda: MB.MinibatchGatherer([r[:, 0].copy(), r], 2)(np.arange(2)))
print(json.dumps(times))
"""


def bench_compile() -> dict:
    """First-call times in fresh interpreters: on a cold (empty) and then a warm cache."""
    with tempfile.TemporaryDirectory(prefix="ppo_np_numba_cache_") as cache_dir:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
        env.pop("NUMBA_DISABLE_JIT", None)
        phases = {}
        for phase in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", _FIRST_CALLS], env=env, capture_output=True,
                                  text=True, check=True)
            times = {k: round(t, 4) for k, t in json.loads(proc.stdout).items()}
            times["total_first_calls"] = round(sum(t for k, t in times.items() if k not in ("import", "numba_init")), 4)
            phases[phase] = times
    return phases


def machine_info() -> dict:
    """CPU, OS, Python and library versions, and the Numba settings in force."""
    import llvmlite
    import numba

    from ppo_np.jit import JIT_OPTIONS

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "machine": {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "git_commit": commit},
        "versions": {"numpy": np.__version__, "numba": numba.__version__, "llvmlite": llvmlite.__version__},
        "numba": {"jit_options": JIT_OPTIONS, "disable_jit": bool(numba.config.DISABLE_JIT)},
    }


def targets(results: list[dict]) -> dict:
    """Whether the issue's GAE targets were met, with the numbers behind them."""
    gae = [r for r in results if r["kernel"] == "gae"]
    at = [r["speedup_vs_python_loop"] for r in gae if (r["T"], r["N"]) == (2048, 8)]
    worst = min(gae, key=lambda r: r["speedup_vs_reference"])
    return {"gae_speedup_vs_python_loop_at_2048x8": min(at),
            "gae_min_speedup_vs_reference": worst["speedup_vs_reference"],
            "gae_min_speedup_vs_reference_at": [worst["T"], worst["N"], worst["dtype"]],
            "met": min(at) >= 100 and worst["speedup_vs_reference"] >= 1}


def print_table(report: dict) -> None:
    """The report as aligned text."""
    m = report["machine"]
    print(f"{m['cpu']} ({m['logical_cpus']} CPUs), Python {m['python']}, "
          + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print(f"jit options {report['numba']['jit_options']}, median of {report['repeats']} repeats, times per call\n")
    print(f"{'kernel':<18} {'T x N':>9} {'dtype':>7} {'kernel':>10} {'reference':>10} {'x ref':>7}  other")
    for r in report["results"]:
        others = "  ".join(f"{k[len('speedup_vs_'):]} {r[k[len('speedup_vs_'):] + '_s'] * 1e6:,.0f} us "
                           f"(x{r[k]:,.0f})" for k in r if k.startswith("speedup_vs_") and k != "speedup_vs_reference")
        print(f"{r['kernel']:<18} {r['T']:>4} x {r['N']:<2} {r['dtype']:>7} {r['kernel_s'] * 1e6:>8.1f}us "
              f"{r['reference_s'] * 1e6:>8.1f}us {r['speedup_vs_reference']:>7.1f}  {others}")
    print("\nfirst call in a fresh process (s):")
    c = report["compile"]
    for name in c["cold"]:
        print(f"  {name:<28} cold cache {c['cold'][name]:7.3f}   warm cache {c['warm'][name]:7.3f}")
    t = report["targets"]
    print(f"\ntargets: gae x{t['gae_speedup_vs_python_loop_at_2048x8']:,.0f} vs the Python loop at 2048 x 8 "
          f"(>= 100), min x{t['gae_min_speedup_vs_reference']:.1f} vs the NumPy reference (>= 1): "
          f"{'met' if t['met'] else 'NOT MET'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per measurement (median taken)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    report = machine_info()
    report["repeats"] = args.repeats
    report["compile"] = bench_compile()                             # first: fresh processes, idle CPU
    report["results"] = bench_sizes(args.repeats)
    report["targets"] = targets(report["results"])
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
