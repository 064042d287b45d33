"""The gradient-check suite: every hand-written backward and forward-mode product of ppo-np, checked.

One function per component (layers, MLPs, each policy head, the surrogates, the value losses, the
chained PPO loss and its fused twin, the tangents, TRPO's Fisher-vector product and gradients), each
building a small float64 test point away from every kink and returning its ``gradcheck.Check`` rows;
``run_suite`` runs them all, keeping the worst error per row: the table of ``ppo-np gradcheck``.
``check_agent`` checks a real agent's loss, term by term, on a real batch: ``ppo-np gradcheck RUN_DIR``.
The method and the tolerance are ``gradcheck.py``'s.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ppo_np import layers, losses, surrogate, tangents, trpo
from ppo_np.fused import FusedLoss
from ppo_np.gradcheck import (DEFAULT_STEP, DEFAULT_TOL, Check, away_from, away_from_zero, check_directional,
                              check_gradients, numerical_gradient, randomize_biases, relative_error)
from ppo_np.heads import Bernoulli, Categorical, DiagGaussian, MultiCategorical, PolicyHead
from ppo_np.losses import LossCoefs, Minibatch, ppo_loss
from ppo_np.mlp import MLP
from ppo_np.params import Params, flatten, unflatten
from ppo_np.policy import Actor, Critic


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


def _temperature(rng: np.random.Generator) -> float:
    """A temperature well away from 1, so that a missing 1/tau cannot pass unnoticed."""
    return float(rng.choice([rng.uniform(0.3, 0.7), rng.uniform(1.5, 3.0)]))


def _check_heads(rng: np.random.Generator) -> list[Check]:
    """Every policy head's log_prob, entropy and KL backwards, in its distribution parameters y."""
    checks = []
    for head in (Categorical(int(rng.integers(2, 6))), DiagGaussian(int(rng.integers(1, 4))),
                 Bernoulli(int(rng.integers(1, 5))),
                 MultiCategorical(rng.integers(1, 4, size=int(rng.integers(1, 4))))):
        B = int(rng.integers(1, 6))
        tau = _temperature(rng)
        x = {"y": rng.standard_normal((B, head.dist_dim))}
        pq = {"y_p": rng.standard_normal((B, head.dist_dim)), "y_q": rng.standard_normal((B, head.dist_dim))}
        a = head.sample(x["y"], head.noise(rng, B), tau)

        def kl_backward(dy, head=head, tau=tau, pq=pq):
            return dict(zip(pq, head.kl_backward(dy, pq["y_p"], pq["y_q"], tau)))

        checks += (check_gradients(f"{head.name}-log_prob", lambda head=head, x=x, a=a, tau=tau: head.log_prob(x["y"], a, tau),
                                   lambda dy, head=head, x=x, a=a, tau=tau: {"y": head.log_prob_backward(dy, x["y"], a, tau)},
                                   x, rng)
                   + check_gradients(f"{head.name}-entropy", lambda head=head, x=x, tau=tau: head.entropy(x["y"], tau),
                                     lambda dy, head=head, x=x, tau=tau: {"y": head.entropy_backward(dy, x["y"], tau)},
                                     x, rng)
                   + check_gradients(f"{head.name}-kl", lambda head=head, pq=pq, tau=tau: head.kl(pq["y_p"], pq["y_q"], tau),
                                     kl_backward, pq, rng))
    return checks


def surrogate_test_point(rng: np.random.Generator, B: int, clip_eps: float, margin: float = 1e-2):
    """(logp, logp_old, adv) with ratios spread over [0.5, 1.5] but at least ``margin`` from 1 +- eps.

    Some samples land in the flat (clipped) regions, so the zero gradients are exercised too.
    """
    ratio = away_from(rng.uniform(0.5, 1.5, size=B), (1.0 - clip_eps, 1.0 + clip_eps), margin)
    logp_old = rng.uniform(-3.0, -0.1, size=B)
    adv = away_from_zero(rng, B)
    return logp_old + np.log(ratio), logp_old, adv


def _check_surrogates(rng: np.random.Generator) -> list[Check]:
    B, eps, beta = int(rng.integers(2, 9)), 0.2, float(rng.uniform(0.1, 3.0))
    logp, logp_old, adv = surrogate_test_point(rng, B, eps)
    x = {"logp": logp}
    y = {"logp": logp.copy(), "kl": rng.uniform(0.0, 0.5, size=B)}

    def penalty_backward(dy):
        _, (dlogp, dkl), _ = surrogate.kl_penalty_surrogate(y["logp"], logp_old, adv, y["kl"], beta)
        return {"logp": dy * dlogp, "kl": dy * dkl}

    return (check_gradients("surrogate-clip", lambda: surrogate.clipped_surrogate(x["logp"], logp_old, adv, eps)[0],
                            lambda dy: {"logp": dy * surrogate.clipped_surrogate(x["logp"], logp_old, adv, eps)[1]},
                            x, rng)
            + check_gradients("surrogate-penalty",
                              lambda: surrogate.kl_penalty_surrogate(y["logp"], logp_old, adv, y["kl"], beta)[0],
                              penalty_backward, y, rng))


def value_test_point(rng: np.random.Generator, values: np.ndarray, vf_clip: float, margin: float = 1e-2):
    """(returns, values_old) for given values, with no sample within ``margin`` of a kink of the clipped
    value loss: |V - V_old| = eps_v, or a tie (V - R)^2 = (V^clip - R)^2, i.e. R = (V + V^clip) / 2."""
    offset = away_from(rng.uniform(-3 * vf_clip, 3 * vf_clip, size=values.shape), (-vf_clip, vf_clip), margin)
    values_old = values - offset
    v_clipped = values_old + np.clip(values - values_old, -vf_clip, vf_clip)
    returns = away_from(values + rng.standard_normal(values.shape), [0.5 * (values + v_clipped)], margin)
    return returns, values_old


def _check_value_losses(rng: np.random.Generator) -> list[Check]:
    B, vf_clip = int(rng.integers(2, 9)), 0.2
    x = {"values": rng.standard_normal(B)}
    returns, values_old = value_test_point(rng, x["values"], vf_clip)
    h = {"entropy": rng.uniform(0.0, 2.0, size=B)}
    return (check_gradients("value-loss", lambda: losses.value_loss(x["values"], returns)[0],
                            lambda dy: {"values": dy * losses.value_loss(x["values"], returns)[1]}, x, rng)
            + check_gradients(
                "value-loss-clipped", lambda: losses.clipped_value_loss(x["values"], returns, values_old, vf_clip)[0],
                lambda dy: {"values": dy * losses.clipped_value_loss(x["values"], returns, values_old, vf_clip)[1]},
                x, rng)
            + check_gradients("entropy-bonus", lambda: losses.entropy_bonus(h["entropy"])[0],
                              lambda dy: {"entropy": dy * losses.entropy_bonus(h["entropy"])[1]}, h, rng))


def ppo_loss_test_point(rng: np.random.Generator, head: PolicyHead, surrogate: str,
                        temperature: float | None = None, vf_clip: float | None = 0.2):
    """(actor, critic, minibatch, coefs): a float64 point where every term of ``ppo_loss`` is alive.

    Small tanh networks with parameters drawn from N(0, 0.5^2) (log_std from N(0, 0.3^2)), so that the
    outputs are O(1) rather than the 0.01-gain init's ~0; ratios, value offsets and returns placed away
    from every kink (``surrogate_test_point``, ``value_test_point``), some inside the clip range and
    some outside; an old policy that differs from the current one, so the KL and its gradient are not
    trivially 0.
    """
    B, obs_dim = int(rng.integers(3, 8)), 3
    tau = _temperature(rng) if temperature is None else temperature
    clip_eps = 0.2
    actor = Actor(obs_dim, head, (5, 4), rng=rng)
    critic = Critic(obs_dim, (5, 4), rng=rng)
    for p in (*actor.params.values(), *critic.params.values()):
        p[...] = 0.5 * rng.standard_normal(p.shape)
    for p in actor.head_params.values():
        p[...] = 0.3 * rng.standard_normal(p.shape)
    obs = rng.standard_normal((B, obs_dim))
    actions, logp, out = actor.act(obs, rng, temperature=tau)
    adv = away_from_zero(rng, B)
    ratio = away_from(rng.uniform(0.5, 1.5, size=B), (1.0 - clip_eps, 1.0 + clip_eps), 1e-2)
    logp_old = logp - np.log(ratio)                             # r = ratio at the test point, off the kinks
    returns, values_old = value_test_point(rng, critic(obs), 0.2 if vf_clip is None else vf_clip)
    mb = Minibatch(obs, actions, logp_old, adv, returns, values_old,
                   dist_old=out + 0.3 * rng.standard_normal(out.shape))
    coefs = LossCoefs(surrogate=surrogate, clip_eps=clip_eps, beta=float(rng.uniform(0.5, 2.0)), vf_coef=0.7,
                      vf_clip=vf_clip, ent_coef=0.05, temperature=tau)
    return actor, critic, mb, coefs


def check_ppo_loss(rng: np.random.Generator, head: PolicyHead, surrogate: str,
                   temperature: float | None = None, vf_clip: float | None = 0.2, fused: bool = False) -> list[Check]:
    """The whole chained ``ppo_loss`` against central differences in every actor and critic parameter,
    at a ``ppo_loss_test_point``; with ``fused``, its fused twin ``fused.FusedLoss`` (the one training
    runs) instead.
    """
    actor, critic, mb, coefs = ppo_loss_test_point(rng, head, surrogate, temperature, vf_clip)
    B = mb.obs.shape[0]
    inputs = {**{f"actor/{k}": v for k, v in actor.params.items()},
              **{f"critic/{k}": v for k, v in critic.params.items()}}

    if fused:
        loss_and_grads = FusedLoss(actor, critic, B)

        def evaluate():
            loss = loss_and_grads(mb, coefs)[0]
            return loss, loss_and_grads.actor_grads, loss_and_grads.critic_grads
    else:
        def evaluate():
            result = ppo_loss(actor, critic, mb, coefs)
            return result.loss, result.actor_grads, result.critic_grads

    def backward(dy):
        _, actor_grads, critic_grads = evaluate()
        return {**{f"actor/{k}": dy * g for k, g in actor_grads.items()},
                **{f"critic/{k}": dy * g for k, g in critic_grads.items()}}

    name = f"{'fused' if fused else 'ppo_loss'}-{head.name}-{surrogate}"
    return check_gradients(name, lambda: evaluate()[0], backward, inputs, rng)


def _check_ppo_losses(rng: np.random.Generator) -> list[Check]:
    return [c for fused in (False, True) for head in one_of_each_head(rng) for surrogate in ("clip", "penalty")
            for c in check_ppo_loss(rng, head, surrogate, fused=fused)]


def one_of_each_head(rng: np.random.Generator) -> tuple[PolicyHead, ...]:
    """One head of every kind in ``heads.HEADS``, with a small random number of actions (2 or 3)."""
    return (Categorical(int(rng.integers(2, 4))), DiagGaussian(int(rng.integers(2, 4))),
            Bernoulli(int(rng.integers(2, 4))), MultiCategorical(rng.integers(2, 4, size=2)))


def _random_direction(params: Params, rng: np.random.Generator) -> Params:
    return {name: rng.standard_normal(p.shape) for name, p in params.items()}


def _check_layer_tangents(rng: np.random.Generator) -> list[Check]:
    B, n, m = (int(k) for k in rng.integers(1, 6, size=3))
    arrays = {"x": rng.standard_normal((B, n)), "W": rng.standard_normal((n, m)), "b": rng.standard_normal(m)}
    v = _random_direction(arrays, rng)
    cache = layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[1]
    checks = [check_directional("tangent-linear", lambda: layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[0],
                                tangents.linear_tangent(v["x"], cache, v["W"], v["b"]), arrays, v, "dy")]
    for name, act in layers.ACTIVATIONS.items():
        x = {"x": away_from_zero(rng, (4, 5))}
        dx = {"x": rng.standard_normal((4, 5))}
        dy = tangents.ACTIVATION_TANGENTS[name](dx["x"], act.forward(x["x"])[1])
        checks.append(check_directional(f"tangent-{name}", lambda: act.forward(x["x"])[0], dy, x, dx, "dy"))
    return checks


def _check_mlp_tangents(rng: np.random.Generator) -> list[Check]:
    checks = []
    for act in ("tanh", "relu"):
        mlp = MLP((3, 5, 4, 2), act, rng=rng, hidden_gain=1.0, out_gain=1.0)
        randomize_biases(mlp.params, rng)
        inputs = {"x": away_from_zero(rng, (6, 3), margin=0.5), **mlp.params}
        v = _random_direction(inputs, rng)
        dy = tangents.mlp_tangent(mlp, mlp.forward(inputs["x"])[1], v, v["x"])
        checks.append(check_directional(f"tangent-mlp-{act}", lambda: mlp.forward(inputs["x"])[0], dy, inputs, v,
                                        "dy"))
    return checks


def trpo_test_point(rng: np.random.Generator, head: PolicyHead, activation: str = "tanh"):
    """(actor, obs, tau): a small actor with O(1) outputs (parameters ~ N(0, 0.5^2), the head's own ~
    N(0, 0.3^2)), a few random states and a temperature away from 1."""
    B, obs_dim = int(rng.integers(3, 8)), 3
    actor = Actor(obs_dim, head, (5, 4), activation, rng=rng)
    for p in actor.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    for p in actor.head_params.values():
        p[...] = 0.3 * rng.standard_normal(p.shape)
    return actor, rng.standard_normal((B, obs_dim)), _temperature(rng)


def _check_actor_tangents(rng: np.random.Generator) -> list[Check]:
    """J v of the actor's distribution parameters y (a Gaussian's log_std in every state)."""
    checks = []
    for head in one_of_each_head(rng):
        actor, obs, _ = trpo_test_point(rng, head)
        v = _random_direction(actor.params, rng)
        dy = tangents.actor_tangent(actor, actor.forward(obs)[1], v)
        checks.append(check_directional(f"tangent-actor-{head.name}", lambda: actor.forward(obs)[0], dy,
                                        actor.params, v))
    return checks


def _check_fisher(rng: np.random.Generator) -> list[Check]:
    """F v against central differences of the mean KL's gradient at pi = pi_old (a Hessian-vector product).

    The old policy is frozen at the test point; g(theta) = d/dtheta mean KL(pi_old || pi_theta) vanishes
    there and (g(theta + h v) - g(theta - h v)) / 2h -> H v = F v. One row per parameter array.
    """
    checks = []
    for head in one_of_each_head(rng):
        actor, obs, tau = trpo_test_point(rng, head)
        dist_old = actor.forward(obs)[0]
        v = _random_direction(actor.params, rng)
        Fv = unflatten(trpo.fisher_vector_product(actor, trpo.fisher_point(actor, obs, tau), flatten(v)), actor.params)
        saved = {name: p.copy() for name, p in actor.params.items()}

        def grad_at(t: float) -> Params:
            for name, p in actor.params.items():
                p[...] = saved[name] + t * v[name]
            return trpo.mean_kl_gradient(actor, obs, dist_old, tau)

        plus, minus = grad_at(DEFAULT_STEP), grad_at(-DEFAULT_STEP)
        for name, p in actor.params.items():
            p[...] = saved[name]
        for name in actor.params:
            err = relative_error(Fv[name], (plus[name] - minus[name]) / (2.0 * DEFAULT_STEP))
            checks.append(Check(f"fisher-{head.name}", name, err, err < DEFAULT_TOL))
    return checks


def _check_trpo_surrogate(rng: np.random.Generator) -> list[Check]:
    """The gradients TRPO uses, in every actor parameter: of the mean KL to a different old policy
    (``trpo.mean_kl_gradient``), and g = d mean(r A) / dtheta (``trpo.surrogate_gradient``) away from r = 1."""
    checks = []
    for head in one_of_each_head(rng):
        actor, obs, tau = trpo_test_point(rng, head)
        B = obs.shape[0]
        actions, logp, y = actor.act(obs, rng, temperature=tau)
        batch = Minibatch(obs, actions, logp - np.log(rng.uniform(0.5, 1.5, size=B)), away_from_zero(rng, B),
                          np.zeros(B), np.zeros(B), y)
        y_old = y + 0.3 * rng.standard_normal(y.shape)                     # pi_old != pi_theta
        checks += check_gradients(
            f"trpo-kl-{head.name}",
            lambda: np.array(np.mean(head.kl(y_old, actor.forward(obs)[0], tau))),
            lambda dy: {k: dy * g for k, g in trpo.mean_kl_gradient(actor, obs, y_old, tau).items()},
            actor.params, rng)
        checks += check_gradients(f"trpo-surrogate-{head.name}",
                                  lambda: np.array(trpo.surrogate_gradient(actor, batch, tau)[0]),
                                  lambda dy: {k: dy * g for k, g in unflatten(trpo.surrogate_gradient(
                                      actor, batch, tau)[1], actor.params).items()},
                                  actor.params, rng)
    return checks


SUITE: list[Callable[[np.random.Generator], list[Check]]] = [
    _check_linear, _check_activations, _check_mlps,
    _check_heads, _check_surrogates, _check_value_losses, _check_ppo_losses,
    _check_layer_tangents, _check_mlp_tangents, _check_actor_tangents, _check_fisher, _check_trpo_surrogate,
]


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


#: ``check_agent``'s step, with the 4-point stencil: a real agent's losses are large (returns of hundreds),
#: so the rounding noise eps * L / h of the default 1e-6 step reaches ~1e-7 of the gradient, and near its
#: minimum the KL's O(h^2) error does too (its third derivative is O(1), its gradient small); 1e-4 with an
#: O(h^4) error keeps both below ~1e-9
AGENT_STEP = 1e-4
#: ``check_agent`` leaves out samples whose ratio is this close to a kink of the clip, 1 +- eps (a step 2h
#: moves log pi by about 2h times the entry's gradient: below this for gradients up to ~5)
KINK_MARGIN = 1e-3


def check_agent(agent, batch: Minibatch, samples: int = 64, seed: int = 0, old_policy_noise: float = 0.05,
                progress: bool = False) -> list[Check]:
    """Each term of a real agent's loss (``gradients.TERMS``) against central differences, per parameter.

    The agent's networks cast to float64, ``samples`` rows drawn (with ``seed``) from ``batch`` after
    its advantages are prepared as the update prepares them. The batch's old policy is replaced by the
    agent's own with every weight scaled by 1 + ``old_policy_noise`` N(0, 1): at the policy's own batch
    r = 1 and KL = 0, the KL's gradient vanishes and the clip splits nothing, so the check would
    compare rounding noise; mid-update the policy has moved like this. The set of samples inside the clip range
    is held fixed while the parameters move (``gradients.term_losses``), and samples whose ratio is
    within ``KINK_MARGIN`` of 1 +- eps are left out. One row per term and parameter
    the term reaches: the actor's for the policy terms, the critic's for the value term; the KL penalty
    only for PPO-penalty and the entropy only with c_e > 0. ``progress`` shows a bar over the parameters.
    """
    from ppo_np.gradients import TERMS, loss_terms, networks_as, prepared, term_losses

    coefs = agent.loss_coefs()
    actor, critic = networks_as(agent, "float64")
    batch = prepared(batch, coefs, agent.config.norm_adv)
    # the old policy: the agent's own, its weights moved by ``old_policy_noise`` (relative, seeded), so that
    # ratios, the clip and the KL are away from their values at r = 1, where every KL gradient vanishes
    rng = np.random.default_rng(seed)
    old, _ = networks_as(agent, "float64")
    for p in old.params.values():
        p *= 1.0 + old_policy_noise * rng.standard_normal(p.shape)
    dist_old = old.forward(batch.obs)[0]
    batch = batch._replace(dist_old=dist_old, logp_old=old.head.log_prob(dist_old, batch.actions, coefs.temperature))
    # samples whose ratio sits within KINK_MARGIN of 1 +- eps would cross the clip's kink under a step h
    ratio = np.exp(actor.head.log_prob(actor.forward(batch.obs)[0], batch.actions, coefs.temperature) - batch.logp_old)
    smooth = np.flatnonzero(np.abs(np.abs(ratio - 1.0) - coefs.clip_eps) > KINK_MARGIN)
    if smooth.size == 0:
        raise ValueError(f"every sample's ratio lies within {KINK_MARGIN:g} of the clip range's edges "
                         f"1 +- {coefs.clip_eps:g}, where central differences are meaningless")
    rows = rng.permutation(smooth)[:samples]
    batch = Minibatch(*(None if x is None else x[rows] for x in batch))
    terms = loss_terms(actor, critic, batch, coefs)
    reaches = {"surrogate_inside_clip": "actor", "surrogate_outside_clip": "actor", "kl_penalty": "actor",
               "entropy": "actor", "value": "critic"}
    skipped = {"kl_penalty"} if coefs.surrogate != "penalty" or coefs.beta == 0 else set()
    skipped |= {"entropy"} if coefs.ent_coef == 0 else set()
    params = {**{f"actor/{k}": p for k, p in actor.params.items()}, **{f"critic/{k}": p for k, p in critic.params.items()}}
    items = params.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(params), unit="param", desc="central differences", leave=False)
    numerical = {name: numerical_gradient(lambda: term_losses(actor, critic, batch, coefs, terms.inside), p,
                                          AGENT_STEP, points=4) for name, p in items}
    checks = []
    for i, term in enumerate(TERMS):
        for name in params:
            if term not in skipped and name.startswith(reaches[term] + "/"):
                err = relative_error(terms.gradients[term][name], numerical[name][i])
                checks.append(Check(f"run-{term}", name, err, err < DEFAULT_TOL))
    return checks
