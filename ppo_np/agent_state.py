"""The agent's state as named arrays: one snapshot serves both the update's rollback and the checkpoint.

Two layers, the first inside the second:

    learner state   what an update changes: both networks' weights, both Adam states, the entropy
                    tuner, PPO-penalty's beta. The update copies it before its first step and writes
                    it back if anything stops it half-way (a NaN at minibatch k, Ctrl-C), so an update
                    is kept whole or not at all.
    checkpoint      the learner state and what else a resumed run needs: the environment (its name,
                    its recipe when names rebuild it, its spaces), the config, the counters, the recent
                    returns, the generators of training's and of predict's actions, and the
                    observation and reward normalisers.

Keys are ``group/name`` (``actor/W0``, ``adam_actor/m/W0``, ``ent/value``, ``obs_rms/mean``, ...), the
layout ``checkpoint`` stores. Writing back checks every entry against what it replaces
(``checkpoint.take``), so a checkpoint that does not fit the agent is refused with the entry's name.
"""
from __future__ import annotations

import json

import numpy as np

from ppo_np import checkpoint


def learner_state(agent) -> dict[str, np.ndarray]:
    """Copies of everything an update changes: weights, both Adam states, the entropy tuner, beta."""
    state = {f"actor/{k}": v.copy() for k, v in agent.actor.params.items()}
    state.update({f"critic/{k}": v.copy() for k, v in agent.critic.params.items()})
    state.update({f"adam_actor/{k}": v for k, v in agent.actor_opt.state_dict().items()})  # copies
    state.update({f"adam_critic/{k}": v for k, v in agent.critic_opt.state_dict().items()})
    state.update(agent.ent_coef.state_dict())                                               # copies
    state["beta"] = np.array(agent.beta.beta)
    return state


def load_learner_state(agent, arrays: dict[str, np.ndarray]) -> None:
    """Write a ``learner_state`` (or a checkpoint holding one) back into ``agent``, in place."""
    take = checkpoint.take
    for prefix, params in (("actor", agent.actor.params), ("critic", agent.critic.params)):
        for k, p in params.items():
            p[...] = take(arrays, f"{prefix}/{k}", p)
    for prefix, opt in (("adam_actor", agent.actor_opt), ("adam_critic", agent.critic_opt)):
        opt.load_state_dict({k: take(arrays, f"{prefix}/{k}", v) for k, v in opt.state_dict().items()})
    agent.ent_coef.load_state_dict({k: take(arrays, k, v) for k, v in agent.ent_coef.state_dict().items()})
    agent.beta.beta = float(take(arrays, "beta", np.array(1.0)))


def checkpoint_state(agent) -> dict[str, np.ndarray]:
    """Everything a resumed run needs, as plain arrays (see ``checkpoint``)."""
    source = agent.env_source
    arrays = {"env_id": np.array(agent.env_id), "env/recipe": np.array(source.recipe_json()),
              "env/observation_space": np.array(repr(source.observation_space)),
              "env/action_space": np.array(repr(source.action_space)),
              "config": np.array(agent.config.to_json()),
              "counters/global_step": np.array(agent.global_step), "counters/update": np.array(agent.update_count),
              "counters/total_steps": np.array(agent.total_steps),
              "counters/schedule_horizon": np.array(agent.schedule_horizon),
              "config_changes": np.array(json.dumps(agent.config_changes)),
              "recent_returns": np.array(agent.recent_returns, dtype=np.float64),
              "rng/action": np.array(json.dumps(agent.action_rng.bit_generator.state)),
              "rng/predict": np.array(json.dumps(agent.predict_rng.bit_generator.state))}
    arrays.update(learner_state(agent))
    arrays.update(agent.obs_norm.rms.state_dict("obs_rms"))
    arrays.update(agent.reward_scaler.rms.state_dict("ret_rms"))
    arrays["ret_rms/returns"] = agent.reward_scaler.returns.copy()
    return arrays


def load_checkpoint_state(agent, arrays: dict[str, np.ndarray]) -> None:
    """Write a ``checkpoint_state`` into ``agent``, an agent built from that checkpoint's env id and config.

    Raises ``checkpoint.CheckpointError`` (or a ValueError) naming the entry that does not fit.
    """
    take = checkpoint.take
    for name in ("observation_space", "action_space"):
        if f"env/{name}" not in arrays:  # a checkpoint of an older version: the weights' shapes check
            continue
        built, saved = repr(getattr(agent.env_source, name)), str(take(arrays, f"env/{name}", np.array("")))
        if saved != built:
            raise checkpoint.CheckpointError(f"the environment's {name.replace('_', ' ')} is {built}, but the run "
                                             f"was trained with {saved}")
    load_learner_state(agent, arrays)
    agent.obs_norm.rms.load_state_dict(
        {k: take(arrays, k, v) for k, v in agent.obs_norm.rms.state_dict("obs_rms").items()}, "obs_rms")
    agent.reward_scaler.rms.load_state_dict(
        {k: take(arrays, k, v) for k, v in agent.reward_scaler.rms.state_dict("ret_rms").items()}, "ret_rms")
    agent.reward_scaler.returns = take(arrays, "ret_rms/returns", agent.reward_scaler.returns).copy()
    counters = {name: int(take(arrays, f"counters/{name}", np.array(0)))
                for name in ("global_step", "update", "total_steps")}
    if min(counters.values()) < 0:
        raise checkpoint.CheckpointError(f"negative counters {counters}")
    agent.global_step, agent.update_count, agent.total_steps = counters.values()
    # a checkpoint of an older version ran its schedules over its total steps
    agent.schedule_horizon = (int(take(arrays, "counters/schedule_horizon", np.array(0)))
                              if "counters/schedule_horizon" in arrays else agent.total_steps)
    if agent.schedule_horizon < 0:
        raise checkpoint.CheckpointError(f"negative schedule horizon {agent.schedule_horizon}")
    if "config_changes" in arrays:  # absent from checkpoints of older versions: none then
        try:
            agent.config_changes = list(json.loads(str(take(arrays, "config_changes", np.array("")))))
        except (ValueError, TypeError) as exc:
            raise checkpoint.CheckpointError(f"config_changes is not a JSON list ({exc})") from None
    agent.recent_returns = [float(r) for r in take(arrays, "recent_returns", ndim=1, kinds="f")]
    for name, generator in (("action", agent.action_rng), ("predict", agent.predict_rng)):
        if name == "predict" and "rng/predict" not in arrays:  # a checkpoint of an older version: a fresh one
            continue
        try:
            generator.bit_generator.state = json.loads(str(take(arrays, f"rng/{name}", np.array(""))))
        except (ValueError, TypeError, KeyError) as exc:
            raise checkpoint.CheckpointError(f"bad RNG state rng/{name} ({exc})") from None
