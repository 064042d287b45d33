r"""The actor pi_theta(a | s) and the critic V_phi(s): MLPs, and a policy head for the actor.

Actor. An MLP maps an observation s to the policy head's network outputs (logits z for a categorical
head, means mu for a Gaussian one); the head turns them, with its own parameters (a Gaussian's
state-independent "log_std", initialised to ``log_std_init``), into y, the distribution's parameters
at s (``heads/base.py``). The output layer is initialised with gain 0.01 (Andrychowicz et al. 2021),
so the initial policy is close to uniform (logits ~ 0) or centred (means ~ 0) whatever the
observation; hidden layers use gain sqrt(2).

The actor's gradient for a loss L of y is the head's ``dist_params_backward`` of dL/dy (giving dL/dz
and the head parameters' gradients), then the MLP's backward of dL/dz.

Critic. V_phi(s) = MLP_phi(s) in R, output gain 1.0. ``forward`` returns values of shape (B,); its
backward lifts dV (B,) to (B, 1) for the MLP.

One parameter set per network: ``actor.params`` is a single ordered dict holding the MLP's arrays
(W0, b0, ..., the *same* array objects the MLP computes with) and then the head's parameters. Adam,
``params.flatten`` and checkpoints therefore see every parameter once. Updates must be in place
(``p -= ...``, ``p[...] = ...``, ``params.assign_flat``): rebinding a key to a new array would leave the
MLP computing with the old one.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.heads import PolicyHead, check_temperature
from ppo_np.mlp import MLP, MLPCache, as_dtype
from ppo_np.params import Params


def _check_obs(obs, obs_dim: int, dtype) -> np.ndarray:
    obs = np.asarray(obs, dtype=dtype)
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"observations must have shape (B, {obs_dim}), got {obs.shape}")
    return obs


def _check_sizes(obs_dim, hidden) -> tuple[int, tuple[int, ...]]:
    if isinstance(obs_dim, bool) or int(obs_dim) != obs_dim or obs_dim < 1:
        raise ValueError(f"obs_dim must be a positive integer, got {obs_dim!r}")
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or int(h) != h or h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {hidden!r}")
    return int(obs_dim), tuple(int(h) for h in hidden)


class ActorCache(NamedTuple):
    """The MLP's cache (for the backward through the network)."""

    mlp: MLPCache


class Actor:
    """pi_theta(a | s): an MLP to the head's network outputs, and the head's own parameters.

    Args:
        obs_dim: size of the (flat) observation.
        head: the policy head (``heads.Categorical(K)``, ``heads.DiagGaussian(D)``, ``heads.head_for(space)``).
        hidden: hidden layer sizes; () gives a linear policy.
        activation: hidden activation, "tanh" or "relu" (see ``layers.ACTIVATIONS``).
        rng: the seeded generator that draws the initial weights.
        dtype: "float32" or "float64" for parameters, activations and gradients.
        log_std_init: initial value of every log_std entry (Gaussian only; sigma = tau * exp(log_std)).

    Attributes: ``params`` (the one parameter dict), ``head``, ``head_params`` (the head's entries of
    ``params``), ``obs_dim``, ``mlp``, ``dtype``.
    """

    def __init__(self, obs_dim: int, head: PolicyHead, hidden=(64, 64), activation: str = "tanh", *,
                 rng: np.random.Generator, dtype="float64", log_std_init: float = 0.0):
        obs_dim, hidden = _check_sizes(obs_dim, hidden)
        if not isinstance(head, PolicyHead):
            raise ValueError(f"head must be a policy head (ppo_np.heads), got {head!r}")
        self.obs_dim, self.head = obs_dim, head
        self.dtype = as_dtype(dtype)
        self.mlp = MLP((obs_dim, *hidden, head.net_dim), activation, rng=rng,
                       hidden_gain=math.sqrt(2.0), out_gain=0.01, dtype=self.dtype)
        self.head_params: Params = head.init_params(self.dtype, log_std_init)
        self.params: Params = {**self.mlp.params, **self.head_params}  # the same arrays, not copies

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, ActorCache]:
        """y, the distribution's parameters at each state (B, head.dist_dim). Shapes: obs (B, obs_dim).

        Checked by ``tests/test_policy.py::test_act`` and ``::test_actor_parameters_are_one_shared_set``.
        """
        out, cache = self.mlp.forward(_check_obs(obs, self.obs_dim, self.dtype))
        return self.head.dist_params(out, self.head_params), ActorCache(cache)

    def backward(self, dy: np.ndarray, cache: ActorCache) -> Params:
        r"""Gradients of a scalar loss L w.r.t. every actor parameter, from dy = dL/dy (B, dist_dim).

        The head's ``dist_params_backward`` (dL/dz and its own parameters' gradients), then the MLP
        backward of dL/dz. Shapes: dy (B, dist_dim) -> dict shaped like ``params``.
        Checked by ``ppo-np gradcheck`` (the ``ppo_loss`` rows) and
        ``tests/test_losses.py::test_ppo_loss_gradients``.
        """
        dout, head_grads = self.head.dist_params_backward(np.asarray(dy, dtype=self.dtype), self.head_params)
        _, grads = self.mlp.backward(dout, cache.mlp)
        return {**grads, **head_grads}

    def act(self, obs: np.ndarray, rng: np.random.Generator | None, temperature: float = 1.0,
            deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Act in a batch of states: (actions, logp, y).

        actions: a ~ pi_tau(. | s) (the head's ``sample`` with the draws ``head.noise(rng, B)``), or the
            head's ``mode`` when ``deterministic``; as stored and scored (a Gaussian's unclipped).
        logp: log pi_tau(a | s) of the tempered policy at those actions (B,); for deterministic actions
            it is still the tempered policy's log-probability of the mode.
        y: the distribution's parameters (B, dist_dim), i.e. ``Minibatch.dist_old`` later.
        ``rng`` may be None when deterministic. One (obs_dim,) observation is also accepted; the
        results then drop the batch axis. Reference of the heads' compiled ``act``.
        Checked by ``tests/test_policy.py::test_act``.
        """
        tau = check_temperature(temperature)
        obs = np.asarray(obs, dtype=self.dtype)
        single = obs.ndim == 1
        if single:
            obs = obs[None, :]
        y = self.head.dist_params(self.mlp(_check_obs(obs, self.obs_dim, self.dtype)), self.head_params)
        if not deterministic and rng is None:
            raise ValueError("act needs an rng unless deterministic=True")
        if deterministic:
            actions = self.head.mode(y)
        else:
            actions = self.head.sample(y, self.head.noise(rng, y.shape[0]), tau)
        logp = self.head.log_prob(y, actions, tau)
        if single:
            return actions[0], logp[0], y[0]
        return actions, logp, y


class CriticCache(NamedTuple):
    """The MLP's cache (for the backward through the network)."""

    mlp: MLPCache


class Critic:
    """V_phi(s): an MLP from observations to one value each, output gain 1.0.

    Args: obs_dim, hidden, activation, rng, dtype as for ``Actor``. Attribute ``params``: the MLP's
    arrays W0, b0, ... (the same objects).
    """

    def __init__(self, obs_dim: int, hidden=(64, 64), activation: str = "tanh", *,
                 rng: np.random.Generator, dtype="float64"):
        obs_dim, hidden = _check_sizes(obs_dim, hidden)
        self.obs_dim = obs_dim
        self.dtype = as_dtype(dtype)
        self.mlp = MLP((obs_dim, *hidden, 1), activation, rng=rng, hidden_gain=math.sqrt(2.0),
                       out_gain=1.0, dtype=self.dtype)
        self.params: Params = dict(self.mlp.params)

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, CriticCache]:
        """V(s) for a batch. Shapes: obs (B, obs_dim) -> values (B,).

        Checked by ``ppo-np gradcheck`` (the ``ppo_loss`` rows, through the value loss).
        """
        y, cache = self.mlp.forward(_check_obs(obs, self.obs_dim, self.dtype))
        return y[:, 0], CriticCache(cache)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """The values alone (B,), for inference (``MLP.__call__``: no cache, a kernel for few rows)."""
        return self.mlp(_check_obs(obs, self.obs_dim, self.dtype))[:, 0]

    def backward(self, dv: np.ndarray, cache: CriticCache) -> Params:
        r"""Gradients of a scalar loss L w.r.t. every critic parameter, from dv = dL/dV (B,).

        The MLP backward of dv[:, None]. Shapes: dv (B,) -> dict shaped like ``params``.
        Checked by ``ppo-np gradcheck`` (the ``ppo_loss`` rows).
        """
        dv = np.asarray(dv, dtype=self.dtype)
        if dv.ndim != 1:
            raise ValueError(f"dv must have shape (B,), got {dv.shape}")
        return self.mlp.backward(dv[:, None], cache.mlp)[1]
