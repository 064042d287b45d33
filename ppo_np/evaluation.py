"""Evaluating an agent: the undiscounted return of whole episodes, with the policy's mode or its samples."""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np

from ppo_np.envs import EnvSource, LeanSyncVectorEnv

#: the step cap of an evaluation episode when the environment has no time limit of its own
DEFAULT_MAX_EPISODE_STEPS = 10_000
#: environments stepped together by one evaluation (fewer when fewer episodes are asked for)
EVAL_ENVS = 8
#: a run's evaluation episodes are seeded ``config.seed + EVAL_SEED_OFFSET`` (``eval_seed``)
EVAL_SEED_OFFSET = 10_000


def eval_seed(agent) -> int:
    """The seed of a run's evaluation episodes, the same for ``train``'s final evaluation, ``eval`` and a
    sweep's trials, apart from the seeds of its training episodes."""
    return agent.config.seed + EVAL_SEED_OFFSET


def evaluate(agent, episodes: int = 20, seed: int = 0, deterministic: bool = True, *, env=None,
             max_episode_steps: Optional[int] = None, video_dir: str | os.PathLike | None = None) -> dict:
    """The return over ``episodes`` full episodes of a ``ppo.PPO`` (observation statistics frozen).

    One sync vector env of min(episodes, 8) copies of the agent's environment (or of ``env``, anything
    ``PPO`` takes, with the same spaces) runs them: copy i is reset with seed + i and runs its fixed share
    of them, (episodes + i) // n, one after another (so short episodes are not favoured). Stochastic
    actions are drawn from a generator seeded by ``seed``, never the agent's own: the result depends on
    the agent and the arguments alone. An episode still running after ``max_episode_steps`` steps
    (default: the environment's time limit, else ``DEFAULT_MAX_EPISODE_STEPS``) is cut there and
    counted with the return it has, and reported in ``capped_episodes``.

    With ``video_dir``, every episode is also recorded by gymnasium's ``RecordVideo`` (it needs the video
    extra: moviepy, and pygame for the classic-control and Box2D renderers) to
    ``video_dir/episode-J.mp4``, J = 0, 1, ... numbering each copy's first episode, then their second
    ones, and so on; one frame per step and one of the reset; ``video_dir``'s earlier episode-*.mp4 are removed. The environments are made with
    ``render_mode="rgb_array"`` (``EnvSource.make_rendering``); the episodes are those of an evaluation
    without videos.

    Returns ``{"mean_return", "std_return", "episodes", "mean_length", "capped_episodes",
    "max_episode_steps"}``, and with ``video_dir`` ``"videos"``: ``{"path", "return", "length"}`` of
    each episode, in episode order.
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
    if video_dir is None:
        envs = source.make_vector(n, "sync", fresh=True)
        try:
            results = _run_episodes(agent, envs, seed, targets, cap, deterministic, rng)
        finally:
            envs.close()
    else:
        results = _recorded_episodes(agent, source, Path(video_dir), seed, targets, cap, deterministic, rng)
    returns = np.array([r for _, _, r, _, _ in results])
    summary = {"mean_return": float(returns.mean()), "std_return": float(returns.std()), "episodes": int(episodes),
               "mean_length": float(np.mean([length for _, _, _, length, _ in results])),
               "capped_episodes": int(sum(capped for *_, capped in results)), "max_episode_steps": int(cap)}
    if video_dir is not None:
        summary["videos"] = [{"path": str(_video_path(Path(video_dir), j, episodes)), "return": r, "length": length}
                             for j, (_, _, r, length, _) in enumerate(_in_episode_order(results))]
    return summary


def _in_episode_order(results: list[tuple]) -> list[tuple]:
    """Episodes numbered as the docstring of ``evaluate`` says: each copy's first episode, then their seconds, ..."""
    return sorted(results, key=lambda episode: (episode[1], episode[0]))


def _recorded_episodes(agent, source: EnvSource, video_dir: Path, seed: int, targets: np.ndarray, cap: int,
                       deterministic: bool, rng: np.random.Generator) -> list[tuple[int, int, float, int, bool]]:
    """``_run_episodes`` on copies wrapped in ``RecordVideo``, each copy recording its own episodes into a
    scratch folder, then moved to ``video_dir/episode-J.mp4``."""
    check_video_output(video_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".recording-", dir=video_dir))
    n = len(targets)
    driver = os.environ.get("SDL_VIDEODRIVER")
    if driver is None and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # pygame's renderers quit its display on close; with no screen SDL's default driver prints errors
        os.environ["SDL_VIDEODRIVER"] = "dummy"

    def recorder(i: int) -> gym.Env:
        return gym.wrappers.RecordVideo(source.make_rendering(), str(scratch), name_prefix=f"copy{i}",
                                        episode_trigger=lambda k: k < targets[i], disable_logger=True)

    copies = []
    try:
        with warnings.catch_warnings():  # every copy after the first finds the scratch folder there
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            for i in range(n):
                copies.append(recorder(i))
        envs = LeanSyncVectorEnv([functools.partial(lambda env: env, env) for env in copies])
        copies = []  # the vector env closes them now
        try:
            results = _run_episodes(agent, envs, seed, targets, cap, deterministic, rng)
        finally:
            envs.close()  # writes each copy's last video
        for old in video_dir.glob("episode-*.mp4"):
            old.unlink()
        for j, (i, k, *_) in enumerate(_in_episode_order(results)):
            os.replace(scratch / f"copy{i}-episode-{k}.mp4", _video_path(video_dir, j, int(targets.sum())))
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(f"cannot render {source.name}: {exc}; the video extra installs the classic-control and "
                         "Box2D renderers: pip install 'ppo-np[video]'") from None
    finally:
        for env in copies:  # built before a later copy failed
            env.close()
        if driver is None:
            os.environ.pop("SDL_VIDEODRIVER", None)
        shutil.rmtree(scratch, ignore_errors=True)
    return results


def check_video_output(video_dir: str | os.PathLike) -> None:
    """A ValueError unless videos can be written into ``video_dir`` (made if missing): moviepy, and the folder."""
    try:
        import moviepy  # noqa: F401  (RecordVideo writes with it)
    except ImportError as exc:
        raise ValueError(f"videos are written by moviepy, which does not import ({exc}); install the video extra: "
                         "pip install 'ppo-np[video]'") from None
    try:
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot write videos into {video_dir}: {exc.strerror or exc}") from None
    if not os.access(video_dir, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write videos into {video_dir}: it is not writable")


def _video_path(video_dir: Path, episode: int, episodes: int) -> Path:
    return video_dir / f"episode-{episode:0{len(str(episodes - 1))}d}.mp4"


def _run_episodes(agent, envs, seed: int, targets: np.ndarray, cap: int, deterministic: bool,
                  rng: np.random.Generator) -> list[tuple[int, int, float, int, bool]]:
    """(copy i, its episode k, return, length, capped) of each episode, ``targets[i]`` of them from copy i.

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
                results.append((int(i), int(counts[i]), float(episode_return[i]), int(episode_length[i]),
                                bool(capped[i])))
                counts[i] += 1
        episode_return[ended | capped] = 0.0
        episode_length[ended | capped] = 0
        resetting = ended
        if capped.any() and (counts < targets).any():
            obs, _ = envs.reset(options={"reset_mask": capped})
    return results
