r"""Forward mode: Jacobian-vector products J v through the layers, the MLP and the actor, by hand.

Backward mode (``layers.py``, ``mlp.py``) answers "how does a scalar loss change with every parameter":
it applies J^T to an upstream gradient. Forward mode answers "how does every output change when the
parameters move along one direction v": it applies J itself. TRPO needs both, as F v = J^T M J v
(``trpo.py``): J v by one tangent pass here, J^T by the existing backward.

Notation. A parameter direction ("tangent") is a dict dtheta shaped like the parameters, e.g. dW, db;
an input tangent dx is shaped like x. Every forward quantity y gets a tangent dy = (d/dt) y(theta + t
dtheta, x + t dx) at t = 0: the first-order change of y, same shape as y. The rules are the
differentials of the forward formulas (product rule and chain rule), applied in the forward order.

Linear, y = x W + b:
    dy = dx W + x dW + db                       (B, m)    product rule; dx = 0 for data inputs
Elementwise activations, y = f(x):
    dy = f'(x) * dx
    tanh:     dy = (1 - y^2) * dx                (the cache keeps y, as for the backward)
    ReLU:     dy = 1[x > 0] * dx                 (the cache keeps the mask; f'(0) := 0 as in the backward)
    identity: dy = dx

MLP (notation of ``mlp.py``), h_0 = x, a_l = h_{l-1} W_l + b_l, h_l = f(a_l), y = a_L:
    dh_0 = dx,   da_l = dh_{l-1} W_l + h_{l-1} dW_l + db_l,   dh_l = f'(a_l) * da_l,   dy = da_L.
Every quantity the rules need (h_{l-1}, W_l, y or the mask) is already in the forward's ``MLPCache``, so a
tangent pass costs about one forward and never recomputes the forward itself.

Actor. The distribution's parameters y are the head's function of the MLP output and of the head's own
parameters (``heads/base.py``); the head gives their tangent (``dist_params_tangent``).

Why forward mode is exact here: the tangent pass is the derivative of the forward, not a difference
quotient, so J v has no step size and no truncation error. ``ppo-np gradcheck`` compares it with central
differences (f(theta + h v) - f(theta - h v)) / 2h along a random direction (rows ``tangent-*``).

Duality with backward: for any dy, <dy, J v> = <J^T dy, v>, i.e. sum(dy * tangent) equals the dot
product of the backward's gradients with the direction; ``tests/test_tangents.py::test_tangent_is_the_adjoint_of_backward``
states it as a law.

Reference: Griewank and Walther (2008), "Evaluating Derivatives", ch. 3 (the tangent mode).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ppo_np.layers import IdentityCache, LinearCache, ReluCache, TanhCache
from ppo_np.mlp import MLP, MLPCache
from ppo_np.params import Params


# --- layers --------------------------------------------------------------------------------------------

def linear_tangent(dx: Optional[np.ndarray], cache: LinearCache, dW: np.ndarray, db: np.ndarray) -> np.ndarray:
    r"""dy = dx W + x dW + db, the tangent of y = x W + b.

    .. math:: dy_{bj} = \sum_i dx_{bi} W_{ij} + \sum_i x_{bi}\, dW_{ij} + db_j

    ``dx`` None means the input does not move (it is data). ``cache`` is the forward's (x, W).
    Shapes: dx (B, n) or None, x (B, n), W and dW (n, m), db (m,) -> dy (B, m).
    Checked by ``ppo-np gradcheck`` (row ``tangent-linear``) and
    ``tests/test_tangents.py::test_layer_tangents_match_finite_differences``.
    """
    x, W = cache
    dy = x @ dW + db                                   # (B, m)  x dW + db
    if dx is not None:
        dy += dx @ W                                   # + dx W
    return dy


def tanh_tangent(dx: np.ndarray, cache: TanhCache) -> np.ndarray:
    r"""dy = (1 - y^2) * dx, since d tanh(x) = (1 - tanh(x)^2) dx. Shapes: dx as y.

    Checked by ``ppo-np gradcheck`` (row ``tangent-tanh``) and
    ``tests/test_tangents.py::test_layer_tangents_match_finite_differences``.
    """
    return (1.0 - cache.y * cache.y) * dx


def relu_tangent(dx: np.ndarray, cache: ReluCache) -> np.ndarray:
    r"""dy = 1[x > 0] * dx (0 at the kink, as in ``relu_backward``). Shapes: dx as y.

    Checked by ``ppo-np gradcheck`` (row ``tangent-relu``) and
    ``tests/test_tangents.py::test_layer_tangents_match_finite_differences``.
    """
    return dx * cache.mask


def identity_tangent(dx: np.ndarray, cache: IdentityCache) -> np.ndarray:
    """dy = dx. Checked by ``ppo-np gradcheck`` (row ``tangent-identity``)."""
    return dx


#: the tangent rule of each activation of ``layers.ACTIVATIONS``, by the same name
ACTIVATION_TANGENTS: dict[str, Callable[[np.ndarray, tuple], np.ndarray]] = {
    "tanh": tanh_tangent, "relu": relu_tangent, "identity": identity_tangent,
}


# --- the MLP and the actor ----------------------------------------------------------------------------

def mlp_tangent(mlp: MLP, cache: MLPCache, dparams: Params, dx: Optional[np.ndarray] = None) -> np.ndarray:
    r"""J v for an MLP: the output's change along the parameter direction ``dparams`` (and input dx).

    .. math:: dh_0 = dx,\quad da_l = dh_{l-1} W_l + h_{l-1}\,dW_l + db_l,\quad
              dh_l = f'(a_l) \odot da_l,\quad dy = da_L

    ``cache`` is the ``MLPCache`` of ``mlp.forward`` at the point of differentiation; ``dparams`` holds
    dW0, db0, ... by the parameter names (W0, b0, ...); extra keys (an actor's log_std) are ignored.
    Shapes: dparams like ``mlp.params``, dx (B, n_in) or None -> dy (B, n_out).
    Checked by ``ppo-np gradcheck`` (rows ``tangent-mlp-*``) and
    ``tests/test_tangents.py::test_mlp_tangent_matches_finite_differences``.
    """
    act_tangent = ACTIVATION_TANGENTS[mlp.activation_name]
    dh = None if dx is None else np.asarray(dx, dtype=mlp.dtype)
    for l in range(mlp.n_layers):
        dh = linear_tangent(dh, cache.linear[l], dparams[f"W{l}"], dparams[f"b{l}"])   # da_l (B, n_{l+1})
        if l < mlp.n_layers - 1:
            dh = act_tangent(dh, cache.act[l])                                          # dh_l = f'(a_l) da_l
    return dh


def actor_tangent(actor, cache, dparams: Params) -> np.ndarray:
    r"""J v for an actor: dy (B, dist_dim), the change of the distribution's parameters along ``dparams``.

    The MLP tangent of the network outputs, then the head's ``dist_params_tangent`` (a Gaussian's
    log_std enters y directly and is the same in every state: dl = dparams["log_std"] in every row).
    ``cache`` is the ``ActorCache`` of ``actor.forward`` at the point of differentiation.
    Checked by ``ppo-np gradcheck`` (rows ``tangent-actor-*``) and
    ``tests/test_tangents.py::test_actor_tangent_matches_finite_differences``.
    """
    dout = mlp_tangent(actor.mlp, cache.mlp, dparams)
    return actor.head.dist_params_tangent(dout, dparams)
