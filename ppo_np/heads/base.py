r"""What every policy head provides, and the checks the heads share.

A policy head is one family of action distributions pi_tau(a | s) with a temperature tau > 0 (tau = 1
is the ordinary policy). It owns everything that depends on the action space, so that the code above
it (the actor, the losses, the rollout, the fused minibatch step, TRPO, the agent) asks the head and
never branches on the space. Adding a head is one new file in ``ppo_np/heads/`` plus its line in
``HEADS`` (``ppo_np/heads/__init__.py``).

The distribution parameters y
-----------------------------
The actor's network maps a state s to ``net_dim`` outputs; the head turns them, with parameters of
its own that no state changes (a Gaussian's log-std), into the distribution's parameters at s, a row
y of ``dist_dim`` numbers: the logits of a categorical, the means and log-stds of a Gaussian. Every
function of the distribution takes y (B, dist_dim), so a rollout stores the old policy as its rows
y_old and the KL between old and new policies is a function of two such rows. The chain from y back to
the parameters is ``dist_params_backward``; forward (for TRPO's J v), ``dist_params_tangent``.

The interface, in the order each head file lays it out
-------------------------------------------------------
NumPy references (the specification; derivations in each head's module docstring; every backward
checked by central differences in ``ppo-np gradcheck`` and ``tests/test_heads.py``):
    init_params, dist_params, dist_params_backward, dist_params_tangent, action_dtype(float dtype)
    noise(rng, B)            the random draws of one sample per row (what the compiled act kernel takes)
    sample(y, noise, tau), mode(y), env_actions(actions)
    log_prob / log_prob_backward, entropy / entropy_backward, kl / kl_backward
    fisher_metric(y, dy, tau) M dy, with M = d^2 KL(p || q) / dy_q^2 at q = p (TRPO's metric)
    target_entropy()          the default target of the auto-tuned entropy coefficient
Compiled (called once per step by the rollout and once per minibatch by ``fused.FusedLoss``):
    act(networks, params, obs, rng, tau, rows)    sample, log-prob and V(s) into a rollout's rows;
                                                  returns the actions the env is given
    loss_key(params, grads, actions, B)  for the fused PPO loss (``fused.FusedLoss``): a NamedTuple whose
                                                  class names the head's loss kernel to ``loss_step``
                                                  (below); a ValueError for actions the head cannot take
    compiled_policy(params), env_action_buffer(N)  for the compiled rollout (``rollout.rollout_kernel``):
                                                  a NamedTuple whose class names the head's act to
                                                  ``act_step`` (below), and an array for the env's actions
Both are built from the head's row-level compiled helpers, which sit beside their references, and take
their tuples plain (``jit.plain``): networks = (actor, critic) ``mlp.Network``s, rows an ``ActRows``,
samples a ``PolicySamples``, layer a ``fused.OutputLayer``, coefs a ``fused.KernelCoefs``; params and
grads are the head's entries of the actor's parameter and gradient dicts.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.jit import by_type

#: each head's compiled act, by the class of its ``compiled_policy`` (each head's module adds its own)
ACT_STEPS: dict[type, object] = {}

#: each head's loss kernel, by the class of its ``loss_key`` (each head's module adds its own)
LOSS_STEPS: dict[type, object] = {}

#: ``act_step(policy, obs, networks, noise, tau, rows, env_actions)``: the act of the head whose
#: ``compiled_policy`` ``policy`` is, in Python and inside kernels alike: ``act(networks, params, obs, rng,
#: tau, rows)`` with the draws ``noise`` given, the env's actions into ``env_actions``. Checked against
#: ``act`` by ``tests/test_rollout.py::test_every_heads_compiled_act_step_is_its_act``.
act_step = by_type("act_step", ACT_STEPS)

#: ``loss_step(key, layer, samples, coefs)``: the actor's side of the fused PPO loss for the head whose
#: ``loss_key`` ``key`` is, in Python and inside ``fused.loss_pass`` alike: its ``PolicySums`` (plain), with
#: dL/dz in layer.z (``fused.backward`` goes on from there) and the head's own gradients (a Gaussian's
#: log-std) written.
#: Checked against ``losses.ppo_loss`` for every head by ``tests/test_fused.py``.
loss_step = by_type("loss_step", LOSS_STEPS)


def check_temperature(temperature) -> float:
    """tau as a Python float; ValueError unless it is a finite number > 0.

    Checked by ``tests/test_heads.py::test_bad_temperature_is_named``.
    """
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return tau


def check_rows(y, dist_dim: int, name: str = "y") -> np.ndarray:
    """y as a float array of shape (B, dist_dim); a ValueError naming it otherwise."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != dist_dim:
        raise ValueError(f"{name} must have shape (B, {dist_dim}), got {y.shape}")
    return y if y.dtype.kind == "f" else y.astype(np.float64)


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must have the same shape")


def check_size(name: str, n) -> int:
    """n as an int >= 1; a ValueError naming it otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


class ActRows(NamedTuple):
    """The rows of one rollout step that a head's ``act`` writes (N envs).

    dist: y (N, dist_dim); actions: as stored and scored (N, *action_shape); logp: log pi_tau(a | s)
    (N,); values: V(s) (N, 1).
    """

    dist: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    values: np.ndarray


class PolicySamples(NamedTuple):
    """What the actor's side of the fused loss reads per sample: actions, logp_old (B,), advantages
    (B,), y_old (B, dist_dim) of the policy that acted, and has_old (False: y_old is a placeholder
    and the KL is not computed)."""

    actions: np.ndarray
    logp_old: np.ndarray
    advantages: np.ndarray
    dist_old: np.ndarray
    has_old: bool


class PolicyHead:
    """The interface of a policy head (see the module docstring); each head file implements it.

    The defaults here are those of a head whose distribution parameters are the network's outputs
    themselves (y = z: logits), with no parameters of its own; a head with its own (the Gaussian's
    log_std) overrides them, and stores its actions as floats.
    """

    name: str
    space_name: str       # the gymnasium action space it serves, for messages
    continuous: bool      # continuous actions: the generic continuous preset suits it
    net_dim: int
    dist_dim: int
    action_shape: tuple   # one action's shape: () for an index, (D,) for a vector

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.net_dim})"

    @staticmethod
    def action_dtype(dtype) -> np.dtype:
        """Actions are stored as int64 (indices, or zeros and ones), whatever the networks' float dtype."""
        return np.dtype(np.int64)

    def env_action_buffer(self, N: int) -> np.ndarray:
        """An array for N envs' actions as the env takes them: int64 indices (the stored actions)."""
        return np.empty((N, *self.action_shape), np.int64)

    def init_params(self, dtype, log_std_init: float) -> dict:
        """The head's own parameters: none."""
        return {}

    def dist_params(self, net_out: np.ndarray, params: dict) -> np.ndarray:
        """y = z, the network's outputs. Shapes: (B, net_dim) -> (B, dist_dim = net_dim)."""
        return net_out

    def dist_params_backward(self, dy: np.ndarray, params: dict) -> tuple[np.ndarray, dict]:
        """dz = dy, and no parameter gradients."""
        return dy, {}

    def dist_params_tangent(self, dnet_out: np.ndarray, dparams: dict) -> np.ndarray:
        """dy = dz."""
        return dnet_out
