r"""The actor pi_theta(a | s) and the critic V_phi(s): MLPs plus an action distribution.

Actor. An MLP maps an observation s to the distribution's parameters:
    discrete actions (K of them):   z = MLP_theta(s) in R^K, logits,  pi_tau(. | s) = softmax(z / tau);
    continuous actions (D dims):    mu = MLP_theta(s) in R^D, means,  pi_tau(. | s) = N(mu, diag(sigma^2)),
                                    sigma = tau * exp(l), l = "log_std" (D,) a learned, state-independent
                                    parameter initialised to ``log_std_init``.
The output layer is initialised with gain 0.01 (Andrychowicz et al. 2021), so the initial policy is
close to uniform (logits ~ 0) or centred (means ~ 0) whatever the observation; hidden layers use
gain sqrt(2).

The actor's gradient for a loss L of the network output is the MLP's backward of dL/dz (or dL/dmu);
log_std's gradient dL/dl comes straight from the distribution (``distributions.py``), since l does not
pass through the network.

Critic. V_phi(s) = MLP_phi(s) in R, output gain 1.0. ``forward`` returns values of shape (B,); its
backward lifts dV (B,) to (B, 1) for the MLP.

One parameter set per network: ``actor.params`` is a single ordered dict holding the MLP's arrays
(W0, b0, ..., the *same* array objects the MLP computes with) and, for Gaussian policies, "log_std"
last. Adam, ``params.flatten`` and checkpoints therefore see every parameter once. Updates must be in
place (``p -= ...``, ``p[...] = ...``, ``params.assign_flat``): rebinding a key to a new array would
leave the MLP computing with the old one.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.distributions import Categorical, DiagGaussian, check_temperature
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
    """pi_theta(a | s): an MLP to logits (discrete) or means (continuous), plus log_std for the latter.

    Args:
        obs_dim: size of the (flat) observation.
        n_actions_or_action_dim: K, the number of discrete actions, or D, the action dimension.
        discrete: True for a categorical policy, False for a diagonal Gaussian.
        hidden: hidden layer sizes; () gives a linear policy.
        activation: hidden activation, "tanh" or "relu" (see ``layers.ACTIVATIONS``).
        rng: the seeded generator that draws the initial weights.
        dtype: "float32" or "float64" for parameters, activations and gradients.
        log_std_init: initial value of every log_std entry (Gaussian only; sigma = tau * exp(log_std)).

    Attributes: ``params`` (the one parameter dict), ``discrete``, ``dist`` (``Categorical`` or
    ``DiagGaussian``), ``act_dim`` (K or D), ``obs_dim``, ``mlp``, ``dtype``.
    """

    def __init__(self, obs_dim: int, n_actions_or_action_dim: int, discrete: bool, hidden=(64, 64),
                 activation: str = "tanh", *, rng: np.random.Generator, dtype="float64", log_std_init: float = 0.0):
        obs_dim, hidden = _check_sizes(obs_dim, hidden)
        n = n_actions_or_action_dim
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"n_actions_or_action_dim must be a positive integer, got {n!r}")
        if not isinstance(discrete, (bool, np.bool_)):
            raise ValueError(f"discrete must be True or False, got {discrete!r}")
        if not math.isfinite(float(log_std_init)):
            raise ValueError(f"log_std_init must be finite, got {log_std_init!r}")
        self.obs_dim, self.act_dim, self.discrete = obs_dim, int(n), bool(discrete)
        self.dtype = as_dtype(dtype)
        self.dist = Categorical if self.discrete else DiagGaussian
        self.mlp = MLP((obs_dim, *hidden, self.act_dim), activation, rng=rng,
                       hidden_gain=math.sqrt(2.0), out_gain=0.01, dtype=self.dtype)
        self.params: Params = dict(self.mlp.params)  # the same arrays, not copies
        if not self.discrete:
            self.params["log_std"] = np.full(self.act_dim, log_std_init, dtype=self.dtype)

    def forward(self, obs: np.ndarray) -> tuple[np.ndarray, ActorCache]:
        """The distribution's network output: logits (B, K) or means (B, D). Shapes: obs (B, obs_dim).

        For a Gaussian the log_std is ``params["log_std"]`` (D,), the same for every state.
        Checked by ``tests/test_losses.py::test_act`` and ``::test_actor_parameters_are_one_shared_set``.
        """
        out, cache = self.mlp.forward(_check_obs(obs, self.obs_dim, self.dtype))
        return out, ActorCache(cache)

    def backward(self, dout: np.ndarray, cache: ActorCache, dlog_std: np.ndarray | None = None) -> Params:
        r"""Gradients of a scalar loss L w.r.t. every actor parameter.

        dW_l, db_l from the MLP backward of dout = dL/dz (or dL/dmu); dL/dl = ``dlog_std`` passed
        through unchanged (zeros if None), as l does not enter the network.
        Shapes: dout (B, K or D), dlog_std (D,) -> dict shaped like ``params``.
        Checked by ``ppo-np gradcheck`` (the ``ppo_loss`` rows) and
        ``tests/test_losses.py::test_ppo_loss_gradients``.
        """
        _, grads = self.mlp.backward(dout, cache.mlp)
        if not self.discrete:
            grads["log_std"] = (np.zeros_like(self.params["log_std"]) if dlog_std is None
                                else np.asarray(dlog_std, dtype=self.dtype).reshape(self.act_dim))
        return grads

    @property
    def log_std(self) -> np.ndarray | None:
        """The Gaussian's log_std parameter (D,) (the live array), or None for a categorical policy."""
        return None if self.discrete else self.params["log_std"]

    def act(self, obs: np.ndarray, rng: np.random.Generator | None, temperature: float = 1.0,
            deterministic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Act in a batch of states: (actions, logp, dist_out).

        actions: a ~ pi_tau(. | s), or the mode (argmax z, or mu) when ``deterministic``; (B,) int64
            for discrete policies, (B, D) unclipped for Gaussian ones (clip for the env, store these).
        logp: log pi_tau(a | s) of the tempered policy at those actions (B,); for deterministic actions
            it is still the tempered policy's log-probability of the mode.
        dist_out: the network output, logits (B, K) or means (B, D), i.e. ``Minibatch.dist_old`` later.
        ``rng`` may be None when deterministic. One (obs_dim,) observation is also accepted; the
        results then drop the batch axis.
        Checked by ``tests/test_losses.py::test_act``.
        """
        tau = check_temperature(temperature)
        obs = np.asarray(obs, dtype=self.dtype)
        single = obs.ndim == 1
        if single:
            obs = obs[None, :]
        out = self.mlp(_check_obs(obs, self.obs_dim, self.dtype))  # (B, K) or (B, D)
        if not deterministic and rng is None:
            raise ValueError("act needs an rng unless deterministic=True")
        if self.discrete:
            if deterministic:
                actions = Categorical.mode(out)
                logp = Categorical.log_prob(out, actions, tau)
            else:
                actions, logp = Categorical.sample_with_log_prob(out, rng, tau)
        else:
            log_std = self.params["log_std"]
            actions = DiagGaussian.mode(out) if deterministic else DiagGaussian.sample(out, log_std, rng, tau)
            logp = DiagGaussian.log_prob(out, log_std, actions, tau)
        if single:
            return actions[0], logp[0], out[0]
        return actions, logp, out

    def log_prob(self, dist_out: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """log pi_tau(a | s) for network outputs ``dist_out`` (current log_std for a Gaussian). (B,).

        Checked by ``tests/test_losses.py::test_act``.
        """
        if self.discrete:
            return Categorical.log_prob(dist_out, actions, temperature)
        return DiagGaussian.log_prob(dist_out, self.params["log_std"], actions, temperature)

    def entropy(self, dist_out: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """H(pi_tau(. | s)) for network outputs ``dist_out`` (current log_std for a Gaussian). (B,).

        Checked by ``tests/test_losses.py::test_ppo_loss_results_at_the_start_of_an_update``.
        """
        if self.discrete:
            return Categorical.entropy(dist_out, temperature)
        return DiagGaussian.entropy(dist_out, self.params["log_std"], temperature)

    def kl(self, dist_old: np.ndarray, log_std_old: np.ndarray | None, dist_new: np.ndarray,
           temperature: float = 1.0) -> np.ndarray:
        """KL(pi_old,tau(. | s) || pi_new,tau(. | s)) per state (B,), analytic.

        ``dist_old``/``dist_new``: logits or means (B, .); for a Gaussian the new log_std is the current
        ``params["log_std"]`` and ``log_std_old`` (D,) is required (ignored for a categorical policy).
        Checked by ``tests/test_losses.py::test_actor_kl``.
        """
        if self.discrete:
            return Categorical.kl(dist_old, dist_new, temperature)
        if log_std_old is None:
            raise ValueError("a Gaussian policy's KL needs log_std_old")
        return DiagGaussian.kl(dist_old, log_std_old, dist_new, self.params["log_std"], temperature)


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
