r"""A closer look at a run's gradients, after Ilyas et al., "A Closer Look at Deep Policy Gradients" (ICLR 2020).

At one checkpoint, with the policy frozen, ``run_study`` measures:

Gradient-estimate concentration. A surrogate gradient estimate from n state-action pairs is
g_n = -(1/n) sum_t A_t grad log pi(a_t | s_t) (the surrogate's gradient at r = 1, the actor's parameters
only, advantages normalised as the update normalises them, ``gradients.loss_terms``). For each n
(multiples of the run's batch up to ``max_samples``), ``estimates`` independent estimates from disjoint
samples give
    mean pairwise cosine similarity   mean_{j<k} <g_j, g_k> / (||g_j|| ||g_k||): 1 when the estimates
                                      agree in direction, ~0 when they are noise;
    variance                          mean_k ||g_k - mean_j g_j||^2 (the trace of their covariance), and
                                      relative to ||mean_j g_j||^2;
    alignment with the true gradient  mean_k cos(g_k, g_true^(-k)), g_true^(-k) the mean gradient over all
                                      the other samples collected (many times a batch; leaving g_k's own
                                      samples out keeps the two independent).

The minibatch steps PPO takes. The gradients of the minibatches of one batch (the first epoch, at
r = 1: what PPO's first steps follow), each against the high-sample estimate of the others: their
cosine similarity with it, and that of the whole batch's gradient.

The value function. (a) States of complete episodes of the current policy, each with its Monte-Carlo
return G_t = sum_k gamma^k r_{t+k} to the episode's end (of the rewards the critic is trained on: scaled
when ``normalize_reward``; for an episode cut by a time limit the last 1/(1 - gamma) steps are left
out, where the missing tail would weigh more than 1/e), against V(s_t): the mean squared error, its
ratio to Var[G] and the explained variance; and how much of the advantage signal's variance the learned
baseline removes, Var[G - V] / Var[G], with the variance of gradient estimates built on A = G - V(s)
against A = G (no baseline). (b) Against V^pi itself (``true_value_study``): at states of the policy's
own episodes, V^pi(s) estimated by the mean return of several continuations of the policy from a copy
of the environment at s; the learned V's error and correlation against it, and the variance of gradient
estimates with the learned baseline against the true-value one, the paper's comparison.

The landscape along the update. The update the agent would make on one batch, replayed in float64
(``gradients.replay_update``: its epochs of shuffled minibatches, the clip, Adam from its state, the
learning rate of its last update; for TRPO its natural-gradient step, ``trpo.trpo_step``) gives the
step Delta of the actor's parameters. Along
theta + alpha Delta and along a random direction of the same norm, for alpha in ``ALPHAS``: the surrogate
objective on the batch (the clipped one, or r A for PPO-penalty and TRPO; advantages normalised over
the batch when ``norm_adv``), and the true return, the mean undiscounted return of ``episodes``
episodes of the stochastic policy at those parameters (``evaluation.evaluate``, the same seed at
every alpha, so that the curves differ by the parameters and not by the episodes).

Samples come from long rollouts of the run's ``num_envs`` environments, cut into windows of the run's
``num_steps`` steps (one batch each; the first window, which starts at the episodes' resets, is left
out), so estimates see the states training sees. Everything is seeded: the same arguments give the
same numbers.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np

from ppo_np.gradients import batch_of, collect_rollout, loss_terms, networks_as, prepared, replay_update
from ppo_np.losses import Minibatch

#: windows per rollout (the first is left out): each rollout gives this many batches, less one
WINDOWS = 17
#: the points of the landscape, in units of the update's step
ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def flat_policy_gradient(actor, critic, batch: Minibatch, coefs, normalize: bool) -> np.ndarray:
    """The surrogate's gradient on ``batch`` with respect to every actor parameter, as one float64 vector."""
    terms = loss_terms(actor, critic, prepared(batch, coefs, normalize), coefs)
    return np.concatenate([(terms.gradients["surrogate_inside_clip"][k] + terms.gradients["surrogate_outside_clip"][k])
                           .ravel() for k in terms.gradients["value"] if k.startswith("actor/")])


def concentration(estimates: np.ndarray) -> dict:
    """Mean pairwise cosine similarity, variance (trace of the covariance) and variance relative to the
    squared norm of the mean, of K >= 2 gradient estimates (rows of ``estimates``)."""
    K = estimates.shape[0]
    if K < 2:
        raise ValueError(f"concentration needs at least 2 estimates, got {K}")
    unit = estimates / np.maximum(np.linalg.norm(estimates, axis=1, keepdims=True), 1e-300)
    cos = unit @ unit.T
    mean = estimates.mean(axis=0)
    variance = float(np.mean(np.sum((estimates - mean) ** 2, axis=1)))
    return {"mean_pairwise_cosine": float(cos[np.triu_indices(K, 1)].mean()), "variance": variance,
            "relative_variance": variance / max(float(mean @ mean), 1e-300)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))


def collect_blocks(agent, count: int, seed: int, progress=None) -> list[Minibatch]:
    """``count`` batches of the current policy (``num_envs`` x ``num_steps`` each), from rollouts of
    ``WINDOWS`` windows, each rollout seeded from (``seed``, its number) (module docstring)."""
    cfg = agent.config
    blocks: list[Minibatch] = []
    rollout = 0
    while len(blocks) < count:
        # rollout r's seed from (seed, r): consecutive seeds would share environments (env i is seeded seed + i)
        rollout_seed = int(np.random.SeedSequence([seed, rollout]).generate_state(1)[0])
        buf, adv, returns = collect_rollout(agent, cfg.num_steps * WINDOWS, cfg.num_envs, rollout_seed)
        for w in range(1, WINDOWS):
            if len(blocks) < count:
                blocks.append(batch_of(buf, adv, returns, slice(w * cfg.num_steps, (w + 1) * cfg.num_steps)))
                if progress is not None:
                    progress.update(1)
        rollout += 1
    return blocks


def monte_carlo_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                        gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(G, usable) for (T, N) arrays of an episode-aligned record: G_t = r_t + gamma G_{t+1} within an
    episode; usable where the episode ended in the record, and not within 1/(1 - gamma) steps of a
    truncation (module docstring)."""
    T, N = rewards.shape
    G, usable = np.zeros((T, N)), np.zeros((T, N), bool)
    horizon = math.ceil(1.0 / (1.0 - gamma)) if gamma < 1 else T
    for n in range(N):
        g, ended, steps_to_cut = 0.0, False, math.inf
        for t in range(T - 1, -1, -1):
            if terminated[t, n] or truncated[t, n]:
                g, ended = 0.0, True
                steps_to_cut = 0 if truncated[t, n] else math.inf
            g = rewards[t, n] + gamma * g
            G[t, n] = g
            usable[t, n] = ended and steps_to_cut >= horizon
            steps_to_cut += 1
    return G, usable


def value_study(agent, seed: int, num_steps: int, estimates: int) -> dict:
    """The critic against Monte-Carlo returns, and the variance the learned baseline removes (module docstring)."""
    cfg = agent.config
    buf, _, _ = collect_rollout(agent, num_steps, cfg.num_envs, seed)
    # the record of each env from its first reset on: the rollout's rows are steps, reset rows are not
    valid = buf.valid
    G, usable = monte_carlo_returns(buf.rewards * valid, buf.terminated & valid, buf.truncated & valid, cfg.gamma)
    usable &= valid
    if usable.sum() < 2:
        raise ValueError(f"no complete episode in {num_steps} steps of {cfg.num_envs} envs: "
                         "study the value function with more steps (--value-steps)")
    values, returns = buf.values[usable].astype(np.float64), G[usable]
    error = values - returns
    var_g = float(returns.var())
    result = {"states": int(usable.sum()), "mse": float(np.mean(error ** 2)),
              "mse_over_var_returns": float(np.mean(error ** 2)) / var_g if var_g > 0 else math.nan,
              "explained_variance": 1.0 - float(error.var()) / var_g if var_g > 0 else math.nan,
              "advantage_variance_ratio": float(error.var()) / var_g if var_g > 0 else math.nan}
    # gradient estimates on the usable states, with A = G - V (the learned baseline) and A = G (none)
    coefs = agent.loss_coefs()
    actor, critic = networks_as(agent, "float64")
    flat = batch_of(buf, np.zeros_like(G), G)  # the valid rows, in order; advantages set below
    rows = np.flatnonzero(usable.reshape(-1)[valid.reshape(-1)])  # the usable ones among them
    batch = Minibatch(*(None if x is None else x[rows] for x in flat))
    chunks = np.array_split(np.random.default_rng(seed).permutation(len(rows)), estimates)
    for name, adv in (("learned_baseline", returns - values), ("no_baseline", returns)):
        grads = np.stack([flat_policy_gradient(actor, critic, Minibatch(*(None if x is None else x[c] for x in
                                                                          batch._replace(advantages=adv))),
                                               coefs, normalize=False) for c in chunks])
        result[f"gradient_variance_{name}"] = concentration(grads)["variance"]
    result["gradient_variance_ratio"] = (result["gradient_variance_learned_baseline"]
                                         / max(result["gradient_variance_no_baseline"], 1e-300))
    return result


def landscape(agent, batch: Minibatch, episodes: int, seed: int, progress=None) -> dict:
    """The surrogate and the true return along the update's step and a random direction (module docstring)."""
    from ppo_np import agent_state, trpo
    from ppo_np.evaluation import evaluate
    from ppo_np.optim import Adam
    from ppo_np.ppo import PPO
    from ppo_np.schedules import schedule

    cfg = agent.config
    coefs = agent.loss_coefs()
    actor, critic = networks_as(agent, "float64")
    start = {k: p.copy() for k, p in actor.params.items()}
    lr = max(schedule(cfg.lr_schedule, cfg.learning_rate, 0.0, agent.last_update_progress()), 1e-12)
    if cfg.algo == "trpo":  # its policy step: one natural-gradient step on the whole batch
        trpo.trpo_step(actor, prepared(batch, coefs, cfg.norm_adv), coefs.temperature, max_kl=cfg.trpo_max_kl,
                       cg_iters=cfg.cg_iters, cg_tol=cfg.cg_tol, damping=cfg.cg_damping,
                       line_search_steps=cfg.line_search_steps, line_search_decay=cfg.line_search_decay)
    else:
        optimisers = []
        for net, opt in ((actor, agent.actor_opt), (critic, agent.critic_opt)):
            twin = Adam(net.params, lr=lr, eps=cfg.adam_eps)
            twin.load_state_dict(opt.state_dict())
            twin.lr = lr
            optimisers.append(twin)
        replay_update(actor, critic, *optimisers, cfg, batch, coefs, agent.update_count)
    step = {k: actor.params[k] - start[k] for k in start}
    step_norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in step.values())))
    rng = np.random.default_rng(seed)
    random = {k: rng.standard_normal(d.shape) for k, d in step.items()}
    random_norm = float(np.sqrt(sum(float(np.sum(d * d)) for d in random.values())))
    random = {k: d * step_norm / random_norm for k, d in random.items()}

    clone = PPO(agent.env_source, cfg)
    agent_state.load_checkpoint_state(clone, agent.state_arrays())
    batch64 = prepared(batch, coefs, cfg.norm_adv)
    curves = {}
    for name, direction in (("update_step", step), ("random", random)):
        surrogate, returns = [], []
        for alpha in ALPHAS:
            for k, p in actor.params.items():
                p[...] = start[k] + alpha * direction[k]
                clone.actor.params[k][...] = p
            terms = loss_terms(actor, critic, batch64, coefs)
            surrogate.append(-(terms.losses["surrogate_inside_clip"] + terms.losses["surrogate_outside_clip"]))
            returns.append(evaluate(clone, episodes=episodes, seed=seed, deterministic=False)["mean_return"])
            if progress is not None:
                progress.update(1)
        curves[name] = {"surrogate": surrogate, "true_return": returns}
    clone.close()
    return {"alphas": list(ALPHAS), "step_norm": step_norm, "learning_rate": None if cfg.algo == "trpo" else lr,
            "episodes": int(episodes), **curves}


def estimate_true_values(agent, states: int, rollouts: int, rng: np.random.Generator):
    """(observations, actions, G, V^pi) at ``states`` states of the stochastic policy's own episodes.

    One environment runs episodes of the policy; at a random tenth of their steps a copy of the
    environment is kept (``copy.deepcopy``, its random generator reseeded per continuation). From each
    kept state, ``rollouts`` continuations of the policy to the episode's end give V^pi(s) = E[G] by
    their mean; the episode's own continuation gives G, and the action it took a.
    """
    cfg = agent.config
    seed = int(rng.integers(2**31))
    env = agent.env_source.make_one()
    cap = agent.env_source.max_episode_steps or 10_000

    def act(obs):
        return agent.act(np.asarray(obs, np.float64)[None], False, rng)[0]

    def scaled(reward):  # the rewards the critic learns: scaled when normalize_reward (statistics frozen)
        return float(agent.reward_scaler(np.array([reward]), np.zeros(1, bool), np.ones(1, bool), update=False)[0])

    def continuation(snapshot, obs) -> float:
        world = copy.deepcopy(snapshot)
        world.unwrapped.np_random = np.random.default_rng(rng.integers(2**63))
        g, discount = 0.0, 1.0
        for _ in range(cap):
            obs, reward, terminated, truncated, _ = world.step(agent.head.env_actions(act(obs)[None])[0])
            g += discount * scaled(reward)
            discount *= cfg.gamma
            if terminated or truncated:
                break
        world.close()
        return g

    kept = []  # (copy of the environment at s, its observation, the action taken, G of the episode from s)
    try:
        obs, _ = env.reset(seed=seed)
        episode, rewards = [], []
        while len(kept) < states:
            action = act(obs)
            if rng.random() < 0.1:
                episode.append((copy.deepcopy(env), obs, action, len(rewards)))
            obs, reward, terminated, truncated, _ = env.step(agent.head.env_actions(action[None])[0])
            rewards.append(scaled(reward))
            if terminated or truncated:
                G = np.zeros(len(rewards) + 1)
                for t in range(len(rewards) - 1, -1, -1):
                    G[t] = rewards[t] + cfg.gamma * G[t + 1]
                kept += [(snapshot, o, a, G[t]) for snapshot, o, a, t in episode]
                episode, rewards = [], []
                obs, _ = env.reset()
    except Exception as exc:  # a copy that fails: the environment holds something deepcopy cannot copy
        raise ValueError(f"the true-value study needs copies of the environment mid-episode: {type(exc).__name__}: "
                         f"{exc}; leave it out with --value-states 0") from None
    finally:
        env.close()
    kept = kept[:states]
    v_true = np.array([np.mean([continuation(snapshot, o) for _ in range(rollouts)]) for snapshot, o, _, _ in kept])
    return (np.stack([o for _, o, _, _ in kept]).astype(np.float64), np.stack([a for _, _, a, _ in kept]),
            np.array([g for _, _, _, g in kept]), v_true)


def true_value_study(agent, states: int, rollouts: int, seed: int) -> dict:
    """The learned V against V^pi (``estimate_true_values``): MSE over Var[V^pi], correlation, and the
    variance of the advantage signal and of gradient estimates (8 chunks of the states) with A = G - V
    against A = G - V^pi (module docstring)."""
    rng = np.random.default_rng(seed)
    obs, actions, G, v_true = estimate_true_values(agent, states, rollouts, rng)
    v_learned = agent.critic(agent.obs_norm(obs, update=False)).astype(np.float64)
    var_true = float(v_true.var())
    result = {"states": len(G), "rollouts_per_state": int(rollouts),
              "mse_over_var_true_value": float(np.mean((v_learned - v_true) ** 2)) / var_true if var_true > 0 else math.nan,
              "correlation": float(np.corrcoef(v_learned, v_true)[0, 1]) if var_true > 0 else math.nan,
              "advantage_variance_learned_baseline": float(np.var(G - v_learned)),
              "advantage_variance_true_baseline": float(np.var(G - v_true))}
    coefs = agent.loss_coefs()
    actor, critic = networks_as(agent, "float64")
    norm_obs = agent.obs_norm(obs, update=False).astype(np.float64)
    y = actor.forward(norm_obs)[0]
    batch = Minibatch(obs=norm_obs, actions=actions, logp_old=agent.head.log_prob(y, actions, coefs.temperature),
                      advantages=np.zeros(len(G)), returns=G, values_old=v_learned, dist_old=y)
    chunks = np.array_split(rng.permutation(len(G)), 8)
    for name, baseline in (("learned_baseline", v_learned), ("true_baseline", v_true)):
        adv = G - baseline
        grads = np.stack([flat_policy_gradient(actor, critic, Minibatch(*(x[c] for x in batch._replace(advantages=adv))),
                                               coefs, normalize=False) for c in chunks])
        result[f"gradient_variance_{name}"] = concentration(grads)["variance"]
    return result


def run_study(agent, max_samples: int = 32_768, estimates: int = 8, seed: int = 0, value_steps: int = 2048,
              landscape_episodes: int = 8, value_states: int = 128, value_rollouts: int = 8,
              progress: bool = False) -> dict:
    """Every measurement of the module docstring at the agent's current weights; a JSON-ready dict."""
    cfg = agent.config
    batch = cfg.batch_size
    multiples = [m for m in (2 ** k for k in range(20)) if m * batch <= max(max_samples, batch)]
    if estimates < 2:
        raise ValueError(f"estimates must be at least 2 (a pairwise similarity), got {estimates}")
    count = estimates * multiples[-1]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="batch", desc="collecting", leave=False)
    blocks = collect_blocks(agent, count, seed, bar)
    if bar is not None:
        bar.close()
        bar = tqdm(total=2 * len(ALPHAS), unit="point", desc="landscape", leave=False)
    coefs = agent.loss_coefs()
    actor, critic = networks_as(agent, "float64")
    block_grads = np.stack([flat_policy_gradient(actor, critic, b, coefs, cfg.norm_adv) for b in blocks])
    sizes = np.array([len(b.obs) for b in blocks], dtype=np.float64)
    total = (block_grads * sizes[:, None]).sum(axis=0)

    def without(rows):  # the high-sample estimate from every block but ``rows``
        kept = np.ones(len(blocks), bool)
        kept[rows] = False
        return (block_grads[kept] * sizes[kept, None]).sum(axis=0) / sizes[kept].sum()

    rows_by_size = []
    for m in multiples:
        groups = [np.arange(k * m, (k + 1) * m) for k in range(estimates)]
        est = np.stack([(block_grads[g] * sizes[g, None]).sum(axis=0) / sizes[g].sum() for g in groups])
        rows_by_size.append({"samples": int(round(float(np.mean([sizes[g].sum() for g in groups])))),
                             "batches": m, **concentration(est),
                             "true_gradient_cosine": float(np.mean([cosine(e, without(g)) for e, g in zip(est, groups)]))})

    # PPO's first-epoch minibatch gradients of one batch, against the estimate from all other batches
    first = blocks[0]
    order = np.random.default_rng(seed).permutation(len(first.obs))
    minibatch_cosines = []
    for start in range(0, len(order), cfg.minibatch_size):
        rows = order[start:start + cfg.minibatch_size]
        mb = Minibatch(*(None if x is None else x[rows] for x in first))
        minibatch_cosines.append(cosine(flat_policy_gradient(actor, critic, mb, coefs, cfg.norm_adv), without([0])))
    return {"env_id": agent.env_id, "global_step": int(agent.global_step), "update": int(agent.update_count),
            "seed": int(seed), "batch_size": int(batch), "estimates": int(estimates),
            "parameters": int(block_grads.shape[1]), "samples_collected": int(sizes.sum()),
            "true_gradient_norm": float(np.linalg.norm(total / sizes.sum())),
            "concentration": rows_by_size,
            "minibatch_alignment": {"minibatch_size": int(cfg.minibatch_size), "cosines": minibatch_cosines,
                                    "mean_cosine": float(np.mean(minibatch_cosines)),
                                    "batch_cosine": cosine(block_grads[0], without([0]))},
            "value": value_study(agent, seed + 10_000, value_steps, estimates),
            "true_value": (true_value_study(agent, value_states, value_rollouts, seed + 20_000)
                           if value_states > 0 else None),
            "landscape": landscape(agent, blocks[0], landscape_episodes, seed, bar)}


def plot_study(result: dict, out_dir, plt) -> list:
    """Four PNGs in ``out_dir``: concentration, minibatch alignment, value function, landscape. Returns their paths."""
    from pathlib import Path

    out_dir = Path(out_dir)
    rows = result["concentration"]
    n = [r["samples"] for r in rows]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key, title in zip(axes, ("mean_pairwise_cosine", "relative_variance", "true_gradient_cosine"),
                              ("mean pairwise cosine of estimates", "variance / ||mean||^2",
                               "cosine with the high-sample gradient")):
        ax.plot(n, [r[key] for r in rows], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("state-action pairs per estimate", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.axvline(result["batch_size"], color="grey", ls=":", lw=1)
    axes[1].set_yscale("log")
    paths.append(_save(fig, plt, out_dir / "study_concentration.png", result))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    alignment = result["minibatch_alignment"]
    ax.bar(range(len(alignment["cosines"])), alignment["cosines"])
    ax.axhline(alignment["batch_cosine"], color="C1", label="whole batch")
    ax.set_xlabel("minibatch of the first epoch", fontsize=8)
    ax.set_title("cosine of minibatch gradients with the high-sample gradient", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, plt, out_dir / "study_minibatches.png", result))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    value, true = result["value"], result["true_value"]
    axes[0].bar(["no baseline", "learned V"],
                [value["gradient_variance_no_baseline"], value["gradient_variance_learned_baseline"]])
    axes[0].set_title(f"gradient variance, {value['states']} states; Var[G - V] / Var[G] = "
                      f"{value['advantage_variance_ratio']:.2f}", fontsize=9)
    if true is not None:
        axes[1].bar(["learned V", "true V^pi"],
                    [true["gradient_variance_learned_baseline"], true["gradient_variance_true_baseline"]])
        axes[1].set_title(f"gradient variance, {true['states']} states; corr(V, V^pi) = {true['correlation']:.2f}",
                          fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    paths.append(_save(fig, plt, out_dir / "study_value.png", result))

    land = result["landscape"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key, title in zip(axes, ("surrogate", "true_return"), ("surrogate objective on the batch",
                                                                     "true return (stochastic policy)")):
        for name, label in (("update_step", "along the update's step"), ("random", "along a random direction")):
            ax.plot(land["alphas"], land[name][key], marker="o", label=label)
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("alpha (steps of ||Delta|| = %.3g)" % land["step_norm"], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paths.append(_save(fig, plt, out_dir / "study_landscape.png", result))
    return paths


def _save(fig, plt, path, result: dict):
    fig.suptitle(f"{result['env_id']} at step {result['global_step']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def study_summary(result: dict, max_rows: Optional[int] = None) -> str:
    """A few lines for a terminal."""
    lines = [f"{result['env_id']} at step {result['global_step']}: {result['samples_collected']} samples, "
             f"{result['parameters']} actor parameters",
             f"{'samples':>8}  {'pair cos':>8}  {'rel var':>9}  {'cos true':>8}"]
    for r in result["concentration"][:max_rows]:
        lines.append(f"{r['samples']:>8}  {r['mean_pairwise_cosine']:8.3f}  {r['relative_variance']:9.3g}  "
                     f"{r['true_gradient_cosine']:8.3f}")
    a, v = result["minibatch_alignment"], result["value"]
    lines.append(f"minibatch gradients vs the high-sample gradient: mean cosine {a['mean_cosine']:.3f} "
                 f"(the whole batch: {a['batch_cosine']:.3f})")
    lines.append(f"value function on {v['states']} states: MSE / Var[G] {v['mse_over_var_returns']:.3f}, "
                 f"Var[G - V] / Var[G] {v['advantage_variance_ratio']:.3f}, gradient variance with V / without "
                 f"{v['gradient_variance_ratio']:.3f}")
    t = result["true_value"]
    if t is not None:
        lines.append(f"against V^pi on {t['states']} states ({t['rollouts_per_state']} rollouts each): MSE / "
                     f"Var[V^pi] {t['mse_over_var_true_value']:.3f}, correlation {t['correlation']:.3f}, gradient "
                     f"variance with V {t['gradient_variance_learned_baseline']:.3g}, with V^pi "
                     f"{t['gradient_variance_true_baseline']:.3g}")
    land = result["landscape"]
    lines.append("landscape, alpha " + " ".join(f"{a:6.1f}" for a in land["alphas"]))
    for name in ("update_step", "random"):
        lines.append(f"  {name:<11} return " + " ".join(f"{x:6.1f}" for x in land[name]["true_return"]))
    return "\n".join(lines)
