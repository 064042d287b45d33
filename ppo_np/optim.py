r"""Adam and global-norm gradient clipping, written out.

Adam (Kingma & Ba 2015), for every parameter array theta with gradient g at step t = 1, 2, ...:

    m_t = beta1 m_{t-1} + (1 - beta1) g
    v_t = beta2 v_{t-1} + (1 - beta2) g^2
    m_hat = m_t / (1 - beta1^t),   v_hat = v_t / (1 - beta2^t)      (bias correction)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

At t = 1, m_hat = g and v_hat = g^2, so every coordinate moves by lr * g / (|g| + eps), about
lr * sign(g): the first step's size does not depend on the gradient's scale. ``eps`` defaults to
1e-5 as in PPO's reference implementations (not 1e-8 as in the paper).

Global-norm clipping: for gradients g_1..g_k (any arrays, from one network or several),
    ||g|| = sqrt(sum_i ||g_i||_2^2),   g_i <- g_i * min(1, max_norm / ||g||),
which shrinks the whole step without turning it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ppo_np.jit import jit
from ppo_np.params import Params, aligned_zeros, contiguous_runs, num_params, views_of


class Adam:
    """Adam over a dict of parameter arrays, updated in place.

    Args:
        params: the arrays to optimise (their references are kept and written in place).
        lr: learning rate; may be changed between steps (``opt.lr = ...``) for annealing.
        betas: (beta1, beta2), each in [0, 1).
        eps: added to sqrt(v_hat) in the denominator, > 0.
    """

    def __init__(self, params: Params, lr: float = 3e-4, betas=(0.9, 0.999), eps: float = 1e-5):
        beta1, beta2 = betas
        if not lr > 0:
            raise ValueError(f"Adam lr must be > 0, got {lr!r}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam betas must each lie in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"Adam eps must be > 0, got {eps!r}")
        if not isinstance(params, dict):
            raise ValueError(f"Adam needs a dict of named parameter arrays, got a {type(params).__name__}")
        self.params = params
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        for k, p in params.items():
            if not isinstance(p, np.ndarray):
                raise ValueError(f"Adam updates NumPy arrays in place; parameter {k!r} is a {type(p).__name__}")
            if not np.issubdtype(p.dtype, np.floating):   # an integer array would take truncated steps
                raise ValueError(f"Adam needs floating-point parameters; {k!r} is {p.dtype}")
            if not p.flags.c_contiguous:
                raise ValueError(f"Adam needs C-contiguous arrays to update in place; parameter {k!r} is not")
        if num_params(params) == 0:
            raise ValueError(f"Adam needs at least one parameter entry, got none in {len(params)} arrays")
        # m and v as one vector each, named views for the state dict; the parameters as their runs of
        # back-to-back arrays (one run for a packed network), so one kernel call updates everything
        self._m_flat, self._v_flat = (aligned_zeros(num_params(params), _dtype_of(params)) for _ in range(2))
        self.m, self.v = views_of(self._m_flat, params), views_of(self._v_flat, params)
        self._param_runs = tuple(contiguous_runs(params.values()))
        bounds = np.cumsum([0] + [run.size for run in self._param_runs])
        self._run_slices = tuple(slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]))
        self._m_runs = tuple(self._m_flat[s] for s in self._run_slices)
        self._v_runs = tuple(self._v_flat[s] for s in self._run_slices)
        uniform = len({p.dtype for p in params.values()}) <= 1
        self._update = adam_update_kernel if uniform else adam_update_reference
        self._grad, self._grad_runs = None, ()
        self.t = 0

    def step(self, grads: Params) -> None:
        """One Adam step with ``grads`` (same names and shapes as ``params``), all arrays at once."""
        self.step_flat(np.concatenate([np.asarray(grads[name], dtype=p.dtype).reshape(-1)
                                       for name, p in self.params.items()]))

    def step_flat(self, grad: np.ndarray, scale: float = 1.0) -> None:
        """``step`` with the gradient ``scale * grad``, ``grad`` one vector laid out as ``params.flatten``
        (names in order); ``grad`` itself is left as it is.

        For a caller that keeps its gradients in one buffer (``fused.FusedLoss.actor_flat_grad``):
        with packed parameters (``params.pack``) the step is a single pass over four vectors, and
        ``scale = clip_coefficient(norm, max_norm)`` clips in that same pass.
        """
        params, grads, moments = self.flat_runs(grad)
        self.t += 1
        self._update(params, grads, moments, (scale, self.lr, self.beta1, self.beta2, self.eps,
                                              bias_correction(self.beta1, self.t), bias_correction(self.beta2, self.t)))

    def flat_runs(self, grad: np.ndarray) -> tuple:
        """(parameter runs, ``grad``'s runs, (m runs, v runs)): what ``adam_update_kernel`` takes for a step
        with the flat gradient ``grad`` (``step_flat``), for a caller that makes the steps in a kernel."""
        if grad is not self._grad:                       # the caller's buffer, cut into runs once
            n = self._m_flat.size
            if not (isinstance(grad, np.ndarray) and grad.shape == (n,)):
                raise ValueError(f"step_flat needs a gradient vector of shape ({n},), "
                                 f"got {getattr(grad, 'shape', grad)!r}")
            self._grad, self._grad_runs = grad, tuple(grad[s] for s in self._run_slices)
        return self._param_runs, self._grad_runs, (self._m_runs, self._v_runs)

    def bias_corrections(self, t: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``bias_correction`` of beta1 and of beta2 for the steps k = t .. t + steps - 1, as two float64 arrays."""
        return tuple(np.array([bias_correction(beta, k) for k in range(t, t + steps)], dtype=np.float64)
                     for beta in (self.beta1, self.beta2))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-identically: m, v (copies) and the step count."""
        state = {"t": np.array(self.t, dtype=np.int64), "lr": np.array(self.lr)}
        state.update({f"m/{k}": a.copy() for k, a in self.m.items()})
        state.update({f"v/{k}": a.copy() for k, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a ``state_dict``; shapes must match the parameters."""
        for prefix, moments in (("m", self.m), ("v", self.v)):
            for k, a in moments.items():
                key = f"{prefix}/{k}"
                if key not in state:
                    raise ValueError(f"Adam state is missing {key!r}")
                src = np.asarray(state[key])
                if src.shape != a.shape:
                    raise ValueError(f"Adam state {key!r} has shape {src.shape}, expected {a.shape}")
                a[...] = src
        self.t = int(state["t"])
        self.lr = float(state["lr"])


def bias_correction(beta: float, t: int) -> float:
    """1 - beta^t: Adam's bias correction at step t."""
    return 1.0 - beta ** t


def _dtype_of(params: Params):
    dtypes = {p.dtype for p in params.values()}
    return dtypes.pop() if len(dtypes) == 1 else np.float64


class AdamCoefs(NamedTuple):
    """The scalars of one Adam step t: the gradients' scale (the clip), lr, beta1, beta2, eps, and the
    bias corrections bias1 = 1 - beta1^t and bias2 = 1 - beta2^t."""

    scale: float
    lr: float
    beta1: float
    beta2: float
    eps: float
    bias1: float
    bias2: float


def adam_update_reference(params, grads, moments, coefs):
    """The specification of ``adam_update_kernel``: one Adam step with the gradients ``scale * grads``,
    over tuples of 1-D arrays, in place (``grads`` unchanged); moments = (ms, vs), coefs an ``AdamCoefs``.
    """
    ms, vs = moments
    scale, lr, beta1, beta2, eps, bias1, bias2 = coefs
    for p, g, m, v in zip(params, grads, ms, vs):
        g = np.float64(scale) * g                                  # in float64, as the kernel's scalars
        m[:] = beta1 * m + (1.0 - beta1) * g                       # m_t
        v[:] = beta2 * v + (1.0 - beta2) * g * g                   # v_t
        p -= lr * (m / bias1) / (np.sqrt(v / bias2) + eps)         # theta_t


@jit
def adam_update_kernel(params, grads, moments, coefs):
    """``adam_update_reference`` fused into one pass per array (one call for a whole network).

    The arrays must share one dtype (Numba indexes only uniform tuples at run time). One pass reads and
    writes each entry once, where the reference's seven NumPy passes per array each stream it again.
    lr (m / bias1) / (sqrt(v / bias2) + eps) is computed as (lr / bias1) m / (sqrt(v) / sqrt(bias2) + eps),
    equal up to rounding. The scalars are cast to the moments' dtype first, so float32 networks step in
    float32 as the reference does (Python floats beside float32 arrays would make every entry a float64
    round trip).
    """
    ms, vs = moments
    scale, lr, beta1, beta2, eps, bias1, bias2 = coefs
    for k in range(len(params)):
        p, g, m, v = params[k], grads[k], ms[k], vs[k]
        real = m.dtype.type
        step = real(lr / bias1)                         # lr m_hat / (sqrt(v_hat) + eps) with one
        inv_sqrt_bias2 = real(1.0 / np.sqrt(bias2))     # sqrt and one division per entry, not two divisions
        beta1_, beta2_, rest1, rest2 = real(beta1), real(beta2), real(1.0 - beta1), real(1.0 - beta2)
        eps_, scale_ = real(eps), real(scale)
        for i in range(p.size):
            g_i = scale_ * g[i]
            m_i = beta1_ * m[i] + rest1 * g_i                                  # m_t
            v_i = beta2_ * v[i] + rest2 * g_i * g_i                            # v_t
            m[i] = m_i
            v[i] = v_i
            p[i] -= step * m_i / (np.sqrt(v_i) * inv_sqrt_bias2 + eps_)       # theta_t


def global_norm(*grad_sets: Params | np.ndarray) -> float:
    """sqrt of the sum of squares of every entry of every gradient in every set.

    A set is a dict of gradient arrays, or one array (a network's flat gradient vector, as
    ``fused.FusedLoss`` keeps it): both give the same sum, term for term.
    """
    return float(np.sqrt(sum(float(np.vdot(g, g)) for gs in grad_sets
                             for g in (gs.values() if isinstance(gs, dict) else (gs,)))))


def parameter_norms(grads: Params) -> dict[str, float]:
    """||g|| of each named gradient: the NumPy reference of ``add_parameter_norms``."""
    return {name: float(np.sqrt(np.vdot(g, g))) for name, g in grads.items()}


def parameter_bounds(params: Params) -> np.ndarray:
    """Where each parameter starts and ends in a flat vector laid out like ``params.flatten`` (n + 1 bounds)."""
    return np.cumsum([0] + [p.size for p in params.values()]).astype(np.int64)


@jit
def add_parameter_norms(flat, bounds, sums):
    """sums[k] += ||flat[bounds[k]:bounds[k + 1]]||: each parameter's gradient norm, from a network's flat
    gradient (``parameter_bounds``), added to running sums in one call. ``parameter_norms`` is its
    reference (``tests/test_optim.py::test_parameter_norms_kernel_matches_its_reference``)."""
    for k in range(bounds.shape[0] - 1):
        s0 = s1 = s2 = s3 = 0.0  # four running sums: one would wait on each addition before the next
        i, stop = bounds[k], bounds[k + 1]
        while i + 4 <= stop:
            s0 += flat[i] * flat[i]
            s1 += flat[i + 1] * flat[i + 1]
            s2 += flat[i + 2] * flat[i + 2]
            s3 += flat[i + 3] * flat[i + 3]
            i += 4
        while i < stop:
            s0 += flat[i] * flat[i]
            i += 1
        sums[k] += np.sqrt((s0 + s1) + (s2 + s3))


def clip_grad_norm(*grad_sets: Params, max_norm: float) -> float:
    """Scale all gradients together, in place, so that their global norm is <= max_norm.

    Pass the actor's and the critic's gradients together to clip them jointly, or call once per set
    to clip them separately. Returns the norm before clipping (a diagnostic worth logging).
    """
    norm = global_norm(*grad_sets)
    scale = clip_coefficient(norm, max_norm)
    if scale < 1.0:
        for gs in grad_sets:
            for g in gs.values():
                g *= scale
    return norm


def clip_coefficient(norm: float, max_norm: float) -> float:
    """min(1, max_norm / ||g||): what global-norm clipping multiplies the gradients by (as
    ``Adam.step_flat``'s ``scale``, the clip costs no pass of its own)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    return clip_scale(norm, max_norm)


@jit
def clip_scale(norm, max_norm):
    """``clip_coefficient`` without its check of max_norm, for kernels."""
    return max_norm / (norm + 1e-12) if norm > max_norm else 1.0


@jit
def squared_norm(flat):
    """||flat||^2 of a 1-D array in float64, in eight running sums (one would wait on each addition
    before the next): the clip's norm of a network's flat gradient, in ``PPO`` and its compiled update alike."""
    sums = np.zeros(8)
    n = flat.shape[0]
    i = 0
    while i + 8 <= n:
        for j in range(8):
            x = np.float64(flat[i + j])
            sums[j] += x * x
        i += 8
    for k in range(i, n):
        x = np.float64(flat[k])
        sums[0] += x * x
    return ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))


@jit
def clip_scales(actor_squared_norm, critic_squared_norm, max_norm, joint):
    """(||g||, the actor's clip scale, the critic's) from the two networks' squared gradient norms: one
    global norm over both (``joint``), or one per network (the norm reported is still that of both)."""
    norm = np.sqrt(actor_squared_norm + critic_squared_norm)
    if joint:
        scale = clip_scale(norm, max_norm)
        return norm, scale, scale
    return norm, clip_scale(np.sqrt(actor_squared_norm), max_norm), clip_scale(np.sqrt(critic_squared_norm), max_norm)
