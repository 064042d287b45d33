"""Where a run's environments come from, checked once, and what of it a checkpoint can rebuild.

``EnvSource.of(env, env_kwargs, wrappers)`` takes any of

    "CartPole-v1"                 a registered gymnasium id
    "mypackage.envs:Line-v0"      gymnasium's ``module:EnvId`` form: ``module`` is imported first (it
                                  registers the id), as ``gymnasium.make`` does
    an id with ``env_kwargs``     keyword arguments of the environment's constructor
    a zero-argument factory       called once per environment, e.g. ``lambda: LineEnv(length=5)``
    a ``gymnasium.Env``           that environment; further copies (``num_envs`` > 1, and those
                                  evaluation uses) are ``copy.deepcopy`` of it, each reset before use
    a ``gymnasium.vector.VectorEnv``  stepped as it is; its ``num_envs`` must be the config's

and ``wrappers``, callables ``env -> env`` applied in order to every environment (not to a given vector
env). It builds one environment to read the spaces, refuses what ppo-np cannot train (naming the
value and what is accepted), and makes the vector envs of training and evaluation. Observations that
are not a 1-D Box are flattened per environment (``observations.py``); the agent sees the flat Box.

What can be rebuilt from names alone, an id with its keyword arguments and wrappers importable as
``module:name``, is the ``recipe``, saved in checkpoints and ``config.json``. An instance, a factory,
a vector env or a lambda wrapper cannot be: ``PPO.load(path, env=...)`` takes it again.
"""
from __future__ import annotations

import copy
import functools
import importlib
import json
from typing import Any, Callable, Optional, Sequence

import gymnasium as gym
import numpy as np

from ppo_np.heads import head_for
from ppo_np.observations import check_observation_space, is_flat

VECTORIZE_MODES = ("native", "sync", "async")
# A native vector env pays a fixed cost per step that a sync one pays per env; on CartPole-v1 the two
# cross near 8 envs, and "auto" takes the native one from this many envs on.
NATIVE_MIN_ENVS = 8
ACCEPTED = ("a registered gymnasium id (or 'module:EnvId'), a zero-argument factory returning a gymnasium.Env, "
            "a gymnasium.Env, or a gymnasium.vector.VectorEnv")


class EnvSource:
    """A validated source of environments: its spaces, how to make them, and its recipe (or None).

    Attributes:
        name: how messages and ``PPO.env_id`` name it (the id, or a description of the object).
        recipe: ``{"id", "kwargs", "wrappers"}`` when names alone rebuild it, else None.
        observation_space: the environments' own observation space (before flattening).
        action_space: the action space of one environment.
        max_episode_steps: the time limit of one episode, None when the environment has none.
        num_envs: the size of a given vector env, else None (the config's ``num_envs`` decides).
    """

    def __init__(self, name: str, make_one: Optional[Callable[[], gym.Env]], recipe: Optional[dict],
                 vector_env: Optional[gym.vector.VectorEnv] = None, instance: Optional[gym.Env] = None,
                 make_rendering: Optional[Callable[[], gym.Env]] = None):
        self.name, self.recipe = name, recipe
        self._make_one, self._vector_env, self._instance = make_one, vector_env, instance
        self._make_rendering = make_rendering or make_one  # an id is made again with render_mode="rgb_array"
        self.num_envs = vector_env.num_envs if vector_env is not None else None  # fixed by a given vector env
        if vector_env is not None:
            self.observation_space = vector_env.single_observation_space
            self.action_space = vector_env.single_action_space
            self.max_episode_steps = _time_limit((getattr(vector_env, "envs", None) or [vector_env])[0])
        else:
            probe = instance if instance is not None else self._build(make_one)
            self.observation_space, self.action_space = probe.observation_space, probe.action_space
            self.max_episode_steps = _time_limit(probe)
            if probe is not instance:
                probe.close()
        check_observation_space(self.observation_space, f"{name}: observation space")
        try:
            head_for(self.action_space)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    @classmethod
    def of(cls, env: Any, env_kwargs: Optional[dict] = None, wrappers: Sequence[Callable] = ()) -> "EnvSource":
        """The source of ``env`` (see the module's docstring); a ValueError names what is wrong."""
        if isinstance(env, EnvSource):
            if env_kwargs is not None or wrappers:
                raise ValueError(f"the {env.name} is built already; env_kwargs and wrappers cannot change it")
            return env
        wrappers = _check_wrappers(wrappers)
        if env_kwargs is not None and not isinstance(env, str):
            raise ValueError(f"env_kwargs apply to an environment id, not to {_describe(env)}; "
                             "give the arguments to the environment you build")
        kwargs = _check_kwargs(env_kwargs)
        if isinstance(env, str):
            _find_spec(env)
            names = [_importable_name(w) for w in wrappers]
            recipe = {"id": env, "kwargs": kwargs, "wrappers": names} if None not in names else None
            rendering = functools.partial(gym.make, env, **{**kwargs, "render_mode": "rgb_array"})
            return cls(env, functools.partial(_wrap, functools.partial(gym.make, env, **kwargs), wrappers), recipe,
                       make_rendering=functools.partial(_wrap, rendering, wrappers))
        if isinstance(env, gym.vector.VectorEnv):
            if wrappers:
                raise ValueError("wrappers apply to each environment; wrap the environments of the vector env "
                                 "before building it")
            return cls(f"vector env {type(env).__name__}", _vector_env_factory(env), None, vector_env=env)
        if isinstance(env, gym.Env):
            return cls(f"environment instance {_env_name(env)}", functools.partial(_wrap, _copier(env), wrappers),
                       None, instance=_wrap(lambda: env, wrappers))
        if callable(env):
            return cls(f"factory {_callable_name(env)}",
                       functools.partial(_wrap, functools.partial(_call_factory, env), wrappers), None)
        raise ValueError(f"env must be {ACCEPTED}; got {_describe(env)}")

    @classmethod
    def from_recipe(cls, recipe: dict) -> "EnvSource":
        """The source a saved recipe describes (wrappers imported by name)."""
        if not (isinstance(recipe, dict) and isinstance(recipe.get("id"), str)):
            raise ValueError(f"environment recipe {recipe!r} is not of the form {{'id': str, 'kwargs': dict, "
                             "'wrappers': [str]}}")
        wrappers = [import_name(name) for name in recipe.get("wrappers", [])]
        return cls.of(recipe["id"], recipe.get("kwargs") or None, wrappers)

    def recipe_json(self) -> str:
        """The recipe as JSON, "" when there is none."""
        return json.dumps(self.recipe, sort_keys=True) if self.recipe is not None else ""

    @property
    def rebuildable(self) -> bool:
        return self.recipe is not None

    def make_vector(self, num_envs: int, vectorization: str = "auto", *, fresh: bool = False,
                    backend: str = "gymnasium") -> gym.vector.VectorEnv:
        """``num_envs`` environments stepped together, their observations flat 1-D Boxes.

        "sync" steps them in a ``LeanSyncVectorEnv``; "async" in subprocesses; "native" uses the
        id's own vectorised implementation; "auto" takes the native one where the id has it, with no
        kwargs or wrappers, and ``num_envs`` >= 8. The first environment is a given instance itself
        unless ``fresh`` (evaluation asks for copies, so as not to disturb training's episodes).
        ``backend="numba"``: the compiled port of the id (``classic_control.NumbaVectorEnv``) instead.
        """
        if backend == "numba":
            self.check_backend(backend)
            from ppo_np.classic_control import NumbaVectorEnv

            return NumbaVectorEnv(self.name, num_envs)
        if vectorization not in ("auto", *VECTORIZE_MODES):
            raise ValueError(f"vectorization must be auto, native, sync or async; got {vectorization!r}")
        if self._vector_env is not None and not fresh:
            if self._vector_env.num_envs != num_envs:
                raise ValueError(f"the {self.name} holds {self._vector_env.num_envs} environments, but num_envs is "
                                 f"{num_envs}; set num_envs={self._vector_env.num_envs}")
            return _checked_vector(self._vector_env, self.name)
        if self._make_one is None:
            raise ValueError(f"the {self.name} has no way to build further environments (it is not a gymnasium "
                             "SyncVectorEnv or AsyncVectorEnv); pass an environment for evaluation")
        if vectorization == "auto":
            vectorization = "native" if self.has_native_vector_env and num_envs >= NATIVE_MIN_ENVS else "sync"
        if vectorization == "native":
            if not self.has_native_vector_env:
                raise ValueError(f"{self.name} has no native vectorised implementation (or it has kwargs or "
                                 "wrappers, which the native one does not take); use sync or async")
            envs = gym.make_vec(self.name, num_envs=num_envs, vectorization_mode="vector_entry_point")
        else:
            first = self._instance if self._instance is not None and not fresh else None
            fns = [(lambda: first) if first is not None and i == 0 else self._make_one for i in range(num_envs)]
            fns = [functools.partial(_flatten_observations, fn) for fn in fns]
            envs = LeanSyncVectorEnv(fns) if vectorization == "sync" else gym.vector.AsyncVectorEnv(fns)
        try:
            return _checked_vector(envs, self.name)
        except ValueError:
            envs.close()
            raise

    def check_backend(self, backend: str) -> None:
        """A ValueError unless ``backend`` can run this source: "numba" needs a ported id, as it is."""
        if backend == "numba":
            from ppo_np.classic_control import PORTS

            if self.recipe is None or self.name not in PORTS or self.recipe["kwargs"] or self.recipe["wrappers"]:
                raise ValueError(f"env_backend numba runs the compiled ports of {', '.join(PORTS)}, without kwargs "
                                 f"or wrappers; {self.name} is not one of them: use env_backend gymnasium")

    def make_one(self) -> gym.Env:
        """One new environment with flat observations (a copy, for a given instance), for single-env studies."""
        if self._make_one is None:
            raise ValueError(f"the {self.name} has no way to build further environments (it is not a gymnasium "
                             "SyncVectorEnv or AsyncVectorEnv)")
        return _flatten_observations(self._make_one)

    def make_rendering(self) -> gym.Env:
        """One new environment like ``make_one``'s whose ``render()`` returns an RGB array (for videos): an id
        is made with ``render_mode="rgb_array"``; any other source must build its environments so."""
        if self._make_rendering is None:
            raise ValueError(f"the {self.name} has no way to build further environments to record")
        env = self._build(functools.partial(_flatten_observations, self._make_rendering))
        if env.render_mode != "rgb_array":
            env.close()
            raise ValueError(f"the {self.name} renders in mode {env.render_mode!r}; a video needs frames: build the "
                             "environment with render_mode='rgb_array'")
        return env

    @property
    def has_native_vector_env(self) -> bool:
        """Whether the id has gymnasium's own vectorised implementation, and nothing it would not apply."""
        return (self.recipe is not None and not self.recipe["kwargs"] and not self.recipe["wrappers"]
                and _find_spec(self.name).vector_entry_point is not None)

    def _build(self, make_one: Callable[[], gym.Env]) -> gym.Env:
        try:
            env = make_one()
        except ValueError:
            raise
        except Exception as exc:  # a missing dependency, a bad keyword argument, a broken registration
            raise ValueError(f"cannot build environment {self.name}: {type(exc).__name__}: {exc}") from None
        return env


class LeanSyncVectorEnv(gym.vector.SyncVectorEnv):
    """gymnasium's ``SyncVectorEnv`` (next-step autoreset, copied outputs) with a leaner ``step``.

    The same environments are stepped in the same order with the same actions; the step returns
    the same arrays. For a Box observation space it skips the per-step machinery that such a space
    and info-less environments do not need: ``iterate`` over the batched action space, ``_add_info``
    for empty infos, ``concatenate`` of a list of observations, ``deepcopy`` of the batch, which
    together cost about as much as small environments' own steps.
    ``reset`` (a ``reset_mask`` included) is gymnasium's. Always copies, always next-step autoreset.
    Checked step for step against ``SyncVectorEnv`` by
    ``tests/test_rollout.py::test_lean_sync_vector_env_steps_like_gymnasiums``.
    """

    def __init__(self, env_fns):
        super().__init__(env_fns)
        self._box_observations = isinstance(self.single_observation_space, gym.spaces.Box)

    def step(self, actions):
        if not self._box_observations:        # dicts, tuples, ...: gymnasium's general path
            return super().step(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"{len(actions)} actions for {self.num_envs} environments")
        obs, env_obs, rewards = self._observations, self._env_obs, self._rewards
        terminations, truncations, autoreset = self._terminations, self._truncations, self._autoreset_envs
        shape = obs.shape[1:]
        infos = {}
        for i, env in enumerate(self.envs):
            if autoreset[i]:
                observation, info = env.reset()
                rewards[i], terminations[i], truncations[i] = 0.0, False, False
            else:
                observation, rewards[i], terminations[i], truncations[i], info = env.step(actions[i])
            if getattr(observation, "shape", shape) != shape:   # where gymnasium's np.stack would raise
                raise ValueError(f"environment {i} returned an observation of shape {observation.shape}, "
                                 f"expected {shape}")
            obs[i] = env_obs[i] = observation            # env_obs: what a masked reset rebuilds the batch from
            if info:
                infos = self._add_info(infos, info, i)
        np.logical_or(terminations, truncations, out=autoreset)
        return obs.copy(), rewards.copy(), terminations.copy(), truncations.copy(), infos


def _find_spec(env_id: str):
    """gymnasium's spec of ``env_id``, importing the module of a ``module:EnvId`` first; ValueError if none."""
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ValueError(f"cannot import module {module!r} named in the environment id {env_id!r} (it should "
                             f"register {name!r}): {type(exc).__name__}: {exc}") from None
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        raise ValueError(f"unknown environment id {env_id!r}: {exc}") from None


def _check_kwargs(kwargs) -> dict:
    if kwargs is None:
        return {}
    if not (isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs)):
        raise ValueError(f"env_kwargs must be a dict of keyword arguments with string keys; got {kwargs!r}")
    return dict(kwargs)


def _check_wrappers(wrappers) -> list:
    if wrappers is None:
        return []
    if callable(wrappers) or not all(callable(w) for w in wrappers):
        raise ValueError(f"wrappers must be a list of callables env -> env (such as wrapper classes); got {wrappers!r}")
    return list(wrappers)


def _wrap(make: Callable[[], gym.Env], wrappers: Sequence[Callable]) -> gym.Env:
    env = make()
    for wrapper in wrappers:
        env = wrapper(env)
        if not isinstance(env, gym.Env):
            raise ValueError(f"wrapper {_callable_name(wrapper)} returned {_describe(env)}, not a gymnasium.Env")
    return env


def _call_factory(factory: Callable[[], Any]) -> gym.Env:
    env = factory()
    if not isinstance(env, gym.Env):
        raise ValueError(f"the environment factory {_callable_name(factory)} returned {_describe(env)}; it must return "
                         "a gymnasium.Env")
    return env


def _copier(env: gym.Env) -> Callable[[], gym.Env]:
    def copy_of_instance() -> gym.Env:
        try:
            return copy.deepcopy(env)
        except Exception as exc:
            raise ValueError(f"cannot copy the environment instance {_env_name(env)} ({type(exc).__name__}: {exc}); "
                             "pass a factory (a zero-argument callable returning a new environment) instead, "
                             "or set num_envs=1") from None
    return copy_of_instance


def _vector_env_factory(envs: gym.vector.VectorEnv) -> Optional[Callable[[], gym.Env]]:
    """One more environment like those of ``envs``: gymnasium's Sync and Async vector envs keep their factories."""
    fns = getattr(envs, "env_fns", None)
    return fns[0] if fns else None


def _flatten_observations(make: Callable[[], gym.Env]) -> gym.Env:
    env = make()
    return env if is_flat(env.observation_space) else gym.wrappers.FlattenObservation(env)


def _checked_vector(envs: gym.vector.VectorEnv, name: str) -> gym.vector.VectorEnv:
    """``envs`` with flat observations; a ValueError unless it resets its environments on the next step."""
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode != gym.vector.AutoresetMode.NEXT_STEP:  # the rollout's masking and bootstrapping assume it
        raise ValueError(f"{name}: autoreset mode {mode} is not supported; ppo-np needs next-step autoreset")
    return envs if is_flat(envs.single_observation_space) else gym.wrappers.vector.FlattenObservation(envs)


def _time_limit(env) -> Optional[int]:
    """The episode step limit of an environment (or of a vector env's environments), None without one."""
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None)
    while limit is None and env is not None:
        limit = getattr(env, "_max_episode_steps", None)  # a TimeLimit wrapper anywhere in the chain
        env = getattr(env, "env", None)
    return int(limit) if limit is not None else None


def _importable_name(obj) -> Optional[str]:
    """``module:qualname`` when importing that name gives ``obj`` back (a class or a top-level function), else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    name = f"{module}:{qualname}"
    try:
        return name if import_name(name) is obj else None
    except ValueError:
        return None


def import_name(name: str):
    module, sep, qualname = str(name).partition(":")
    try:
        if not sep:
            raise ImportError("expected the form module:name")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ValueError(f"cannot import {name!r}: {type(exc).__name__}: {exc}") from None
    return obj


def _env_name(env: gym.Env) -> str:
    spec = getattr(env, "spec", None)
    return f"{type(env.unwrapped).__name__}" + (f" ({spec.id})" if spec is not None else "")


def _callable_name(obj) -> str:
    """A function's or class's qualified name; a partial's is that of its function."""
    if isinstance(obj, functools.partial):
        return f"partial({_callable_name(obj.func)})"
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _describe(obj) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
