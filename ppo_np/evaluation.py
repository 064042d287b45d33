"""Evaluating an agent: the undiscounted return of whole episodes, with the policy's mode or its samples."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ppo_np.rollout import make_vector_env


def evaluate(agent, env_id: Optional[str] = None, episodes: int = 20, seed: int = 0,
             deterministic: bool = True) -> dict:
    """Mean and std of the undiscounted return over ``episodes`` full episodes (frozen normaliser) of a ``ppo.PPO``.

    Episodes run in parallel, one per sub-environment of a sync vector env, each seeded seed + i.
    """
    if not (isinstance(episodes, (int, np.integer)) and episodes >= 1):
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    envs = make_vector_env(env_id or agent.env_id, episodes, "sync")
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        running = np.ones(episodes, bool)
        while running.any():
            actions = agent.head.env_actions(agent.predict(obs, deterministic=deterministic))
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            returns += rewards * running
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()), "episodes": int(episodes)}
