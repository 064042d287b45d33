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

``run_suite`` checks every component of ppo-np; ``ppo-np gradcheck`` prints its table.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from ppo_np import layers
from ppo_np.mlp import MLP
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


def numerical_gradient(loss: Callable[[], float], x: np.ndarray, h: float = DEFAULT_STEP) -> np.ndarray:
    """Central-difference gradient of the scalar ``loss()`` with respect to the array x.

    ``loss`` must read x when called; x is perturbed in place one entry at a time and restored.
    """
    if x.dtype != np.float64:
        raise ValueError(f"gradient checks need float64 arrays, got {x.dtype}")
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):  # by index, so that non-contiguous x is perturbed in place too
        orig = x[i]
        x[i] = orig + h
        plus = loss()
        x[i] = orig - h
        minus = loss()
        x[i] = orig
        grad[i] = (plus - minus) / (2.0 * h)
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


def away_from_zero(rng: np.random.Generator, shape, margin: float = 0.1) -> np.ndarray:
    """Standard normals pushed at least ``margin`` away from 0 (keeps ReLU's kink out of reach)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (margin + np.abs(x))


def randomize_biases(params: Params, rng: np.random.Generator) -> None:
    """Draw the biases (names starting with "b") from N(0, 1), in place.

    Zero biases are a fine init but a poor test point: a ReLU layer whose units are all off feeds
    exactly 0 to the next pre-activation, which then sits on the kink.
    """
    for name, p in params.items():
        if name.startswith("b"):
            p[...] = rng.standard_normal(p.shape)


# --- the suite: one function per component, each returning its checks ------------------------------

def _check_linear(rng: np.random.Generator) -> list[Check]:
    B, n, m = rng.integers(1, 6, size=3)
    arrays = {"x": rng.standard_normal((B, n)), "W": rng.standard_normal((n, m)), "b": rng.standard_normal(m)}

    def backward(dy):
        _, cache = layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])
        dx, dW, db = layers.linear_backward(dy, cache)
        return {"x": dx, "W": dW, "b": db}

    return check_gradients("linear", lambda: layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[0],
                           backward, arrays, rng)


def _check_activations(rng: np.random.Generator) -> list[Check]:
    checks = []
    for name, act in layers.ACTIVATIONS.items():
        x = away_from_zero(rng, (4, 5))
        checks += check_gradients(name, lambda: act.forward(x)[0],
                                  lambda dy: {"x": act.backward(dy, act.forward(x)[1])}, {"x": x}, rng)
    return checks


def check_mlp(mlp: MLP, x: np.ndarray, rng: np.random.Generator, component: str) -> list[Check]:
    """Check an MLP's backward with respect to its input and every parameter."""
    inputs = {"x": x, **mlp.params}

    def backward(dy):
        dx, grads = mlp.backward(dy, mlp.forward(x)[1])
        return {"x": dx, **grads}

    return check_gradients(component, lambda: mlp.forward(x)[0], backward, inputs, rng)


def _check_mlps(rng: np.random.Generator) -> list[Check]:
    checks = []
    for act in ("tanh", "relu"):
        # gain 1 everywhere keeps tanh out of saturation and ReLU pre-activations well spread
        mlp = MLP((3, 5, 4, 2), act, rng=rng, hidden_gain=1.0, out_gain=1.0)
        randomize_biases(mlp.params, rng)
        checks += check_mlp(mlp, away_from_zero(rng, (6, 3), margin=0.5), rng, f"mlp-{act}")
    return checks


SUITE: list[Callable[[np.random.Generator], list[Check]]] = [_check_linear, _check_activations, _check_mlps]


def run_suite(seed: int = 0, trials: int = 3) -> list[Check]:
    """Run every component check ``trials`` times; one row per (component, param), worst error kept."""
    rng = np.random.default_rng(seed)
    worst: dict[tuple[str, str], float] = {}
    for _ in range(trials):
        for check_component in SUITE:
            for c in check_component(rng):
                key = (c.component, c.param)
                err = c.max_rel_error if math.isfinite(c.max_rel_error) else math.inf
                worst[key] = max(worst.get(key, 0.0), err)
    return [Check(comp, param, err, err < DEFAULT_TOL) for (comp, param), err in worst.items()]
