r"""Gradient checking: every hand-written backward against central differences, in float64.

For a function y = f(theta) with array output and a backward that returns dL/dtheta for an upstream
gradient dy = dL/dy, we contract with a random dy so that a single scalar tests the whole Jacobian:

    L(theta) = sum(dy * f(theta)),     dL/dtheta_i ~= (L(theta + h e_i) - L(theta - h e_i)) / (2 h).

The central difference has error O(h^2); with h = 1e-6 in float64 that is ~1e-12 relative, well below
the rounding noise ~eps/h ~ 1e-10, so a correct backward scores ~1e-9 or better and a wrong one ~1.

Relative error between the analytic gradient a and the numerical gradient n of one parameter array:

    rel(a, n) = ||a - n||_2 / max(||a||_2 + ||n||_2, 1e-30)

(0 when both vanish; 1 when one of them is zero and the other is not). A check passes when
rel < ``tol`` (1e-6 by default).

Forward-mode products (``tangents.py``) are checked along one random direction v of every input at
once: J v against (f(theta + h v) - f(theta - h v)) / (2 h), one row for the whole output. TRPO's
Fisher-vector product F v is checked the same way one level up, against the central difference of the
mean KL's gradient at pi = pi_old, where F is the KL's Hessian (``trpo.py``).

These are the tools; ``gradcheck_suite`` applies them to every component of ppo-np
(``run_suite``, the table of ``ppo-np gradcheck``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ppo_np.params import Params

DEFAULT_TOL = 1e-6
DEFAULT_STEP = 1e-6


class Check(NamedTuple):
    """One row of the gradient-check table."""

    component: str
    param: str
    max_rel_error: float
    ok: bool


def relative_error(analytic: np.ndarray, numerical: np.ndarray) -> float:
    """||a - n|| / max(||a|| + ||n||, 1e-30); see the module docstring."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numerical, dtype=np.float64).ravel()
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-30))


def numerical_gradient(loss: Callable[[], float | np.ndarray], x: np.ndarray, h: float = DEFAULT_STEP,
                       points: int = 2) -> np.ndarray:
    """Central-difference gradient of ``loss()`` with respect to the array x.

    ``loss`` must read x when called; x is perturbed in place one entry at a time and restored. A loss
    that returns an array (several losses at once) gets one gradient per entry: shape loss's + x's.
    ``points`` = 2: (f(x + h) - f(x - h)) / 2h, error O(h^2); 4: (8 (f(x + h) - f(x - h)) - (f(x + 2h) -
    f(x - 2h))) / 12h, error O(h^4), for losses whose third derivative is large next to their gradient
    (a KL near its minimum), at twice the cost.
    """
    if x.dtype != np.float64:
        raise ValueError(f"gradient checks need float64 arrays, got {x.dtype}")
    if points not in (2, 4):
        raise ValueError(f"points must be 2 or 4, got {points!r}")
    weights = {2: ((1.0, 0.5),), 4: ((1.0, 8.0 / 12.0), (2.0, -1.0 / 12.0))}[points]  # (offset / h, weight)
    grad = np.zeros(np.shape(loss()) + x.shape)
    for i in np.ndindex(x.shape):  # by index, so that non-contiguous x is perturbed in place too
        orig = x[i]
        total = 0.0
        for offset, weight in weights:
            x[i] = orig + offset * h
            plus = np.asarray(loss())
            x[i] = orig - offset * h
            minus = np.asarray(loss())
            total = total + weight * (plus - minus)
        x[i] = orig
        grad[(..., *i)] = total / h
    return grad


def check_gradients(component: str, forward: Callable[[], np.ndarray],
                    backward: Callable[[np.ndarray], Params], inputs: Params,
                    rng: np.random.Generator, tol: float = DEFAULT_TOL, h: float = DEFAULT_STEP) -> list[Check]:
    """Check ``backward`` against central differences of sum(dy * forward()).

    Args:
        forward: computes the output from the arrays in ``inputs`` (read at call time).
        backward: maps an upstream gradient dy (shaped like the output) to a dict of gradients, one
            per name in ``inputs``.
        inputs: the float64 arrays to differentiate with respect to; perturbed in place, restored.
    Returns one ``Check`` per input name.
    """
    y = forward()
    dy = rng.standard_normal(np.shape(y))
    analytic = backward(dy)

    def loss() -> float:
        return float(np.sum(dy * forward()))

    checks = []
    for name, x in inputs.items():
        err = relative_error(analytic[name], numerical_gradient(loss, x, h))
        checks.append(Check(component, name, err, err < tol))
    return checks


def check_directional(component: str, forward: Callable[[], np.ndarray], tangent: np.ndarray, inputs: Params,
                      direction: Params, param: str = "J v", tol: float = DEFAULT_TOL,
                      h: float = DEFAULT_STEP) -> Check:
    """Check a forward-mode product J v against (f(x + h v) - f(x - h v)) / 2h along one direction.

    Args:
        forward: computes the output from the arrays in ``inputs`` (read at call time).
        tangent: the analytic J v, shaped like the output.
        inputs: the float64 arrays that move; perturbed in place along ``direction``, then restored
            bit for bit.
        direction: the tangent v, one array per name in ``inputs``.
    Returns one ``Check`` (row ``param``) for the whole output.
    """
    for name, x in inputs.items():
        if x.dtype != np.float64:
            raise ValueError(f"directional checks need float64 arrays, got {x.dtype} for {name!r}")
    saved = {name: x.copy() for name, x in inputs.items()}

    def at(t: float) -> np.ndarray:
        for name, x in inputs.items():
            x[...] = saved[name] + t * direction[name]
        return np.array(forward(), dtype=np.float64)

    try:
        numerical = (at(h) - at(-h)) / (2.0 * h)
    finally:
        for name, x in inputs.items():
            x[...] = saved[name]
    err = relative_error(tangent, numerical)
    return Check(component, param, err, err < tol)


def away_from_zero(rng: np.random.Generator, shape, margin: float = 0.1) -> np.ndarray:
    """Standard normals pushed at least ``margin`` away from 0 (keeps ReLU's kink out of reach)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (margin + np.abs(x))


def away_from(x: np.ndarray, kinks, margin: float) -> np.ndarray:
    """x with every entry within ``margin`` of a kink pushed to kink +- margin (the side it was on).

    Keeps central differences off the kinks of piecewise-smooth losses (clip boundaries, ties of a max).
    ``kinks`` may be scalars or arrays broadcastable to x; kinks must be more than 2 margin apart.
    """
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        d = x - k
        near = np.abs(d) < margin
        x = np.where(near, k + np.where(d < 0, -margin, margin), x)
    return x


def randomize_biases(params: Params, rng: np.random.Generator) -> None:
    """Draw the biases (names starting with "b") from N(0, 1), in place.

    Zero biases are a fine init but a poor test point: a ReLU layer whose units are all off feeds
    exactly 0 to the next pre-activation, which then sits on the kink.
    """
    for name, p in params.items():
        if name.startswith("b"):
            p[...] = rng.standard_normal(p.shape)
