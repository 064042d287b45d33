"""Every Numba option used by ppo-np, in one place.

    from ppo_np.jit import jit

    @jit
    def kernel(x, gamma): ...

Options, and why:
    cache=True      compiled machine code is written next to the source (``__pycache__``, or
                    ``NUMBA_CACHE_DIR``) and reloaded by later processes, so compilation is paid once
                    per machine, not once per run. The cache is keyed on the kernel's own source
                    file: a module global read by a kernel is frozen into the cache and an edit
                    elsewhere is not seen. Hence the house rule: every constant is an argument.
    nogil=True      kernels release the GIL, so they can run beside other Python threads.
    fastmath=False  strict IEEE order of operations: a kernel and its NumPy/Python reference agree
                    to ~1e-12 in float64 (fastmath would reassociate sums and allow SIMD reductions
                    that round differently; the kernels here are memory-bound, so it buys little).
    error_model="numpy"
                    floating-point division by zero gives inf/nan as in NumPy instead of raising,
                    which also removes a branch from every division.
    boundscheck     left at Numba's default (off); set ``NUMBA_BOUNDSCHECK=1`` to debug a kernel.

Arguments: a kernel takes at most about eight parameters, related arrays grouped in tuples whose layout a
NamedTuple documents (``mlp.Network``, ``heads.base.ActRows``, ``fused.OutputLayer``, ...); the kernel
unpacks them by position on its first lines. Callers on the hot paths pass them through ``plain``:
Numba types a plain tuple's elements in C, a NamedTuple's in Python, which costs more than some of
the kernels' arithmetic.

Running without compilation: ``NUMBA_DISABLE_JIT=1`` makes ``jit`` return the plain Python
function, so every kernel runs as (slow) Python: breakpoints and coverage work, and the test suite
passes that way too.

Dispatch on a key's type (``by_type``): a kernel that must call one of several kernels, chosen by what
it runs on (a policy head's act, a ported environment's step), takes a NamedTuple key whose *class*
names the kernel. Passing the kernels themselves as arguments would work, but Numba types a function
argument by its identity, so a kernel that takes one is compiled anew in every process: its cache
never hits.
"""
from __future__ import annotations

import functools
import os
import types
from pathlib import Path

import numba
from numba.extending import overload

JIT_OPTIONS: dict[str, object] = {
    "cache": True,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
}

#: ``numba.njit`` with ``JIT_OPTIONS``; use as a bare decorator, ``@jit``.
jit = functools.partial(numba.njit, **JIT_OPTIONS)


def plain(args):
    """``args`` with every (nested) NamedTuple made a plain tuple, the same elements in the same order."""
    return tuple(plain(a) for a in args) if isinstance(args, tuple) else args


def compiled_with(fn, **compiled):
    """``fn`` compiled (``jit``), with its calls to the Python functions named in ``compiled`` made to the
    compiled versions given: one source, run as Python (calling Python functions that call kernels and
    NumPy) or as one compiled call. ``fn`` sees its module's globals as they are at this call: make it
    once the module is complete."""
    twin = types.FunctionType(fn.__code__, {**fn.__globals__, **compiled}, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__, twin.__module__, twin.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    return jit(twin)


def by_type(name: str, table: dict[type, object]):
    """A function ``name(key, *args)`` that returns ``table[type(key)](key, *args)``, in Python and inside
    kernels alike; compiled, the choice is made once, when the caller is typed (``key``'s class is part
    of its Numba type), and the caller's cache keeps it. ``table`` may be filled after this call, up to
    the first compilation of a caller."""
    def dispatch(key, *args):
        return table[type(key)](key, *args)

    dispatch.__name__ = dispatch.__qualname__ = name

    @overload(dispatch, jit_options=JIT_OPTIONS)
    def _compiled(key, *args):
        kernel = table[key.instance_class]

        def impl(key, *args):
            return kernel(key, *args)
        return impl
    return dispatch


def cached_since_edited(module: types.ModuleType) -> bool:
    """Whether ``module``'s kernels have been compiled into numba's cache since its source last changed, so
    that a run will load them rather than compile them (for a message, not for correctness: a new type
    signature still compiles). True when nothing compiles (``NUMBA_DISABLE_JIT=1``)."""
    kernels = [k for k in vars(module).values() if isinstance(k, numba.core.dispatcher.Dispatcher)]
    if not kernels:
        return True
    source = Path(module.__file__)
    indexes = Path(kernels[0].stats.cache_path).glob(f"{source.stem}.*.nbi")  # numba's index of each kernel
    return any(os.stat(index).st_mtime >= os.stat(source).st_mtime for index in indexes)
