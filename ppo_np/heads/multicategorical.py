r"""The multi-categorical policy head: G independent categoricals (gymnasium's MultiDiscrete).

Action dimension g takes one of K_g values (``nvec``); the network outputs K_1 + ... + K_G logits, cut
in that order into one block z_g per dimension, and they are the distribution's parameters y = z. Each
block is a tempered categorical (``categorical.py`` derives every formula), and the dimensions are
independent, so everything is a sum over the blocks:

    log pi_tau(a | s) = sum_g log softmax(z_g / tau)_{a_g},   H = sum_g H_g,   KL = sum_g KL_g,

and each gradient is the categorical one within its block: d log pi / d z_{g,j} = (1[j = a_g] - pi_{g,j}) / tau,
dH/dz_{g,j} = -pi_{g,j} (log pi_{g,j} + H_g) / tau, dKL/dz^q_{g,j} = (q_{g,j} - p_{g,j}) / tau. The Fisher
metric is block diagonal, M_g = (diag(p_g) - p_g p_g^T) / tau^2. The deterministic action is argmax z_g
in every block. Sampling draws one uniform per dimension (inverse CDF within its block).
"""
from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np

from ppo_np.heads.base import ACT_STEPS, LOSS_STEPS, ActRows, PolicyHead, check_rows, check_same_shape
from ppo_np.heads.categorical import Categorical, log_softmax_row, sample_row
from ppo_np.jit import jit
from ppo_np.mlp import infer_kernel
from ppo_np.surrogate import NO_SUMS, add_sample, advantage_scale, surrogate_sample


class MultiCategorical(PolicyHead):
    """Independent categoricals over ``nvec`` = (K_1, ..., K_G) values; y = z, the G blocks of logits."""

    name = "multicategorical"
    space_name = "a 1-D MultiDiscrete (start 0)"
    continuous = False     # which generic preset suits it (``config.preset_for``)

    def __init__(self, nvec):
        nvec = np.asarray(nvec)
        if nvec.ndim != 1 or nvec.size < 1 or nvec.dtype.kind not in "iu" or np.any(nvec < 1):
            raise ValueError(f"nvec must be a 1-D sequence of integers >= 1, got {nvec.tolist()!r}")
        self.nvec = nvec.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)]).astype(np.int64)   # block g: [o_g, o_{g+1})
        self.net_dim = self.dist_dim = int(self.offsets[-1])
        self.action_shape = (self.nvec.size,)

    def __repr__(self) -> str:
        return f"MultiCategorical({self.nvec.tolist()})"

    @classmethod
    def for_space(cls, space) -> "MultiCategorical | None":
        """The head for a 1-D gymnasium MultiDiscrete space starting at 0, or None for any other space."""
        if isinstance(space, gym.spaces.MultiDiscrete) and space.nvec.ndim == 1 and not np.any(space.start):
            return cls(space.nvec)
        return None

    def _blocks(self, y: np.ndarray, name: str = "y"):
        y = check_rows(y, self.dist_dim, name)
        return [y[:, a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def _actions(self, actions, B: int) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (B, self.nvec.size) or actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be integers of shape ({B}, {self.nvec.size}), got {actions.dtype} "
                             f"{actions.shape}")
        if B and (np.any(actions < 0) or np.any(actions >= self.nvec)):
            raise ValueError(f"action g must lie in [0, nvec[g]), nvec = {self.nvec.tolist()}")
        return actions

    # --- sampling ------------------------------------------------------------------------------------

    def noise(self, rng: np.random.Generator, B: int) -> np.ndarray:
        """One uniform in [0, 1) per dimension, (B, G): the draws of ``sample`` and of the act kernel."""
        return rng.random((B, self.nvec.size))

    def sample(self, y: np.ndarray, noise: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """``Categorical.sample`` in every block with its own uniform. (B, sum K), (B, G) -> (B, G) int64."""
        noise = np.asarray(noise)
        return np.stack([Categorical.sample(z, noise[:, g], temperature)
                         for g, z in enumerate(self._blocks(y))], axis=1)

    def mode(self, y: np.ndarray) -> np.ndarray:
        """argmax z_g in every block. Shapes: (B, sum K) -> (B, G) int64."""
        return np.stack([Categorical.mode(z) for z in self._blocks(y)], axis=1)

    @staticmethod
    def env_actions(actions: np.ndarray) -> np.ndarray:
        """The env takes the sampled actions as they are."""
        return actions

    # --- log-probability, entropy, KL and their gradients --------------------------------------------

    def log_prob(self, y: np.ndarray, actions: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""sum_g log softmax(z_g / tau)_{a_g}. Shapes: (B, sum K), (B, G) -> (B,).

        Checked by ``tests/test_heads.py::test_multicategorical_is_a_sum_of_categoricals``.
        """
        blocks = self._blocks(y)
        actions = self._actions(actions, blocks[0].shape[0])
        return sum(Categorical.log_prob(z, actions[:, g], temperature) for g, z in enumerate(blocks))

    def log_prob_backward(self, dlogp: np.ndarray, y: np.ndarray, actions: np.ndarray,
                          temperature: float = 1.0) -> np.ndarray:
        r"""dz_{g,j} = dlogp (1[j = a_g] - pi_{g,j}) / tau, block by block (``Categorical.log_prob_backward``).

        Shapes: dlogp (B,), y (B, sum K), actions (B, G) -> dy (B, sum K).
        Checked by ``tests/test_heads.py::test_multicategorical_gradients``.
        """
        blocks = self._blocks(y)
        actions = self._actions(actions, blocks[0].shape[0])
        return np.concatenate([Categorical.log_prob_backward(dlogp, z, actions[:, g], temperature)
                               for g, z in enumerate(blocks)], axis=1)

    def entropy(self, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """sum_g H_g, in [0, sum_g log K_g]. Shapes: (B, sum K) -> (B,).

        Checked by ``tests/test_heads.py::test_multicategorical_is_a_sum_of_categoricals``.
        """
        return sum(Categorical.entropy(z, temperature) for z in self._blocks(y))

    def entropy_backward(self, dH: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        r"""dz_{g,j} = -dH pi_{g,j} (log pi_{g,j} + H_g) / tau, block by block.

        Checked by ``tests/test_heads.py::test_multicategorical_gradients``.
        """
        return np.concatenate([Categorical.entropy_backward(dH, z, temperature) for z in self._blocks(y)], axis=1)

    def kl(self, y_p: np.ndarray, y_q: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """sum_g KL(p_g || q_g). Shapes: (B, sum K), (B, sum K) -> (B,) >= 0.

        Checked by ``tests/test_heads.py::test_multicategorical_is_a_sum_of_categoricals``.
        """
        check_same_shape(np.asarray(y_p), np.asarray(y_q), "y_p", "y_q")
        return sum(Categorical.kl(p, q, temperature)
                   for p, q in zip(self._blocks(y_p, "y_p"), self._blocks(y_q, "y_q")))

    def kl_backward(self, dkl: np.ndarray, y_p: np.ndarray, y_q: np.ndarray,
                    temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        r"""(dz^p, dz^q) block by block (``Categorical.kl_backward``).

        Checked by ``tests/test_heads.py::test_multicategorical_gradients``.
        """
        pairs = [Categorical.kl_backward(dkl, p, q, temperature)
                 for p, q in zip(self._blocks(y_p, "y_p"), self._blocks(y_q, "y_q"))]
        return np.concatenate([p for p, _ in pairs], axis=1), np.concatenate([q for _, q in pairs], axis=1)

    def fisher_metric(self, y: np.ndarray, dy: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        """Block-diagonal M dz, each block ``Categorical.fisher_metric``. Shapes: (B, sum K) -> (B, sum K).

        Checked by ``tests/test_heads.py::test_fisher_metric_is_the_hessian_of_kl``.
        """
        return np.concatenate([Categorical.fisher_metric(z, dz, temperature)
                               for z, dz in zip(self._blocks(y), self._blocks(dy, "dy"))], axis=1)

    def target_entropy(self) -> float:
        """Half the maximum entropy, 0.5 sum_g log K_g: the auto-tuned entropy coefficient's default target."""
        return 0.5 * float(np.log(self.nvec).sum())

    # --- compiled -------------------------------------------------------------------------------------

    def act(self, networks: tuple, params: dict, obs: np.ndarray, rng: np.random.Generator, temperature: float,
            rows: ActRows) -> np.ndarray:
        """``Actor.act(obs, rng, tau)`` and ``Critic.__call__(obs)`` into ``rows`` (``act_kernel``); returns
        what the env is given (the actions row)."""
        act_kernel(obs, networks, self.offsets, self.noise(rng, obs.shape[0]), temperature, rows)
        return rows[1]

    def compiled_policy(self, params: dict) -> "MultiCategoricalPolicy":
        return MultiCategoricalPolicy(self.offsets)

    def loss_key(self, params: dict, grads: dict, actions: np.ndarray, B: int) -> "MultiCategoricalPolicy":
        """The key to ``base.loss_step`` (``loss_kernel``); a ValueError for an action out of range."""
        self._actions(actions, B)
        return MultiCategoricalPolicy(self.offsets)


# --- the kernels, on the categorical head's row helpers -----------------------------------------------

@jit
def act_kernel(obs, networks, offsets, noise, tau, rows):
    """``MultiCategorical.act``: logits, one ``sample_row`` per block with its uniform, log pi_tau(a | s) (the
    sum over blocks of ``log_softmax_row``, in float64) and V(s), into ``rows``.

    Checked against ``Actor.act`` and ``Critic.__call__`` by
    ``tests/test_rollout.py::test_later_heads_act_kernels_match_actor_act_and_critic``.
    """
    actor_network, critic_network = networks
    logits, actions, logp, values = rows
    infer_kernel(obs, actor_network, logits)
    u, p = np.empty(logits.shape[1]), np.empty(logits.shape[1])
    for r in range(logits.shape[0]):
        total = 0.0
        for g in range(offsets.shape[0] - 1):
            lo, hi = offsets[g], offsets[g + 1]
            for k in range(lo, hi):
                u[k] = np.float64(logits[r, k]) / tau
            log_softmax_row(u[lo:hi], p[lo:hi])
            a = sample_row(u[lo:hi], noise[r, g])
            actions[r, g] = a
            total += u[lo + a]
        logp[r] = total
    infer_kernel(obs, critic_network, values)



class MultiCategoricalPolicy(NamedTuple):
    """A multi-categorical head to the compiled rollout (``base.act_step``): its blocks' offsets."""

    offsets: np.ndarray


@jit
def act_step(policy, obs, networks, noise, tau, rows, env_actions):
    """``MultiCategorical.act`` as ``base.act_step`` calls it: ``act_kernel``, then the actions to ``env_actions``."""
    act_kernel(obs, networks, policy.offsets, noise, tau, rows)
    env_actions[:] = rows[1]


ACT_STEPS[MultiCategoricalPolicy] = act_step


@jit
def loss_step(key, layer, samples, coefs):
    """``loss_kernel`` as ``base.loss_step`` calls it: the blocks' offsets from the key."""
    return loss_kernel(layer, key.offsets, samples, coefs)


LOSS_STEPS[MultiCategoricalPolicy] = loss_step

@jit
def loss_kernel(layer, offsets, samples, coefs):
    r"""The actor's side of ``losses.ppo_loss`` for independent categoricals, from layer.z = h W.

    Row by row: + b, then per block log pi_g, H_g and KL_g from ``log_softmax_row`` (summed), the
    surrogate (``surrogate_sample``), then the categorical head's gradient within every block

    .. math:: \tau\,dz_{g,j} = dlogp\,(1[j=a_g] - \pi_{g,j}) - dH\,\pi_{g,j}(\log\pi_{g,j} + H_g)
              + dkl\,(\pi_{g,j} - p^{old}_{g,j})

    dz overwrites z, whose layer's backward is ``fused.backward``'s. Returns the minibatch's ``PolicySums``
    (plain).
    """
    z, b = layer
    actions, logp_old, adv, logits_old, has_old = samples
    penalty, clip_eps, beta, ent_coef, tau, normalize_advantages = coefs
    B, K = z.shape
    G = offsets.shape[0] - 1
    adv_mean, adv_div = advantage_scale(adv, normalize_advantages)
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    log_pi, pi, log_old, p_old, H_g = np.empty(K), np.empty(K), np.empty(K), np.empty(K), np.empty(G)
    sums = NO_SUMS                                              # a PolicySums, plain
    for t in range(B):
        logp = 0.0
        kl = 0.0
        for g in range(G):
            lo, hi = offsets[g], offsets[g + 1]
            for k in range(lo, hi):
                log_pi[k] = (z[t, k] + b[k]) / tau
            H_g[g] = log_softmax_row(log_pi[lo:hi], pi[lo:hi])
            logp += log_pi[lo + actions[t, g]]
            if has_old:
                for k in range(lo, hi):
                    log_old[k] = logits_old[t, k] / tau
                log_softmax_row(log_old[lo:hi], p_old[lo:hi])
                for k in range(lo, hi):
                    kl += p_old[k] * (log_old[k] - log_pi[k])
        A = (adv[t] - adv_mean) / adv_div
        s = surrogate_sample(logp, logp_old[t], A, B, penalty, clip_eps)
        sums = add_sample(sums, s, kl, H_g.sum())
        for g in range(G):
            lo, hi = offsets[g], offsets[g + 1]
            coef = -s.dlogp - dH * H_g[g] + dkl
            for k in range(lo, hi):
                grad = pi[k] * (coef - dH * log_pi[k])
                if k == lo + actions[t, g]:
                    grad += s.dlogp
                if penalty:
                    grad -= dkl * p_old[k]
                z[t, k] = grad / tau
    return sums
