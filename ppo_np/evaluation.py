"""Evaluating an agent: the undiscounted return of whole episodes, with the policy's mode or its samples."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ppo_np.envs import EnvSource

#: the step cap of an evaluation episode when the environment has no time limit of its own
DEFAULT_MAX_EPISODE_STEPS = 10_000
#: environments stepped together by one evaluation (fewer when fewer episodes are asked for)
EVAL_ENVS = 8


def evaluate(agent, episodes: int = 20, seed: int = 0, deterministic: bool = True, *, env=None,
             max_episode_steps: Optional[int] = None) -> dict:
    """The return over ``episodes`` full episodes of a ``ppo.PPO`` (observation statistics frozen).

    One sync vector env of min(episodes, 8) copies of the agent's environment (or of ``env``, anything
    ``PPO`` takes, with the same spaces) runs them: copy i is reset with seed + i and runs episodes
    i, i + 8, ... in turn (a fixed share per copy, so short episodes are not favoured). Stochastic
    actions are drawn from a generator seeded by ``seed``, never the agent's own: the result depends on
    the agent and the arguments alone. An episode still running after ``max_episode_steps`` steps
    (default: the environment's time limit, else ``DEFAULT_MAX_EPISODE_STEPS``) is cut there and
    counted with the return it has, and reported in ``capped_episodes``.

    Returns ``{"mean_return", "std_return", "episodes", "mean_length", "capped_episodes",
    "max_episode_steps"}``.
    """
    if not (isinstance(episodes, (int, np.integer)) and episodes >= 1):
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    source = agent.env_source if env is None else EnvSource.of(env)
    if env is not None:
        for name in ("observation_space", "action_space"):
            if getattr(source, name) != getattr(agent.env_source, name):
                raise ValueError(f"evaluation env {source.name} has {name.replace('_', ' ')} "
                                 f"{getattr(source, name)}; the agent's is {getattr(agent.env_source, name)}")
    cap = max_episode_steps if max_episode_steps is not None else source.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS
    if not (isinstance(cap, (int, np.integer)) and cap >= 1):
        raise ValueError(f"max_episode_steps must be an integer >= 1, got {cap!r}")
    n = min(int(episodes), EVAL_ENVS)
    targets = np.array([(episodes + i) // n for i in range(n)])  # episodes per copy, summing to `episodes`
    rng = np.random.default_rng(seed)
    envs = source.make_vector(n, "sync", fresh=True)
    try:
        results = _run_episodes(agent, envs, seed, targets, cap, deterministic, rng)
    finally:
        envs.close()
    returns = np.array([r for r, _, _ in results])
    return {"mean_return": float(returns.mean()), "std_return": float(returns.std()), "episodes": int(episodes),
            "mean_length": float(np.mean([length for _, length, _ in results])),
            "capped_episodes": int(sum(capped for _, _, capped in results)), "max_episode_steps": int(cap)}


def _run_episodes(agent, envs, seed: int, targets: np.ndarray, cap: int, deterministic: bool,
                  rng: np.random.Generator) -> list[tuple[float, int, bool]]:
    """(return, length, capped) of each episode, ``targets[i]`` of them from copy i.

    With next-step autoreset, the step after an episode's end returns the reset observation (reward
    0, the action ignored): it belongs to no episode. A capped episode's copy is reset at once instead.
    """
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    episode_return, episode_length = np.zeros(n), np.zeros(n, np.int64)
    resetting, counts = np.zeros(n, bool), np.zeros(n, np.int64)
    results = []
    while (counts < targets).any():
        actions = agent.head.env_actions(agent.act(np.asarray(obs, np.float64), deterministic, rng))
        obs, rewards, terminated, truncated, _ = envs.step(actions)
        stepped = ~resetting
        episode_return += rewards * stepped
        episode_length += stepped
        ended = (terminated | truncated) & stepped
        capped = ~ended & (episode_length >= cap)
        for i in np.flatnonzero(ended | capped):
            if counts[i] < targets[i]:
                results.append((float(episode_return[i]), int(episode_length[i]), bool(capped[i])))
                counts[i] += 1
        episode_return[ended | capped] = 0.0
        episode_length[ended | capped] = 0
        resetting = ended
        if capped.any() and (counts < targets).any():
            obs, _ = envs.reset(options={"reset_mask": capped})
    return results
