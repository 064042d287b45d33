r"""The gradient lab: the gradient of a real agent's loss on a real batch, term by term.

The PPO loss of a batch of B samples (``losses.py``) is a sum of terms,

    L = L^S_in + L^S_out + beta L^KL - c_e H + c_v L^V,

    L^S_in  = -(1/B) sum_{t in I} l_t,     L^S_out = -(1/B) sum_{t not in I} l_t,
    I = {t : |r_t - 1| <= eps} (the samples inside the clip range, decided at the parameters given),
    l_t = min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) for PPO-clip, r_t A_t for PPO-penalty,
    L^KL = (1/B) sum_t KL(pi_old,tau(. | s_t) || pi_theta,tau(. | s_t))   (PPO-penalty only),

and its gradient is linear in the per-sample gradients of its terms: each term's dL/dy (y the
distribution's parameters per state) runs through the same actor backward, and the value term through
the critic's. So ``loss_gradients`` returns every named parameter's gradient split into these terms,
which sum to ``losses.ppo_loss``'s gradient up to rounding (``tests/test_gradients.py``). Outside the
clip range the surrogate's gradient is zero exactly on the samples where the clipped branch of the
min wins (A_t > 0 and r_t > 1 + eps, or A_t < 0 and r_t < 1 - eps, ``surrogate.py``); L^S_out keeps
the others, those pushed back towards the range by the pessimistic min.

``collect_batch`` draws a batch from the agent's environment the way training does (a rollout of the
current policy, GAE, the value targets), without touching the agent: its own environments, its own
random generator, copies of the normalisers. Every computation casts the networks to float64 first
(``dtype``), so a float32 agent from any saved run can be studied at full precision.
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple, Optional

import numpy as np

from ppo_np.losses import LossCoefs, Minibatch, clipped_value_loss, value_loss
from ppo_np.optim import add_parameter_norms, parameter_bounds
from ppo_np.policy import Actor, Critic
from ppo_np.rollout import Collector, RolloutBuffer
from ppo_np.surrogate import clipped_objective, clipped_surrogate, kl_penalty_surrogate, normalize_advantages

#: the terms of the loss, in the order of the module docstring
TERMS = ("surrogate_inside_clip", "surrogate_outside_clip", "kl_penalty", "entropy", "value")


class LossTerms(NamedTuple):
    """The loss and its gradient, term by term (``TERMS``), with parameters named ``actor/W0``,
    ``critic/b1``, ... (the checkpoint's names); a term that does not reach a parameter has zeros there."""

    loss: float                          # L, the sum of the term losses
    losses: dict                         # term -> its share of L
    gradients: dict                      # term -> {parameter name -> gradient}
    total: dict                          # parameter name -> dL/dparameter (the sum over the terms)
    inside: np.ndarray                   # (B,) bool: the samples of I (inside the clip range)
    stats: dict                          # clip_frac and the share of the surrogate's gradient norm outside


def networks_as(agent, dtype: str = "float64") -> tuple[Actor, Critic]:
    """Copies of the agent's actor and critic in ``dtype`` (the agent's own networks are not touched)."""
    cfg = agent.config
    rng = np.random.default_rng(0)  # the initial weights are overwritten
    actor = Actor(agent.obs_dim, agent.head, cfg.hidden_sizes, cfg.activation, rng=rng, dtype=dtype)
    critic = Critic(agent.obs_dim, cfg.hidden_sizes, cfg.activation, rng=rng, dtype=dtype)
    for copy_params, params in ((actor.params, agent.actor.params), (critic.params, agent.critic.params)):
        for name, p in copy_params.items():
            p[...] = params[name]
    return actor, critic


def collect_rollout(agent, num_steps: int, num_envs: int, seed: int = 0) -> tuple[RolloutBuffer, np.ndarray, np.ndarray]:
    """(buffer, advantages, value targets) of ``num_envs`` environments running ``num_steps`` steps of the
    agent's current policy from episodes seeded by ``seed``, actions drawn from a generator seeded by
    ``seed``: a rollout as training collects it, leaving the agent, its normalisers and its random
    generators as they were. (T, N) arrays, reset steps marked in ``buffer.valid``."""
    envs = agent.env_source.make_vector(num_envs, "sync", fresh=True)
    try:
        scaler = copy.deepcopy(agent.reward_scaler)
        scaler.returns = np.zeros(num_envs)
        collector = Collector(envs, seed, copy.deepcopy(agent.obs_norm), scaler)
        buf = RolloutBuffer.allocate(num_steps, num_envs, agent.obs_dim, agent.head, agent.actor.dtype)
        collector.collect(agent.actor, agent.critic, buf, np.random.default_rng(seed), agent.loss_coefs().temperature)
    finally:
        envs.close()
    adv, returns = agent.advantages(buf)
    return buf, adv, returns


def batch_of(buf: RolloutBuffer, adv: np.ndarray, returns: np.ndarray, rows: slice = slice(None)) -> Minibatch:
    """The valid samples of the rollout's time steps ``rows``, flattened into a ``Minibatch``."""
    valid = buf.valid[rows].reshape(-1)

    def flat(x):
        x = x[rows]
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])[valid]

    return Minibatch(obs=flat(buf.obs), actions=flat(buf.actions), logp_old=flat(buf.logp), advantages=flat(adv),
                     returns=flat(returns), values_old=flat(buf.values), dist_old=flat(buf.dist_out))


def collect_batch(agent, num_steps: Optional[int] = None, num_envs: Optional[int] = None, seed: int = 0) -> Minibatch:
    """A batch of the agent's current policy on its environment, as an update would see it.

    ``num_envs`` environments (default: the config's) run ``num_steps`` steps each (default: the config's)
    from episodes seeded by ``seed`` (``collect_rollout``). Advantages and value targets are those of
    training (GAE, or rewards-to-go), not normalised; the reset steps of the vector env are left out,
    so the batch holds at most num_envs * num_steps samples. The agent, its normalisers and its random
    generators are left as they were.
    """
    cfg = agent.config
    return batch_of(*collect_rollout(agent, num_steps or cfg.num_steps, num_envs or cfg.num_envs, seed))


def prepared(batch: Minibatch, coefs: LossCoefs, normalize: bool, dtype: str = "float64") -> Minibatch:
    """The batch in ``dtype``, its advantages normalised when the agent's update would normalise them."""
    batch = Minibatch(*(None if x is None else np.asarray(x, dtype) if x.dtype.kind == "f" else x for x in batch))
    return batch._replace(advantages=normalize_advantages(batch.advantages)) if normalize else batch


class _Forward(NamedTuple):
    losses: dict            # term -> its share of L
    dy: dict                # term -> dL_term/dy (B, dist_dim), for the actor's terms
    dvalues: np.ndarray     # dL^V/dV (B,), before c_v
    inside: np.ndarray      # (B,) bool
    actor_cache: object
    critic_cache: object


def _forward(actor: Actor, critic: Critic, batch: Minibatch, coefs: LossCoefs,
             inside: Optional[np.ndarray]) -> _Forward:
    """Every term's loss, and its gradient with respect to the networks' outputs (y and V)."""
    tau, head = coefs.temperature, actor.head
    y, actor_cache = actor.forward(batch.obs)
    values, critic_cache = critic.forward(batch.obs)
    B = y.shape[0]
    logp = head.log_prob(y, batch.actions, tau)
    ratio = np.exp(logp - batch.logp_old)
    if inside is None:
        inside = np.abs(ratio - 1.0) <= coefs.clip_eps
    adv = batch.advantages
    if coefs.surrogate == "clip":
        objective = clipped_objective(ratio, adv, coefs.clip_eps)
        _, dlogp, _ = clipped_surrogate(logp, batch.logp_old, adv, coefs.clip_eps)
        kl = dkl = None
    else:
        objective = ratio * adv
        kl = head.kl(batch.dist_old, y, tau)
        _, (dlogp, dkl), _ = kl_penalty_surrogate(logp, batch.logp_old, adv, kl, coefs.beta)
    entropy = head.entropy(y, tau)
    value_loss, dvalues = _value_term(values, batch, coefs)
    losses = {"surrogate_inside_clip": -float(objective[inside].sum()) / B,
              "surrogate_outside_clip": -float(objective[~inside].sum()) / B,
              "kl_penalty": coefs.beta * float(kl.sum()) / B if kl is not None else 0.0,
              "entropy": -coefs.ent_coef * float(entropy.sum()) / B,
              "value": coefs.vf_coef * value_loss}
    dy = {"surrogate_inside_clip": head.log_prob_backward(np.where(inside, dlogp, 0.0), y, batch.actions, tau),
          "surrogate_outside_clip": head.log_prob_backward(np.where(inside, 0.0, dlogp), y, batch.actions, tau),
          "kl_penalty": head.kl_backward(dkl, batch.dist_old, y, tau)[1] if kl is not None else np.zeros_like(y),
          "entropy": head.entropy_backward(np.full(B, -coefs.ent_coef / B), y, tau)}
    return _Forward(losses, dy, dvalues, inside, actor_cache, critic_cache)


def term_losses(actor: Actor, critic: Critic, batch: Minibatch, coefs: LossCoefs, inside: np.ndarray) -> np.ndarray:
    """The term losses alone, in the order of ``TERMS``, with the set I fixed by ``inside``: what a
    finite-difference check differentiates (a perturbation must not move samples between the terms)."""
    losses = _forward(actor, critic, batch, coefs, inside).losses
    return np.array([losses[term] for term in TERMS])


def loss_terms(actor: Actor, critic: Critic, batch: Minibatch, coefs: LossCoefs,
               inside: Optional[np.ndarray] = None) -> LossTerms:
    """The loss of ``batch`` and every parameter's gradient, term by term (module docstring).

    ``inside`` fixes the set I (default: decided here, at these parameters).
    Checked by ``tests/test_gradients.py`` (the terms sum to ``losses.ppo_loss``'s gradient) and by
    ``ppo-np gradcheck RUN_DIR`` (each term against central differences of ``term_losses``).
    """
    fwd = _forward(actor, critic, batch, coefs, inside)
    actor_zero = {f"actor/{k}": np.zeros_like(p) for k, p in actor.params.items()}
    critic_zero = {f"critic/{k}": np.zeros_like(p) for k, p in critic.params.items()}
    gradients = {term: {**{f"actor/{k}": g for k, g in actor.backward(fwd.dy[term], fwd.actor_cache).items()},
                        **critic_zero} for term in TERMS[:-1]}
    gradients["value"] = {**actor_zero, **{f"critic/{k}": g for k, g in
                                           critic.backward(coefs.vf_coef * fwd.dvalues, fwd.critic_cache).items()}}
    total = {name: sum(gradients[term][name] for term in TERMS) for name in {**actor_zero, **critic_zero}}
    norm_in, norm_out = (math.sqrt(sum(float(np.sum(g * g)) for g in gradients[t].values()))
                         for t in ("surrogate_inside_clip", "surrogate_outside_clip"))
    stats = {"clip_frac": 1.0 - float(fwd.inside.mean()),
             "outside_share_of_surrogate_norm": norm_out / (norm_in + norm_out) if norm_in + norm_out > 0 else 0.0}
    return LossTerms(sum(fwd.losses.values()), fwd.losses, gradients, total, fwd.inside, stats)


def _value_term(values: np.ndarray, batch: Minibatch, coefs: LossCoefs) -> tuple[float, np.ndarray]:
    if coefs.vf_clip is None:
        loss, dvalues, _ = value_loss(values, batch.returns)
    else:
        loss, dvalues, _ = clipped_value_loss(values, batch.returns, batch.values_old, coefs.vf_clip)
    return loss, dvalues


def agent_gradients(agent, batch: Minibatch, dtype: str = "float64", coefs: Optional[LossCoefs] = None) -> LossTerms:
    """``loss_terms`` of the agent's networks cast to ``dtype``, on ``batch`` prepared as the agent's update
    would prepare it (advantages normalised over the batch when ``norm_adv``), with the coefficients of
    its last update (``PPO.loss_coefs``) unless ``coefs`` are given."""
    coefs = coefs or agent.loss_coefs()
    actor, critic = networks_as(agent, dtype)
    return loss_terms(actor, critic, prepared(batch, coefs, agent.config.norm_adv, dtype), coefs)



def replay_update(actor: Actor, critic: Critic, actor_opt, critic_opt, config, batch: Minibatch, coefs: LossCoefs,
                  update: int) -> list[float]:
    """Step 3 of PPO as the algorithm reads, in NumPy, on the given networks and optimisers (changed in
    place): for each epoch, the seeded minibatches of ``batch``'s rows (``minibatches.epoch_minibatches``,
    as ``PPO`` draws them for update number ``update``); per minibatch ``losses.ppo_loss`` (advantages
    normalised over the minibatch if ``config.norm_adv``), its gradients clipped to one global norm (over
    both networks, or per network), ``Adam.step`` for each network; the epochs stop once a minibatch's
    approx KL (k3) exceeds ``config.target_kl``. The readable twin of the fused loop in ``ppo.py``
    (``tests/test_ppo.py`` holds them equal).

    Returns each minibatch's gradient norm before the clip.
    """
    from ppo_np.losses import ppo_loss
    from ppo_np.minibatches import epoch_minibatches
    from ppo_np.optim import clip_grad_norm

    norms = []
    for minibatches in epoch_minibatches(np.arange(len(batch.obs)), config.minibatch_size, config.seed, update,
                                         config.update_epochs):
        for rows in minibatches:
            mb = prepared(Minibatch(*(None if x is None else x[rows] for x in batch)), coefs, config.norm_adv,
                          actor.dtype)
            result = ppo_loss(actor, critic, mb, coefs)
            if config.clip_grad == "joint":
                norm = clip_grad_norm(result.actor_grads, result.critic_grads, max_norm=config.max_grad_norm)
            else:
                norm = math.hypot(clip_grad_norm(result.actor_grads, max_norm=config.max_grad_norm),
                                  clip_grad_norm(result.critic_grads, max_norm=config.max_grad_norm))
            norms.append(norm)
            actor_opt.step(result.actor_grads)
            critic_opt.step(result.critic_grads)
            if config.target_kl is not None and result.stats["approx_kl_k3"] > config.target_kl:
                return norms
    return norms


class GradientMonitor:
    """The gradient statistics that training logs per update with ``log_gradients`` (``rundir.GRADIENT_FIELDS``
    and one column per parameter): means over the update's minibatches of each parameter's gradient norm
    before the clip, of the clip's scale per network (1 where the clip did not bite), and of the
    surrogate's ``outside_share``. It only reads the gradients: training is the same with it or without.
    """

    def __init__(self, actor_flat_grad: np.ndarray, actor_params: dict, critic_flat_grad: np.ndarray,
                 critic_params: dict):
        self.parameters = [f"actor/{k}" for k in actor_params] + [f"critic/{k}" for k in critic_params]
        self._flat = (actor_flat_grad, critic_flat_grad)
        self._bounds = (parameter_bounds(actor_params), parameter_bounds(critic_params))
        self._sums = (np.zeros(len(actor_params)), np.zeros(len(critic_params)))
        self._scales = np.zeros(2)
        self._share = 0.0
        self._count = 0

    def observe(self, actor_scale: float, critic_scale: float, outside_share: float) -> None:
        """One minibatch: the gradients now in the flat vectors, the clip scales applied to them."""
        for flat, bounds, sums in zip(self._flat, self._bounds, self._sums):
            add_parameter_norms(flat, bounds, sums)
        self._scales += (actor_scale, critic_scale)
        self._share += outside_share
        self._count += 1

    def row(self) -> dict:
        """The update's means, keyed as gradients.csv's columns (NaN without a minibatch); then starts over."""
        n = self._count or math.nan
        norms = np.concatenate(self._sums) / n
        row = {"clip_scale_actor": self._scales[0] / n, "clip_scale_critic": self._scales[1] / n,
               "outside_share": self._share / n, **dict(zip(self.parameters, norms.tolist()))}
        self.reset()
        return row

    def reset(self) -> None:
        """Forget what was observed (an update starts, or one that failed is rolled back)."""
        for sums in self._sums:
            sums[:] = 0.0
        self._scales[:] = 0.0
        self._share, self._count = 0.0, 0
