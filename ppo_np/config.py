"""Every hyperparameter of a run, in one typed, validated dataclass.

``PPOConfig`` is the single source of configuration: the agent reads it, checkpoints store it as JSON,
and the command line is generated from it (each field's ``doc`` is its ``--help`` text and
``--set key=value`` accepts exactly its field names). Construction validates every field and raises a
``ValueError`` naming the field, the value and what is allowed.

``PRESETS`` hold the tuned values of the standard suite, each with its source in ``PRESET_SOURCES``
(RL Baselines3 Zoo, CleanRL); ``preset_for(env_id, continuous)`` falls back to the generic discrete or
continuous defaults, chosen by the study in ``benchmarks/bench_defaults.py`` against
Stable-Baselines3's defaults, and ``PPOConfig.for_env(env, **overrides)`` gives what ``ppo-np train ENV``
starts from, for any env.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

_CHOICES = "choices"
#: the fields a run may change on resume (``PPO.change_config``): read afresh at every update (or learn)
RESUMABLE_FIELDS = ("learning_rate", "ent_coef", "max_grad_norm", "target_kl", "checkpoint_every", "tensorboard")


def _param(default, doc: str, **choices):
    """A dataclass field with its documentation (and allowed values) kept in the metadata."""
    return field(default=default, metadata={"doc": doc, **choices})  # defaults are immutable (tuples, scalars)


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of PPO (clip or penalty), of TRPO, and of the run around it."""

    # --- the run ---
    seed: int = _param(0, "seed of every random draw (weights, actions, shuffles, environments)")
    num_envs: int = _param(8, "parallel environments N in the vector env")
    num_steps: int = _param(256, "steps T per environment per rollout; the batch is T * N samples")
    vectorization: str = _param("auto", "how environments run in parallel: auto (the env's native vectorised "
                                "implementation if it has one and num_envs >= 8, else sync), native, sync or async",
                                choices=("auto", "native", "sync", "async"))
    env_backend: str = _param("gymnasium", "gymnasium, or numba: the compiled ports of classic control "
                              "(classic_control.PORTS: Acrobot, CartPole, MountainCar, MountainCarContinuous, Pendulum), gymnasium's "
                              "dynamics bit for bit, all environments stepped by one call (vectorization unused)",
                              choices=("gymnasium", "numba"))
    dtype: str = _param("float32", "floating type of networks and rollout buffers", choices=("float32", "float64"))
    checkpoint_every: int = _param(20, "write a checkpoint every this many updates (and always at the end)")
    log_gradients: bool = _param(False, "write gradients.csv beside metrics.csv: per update, each parameter's "
                                 "gradient norm before the clip, the clip scales and the surrogate's outside "
                                 "share (PPO-clip and PPO-penalty; it changes no trained weight)")
    tensorboard: bool = _param(False, "also write every metrics.csv (and gradients.csv) value to TensorBoard event "
                               "files in RUN_DIR/tensorboard (needs the tensorboard extra: "
                               "pip install 'ppo-np[tensorboard]')")

    # --- networks ---
    hidden_sizes: tuple = _param((64, 64), "hidden layer sizes of both the actor and the critic MLP")
    activation: str = _param("tanh", "hidden activation of both MLPs", choices=("tanh", "relu"))
    log_std_init: float = _param(0.0, "initial log standard deviation of a Gaussian policy (Box actions)")

    # --- advantages and targets ---
    gamma: float = _param(0.99, "discount factor gamma, in (0, 1]")
    gae_lambda: float = _param(0.95, "GAE lambda, in [0, 1]")
    value_target: str = _param("gae", "value target: gae (A + V, i.e. TD(lambda)) or rewards_to_go",
                               choices=("gae", "rewards_to_go"))
    norm_adv: bool = _param(True, "normalise advantages per minibatch to mean 0, std 1")

    # --- the update ---
    algo: str = _param("clip", "policy update: clip (PPO-clip), penalty (PPO-penalty, adaptive KL) or trpo "
                       "(TRPO: one KL-constrained natural-gradient step per rollout, see the trpo_* and cg_* "
                       "fields; the critic keeps its Adam epochs; no entropy bonus, clip range or target_kl)",
                       choices=("clip", "penalty", "trpo"))
    update_epochs: int = _param(10, "epochs K over each rollout (the outer loop)")
    minibatch_size: int = _param(64, "samples per minibatch (the inner loop); the last may be smaller")
    learning_rate: float = _param(3e-4, "Adam learning rate of actor and critic (the critic alone for trpo)")
    lr_schedule: str = _param("constant", "learning rate over training: constant or linear (to 0)",
                              choices=("constant", "linear"))
    adam_eps: float = _param(1e-5, "Adam epsilon")
    max_grad_norm: float = _param(0.5, "clip the global gradient norm to this value")
    clip_grad: str = _param("joint", "clip actor and critic gradients jointly or separately",
                            choices=("joint", "separate"))
    target_kl: Optional[float] = _param(None, "stop the epoch loop when a minibatch's approx KL (k3) exceeds this; "
                                        "none to never stop early")

    # --- PPO-clip ---
    clip_coef: float = _param(0.2, "clip range epsilon of the ratio, > 0")
    clip_schedule: str = _param("constant", "clip range over training: constant or linear (to 0)",
                                choices=("constant", "linear"))
    vf_clip: Optional[float] = _param(None, "clip the value change to +-this around the old value; none for plain MSE")
    vf_coef: float = _param(0.5, "weight c_v of the value loss")

    # --- PPO-penalty: adaptive beta ---
    kl_target: float = _param(0.01, "KL target of the adaptive penalty")
    kl_max: Optional[float] = _param(None, "beta grows when the mean KL exceeds this (none: 1.5 * kl_target)")
    kl_min: Optional[float] = _param(None, "beta shrinks when the mean KL falls below this (none: kl_target / 1.5)")
    beta_init: float = _param(1.0, "initial KL penalty coefficient beta")
    beta_factor: float = _param(2.0, "beta is multiplied or divided by this factor, > 1")

    # --- TRPO ---
    trpo_max_kl: float = _param(0.01, "TRPO: the trust region delta; a step is accepted only if the exact mean "
                                "KL(pi_old || pi) <= delta")
    trpo_max_kl_final: Optional[float] = _param(None, "TRPO: anneal delta linearly to this value over training; "
                                                "none keeps it constant")
    cg_iters: int = _param(10, "TRPO: conjugate-gradient iterations (Fisher-vector products) per step")
    cg_tol: float = _param(1e-10, "TRPO: stop conjugate gradient once the squared residual norm is <= this")
    cg_damping: float = _param(0.1, "TRPO: damping c of the Fisher matrix, CG solves (F + c I) x = g; >= 0")
    line_search_steps: int = _param(10, "TRPO: step sizes tried by the backtracking line search before the "
                                    "old parameters are kept")
    line_search_decay: float = _param(0.5, "TRPO: each backtrack multiplies the step by this factor, in (0, 1)")

    # --- entropy ---
    ent_coef: float = _param(0.0, "entropy coefficient c_e (initial value when scheduled or tuned)")
    ent_schedule: str = _param("constant", "entropy coefficient over training: constant, linear or exponential "
                               "(to ent_coef_final), or auto (tuned toward target_entropy)",
                               choices=("constant", "linear", "exponential", "auto"))
    ent_coef_final: float = _param(0.0, "final entropy coefficient of the linear and exponential schedules")
    target_entropy: Optional[float] = _param(None, "entropy target of the auto schedule (none: half the "
                                             "uniform policy's entropy when discrete, -action_dim when continuous)")
    ent_coef_lr: float = _param(1e-3, "Adam learning rate of the auto-tuned log entropy coefficient")

    # --- temperature ---
    temperature: float = _param(1.0, "temperature tau of the action distribution (softmax(z/tau); Gaussian std * tau)")
    temperature_final: Optional[float] = _param(None, "anneal tau linearly to this value; none keeps it constant")

    # --- continuous control ---
    normalize_obs: bool = _param(False, "normalise observations by running mean and std (statistics are saved)")
    normalize_reward: bool = _param(False, "scale rewards by the running std of the discounted return")
    obs_clip: float = _param(10.0, "clip normalised observations to +-this")
    reward_clip: float = _param(10.0, "clip scaled rewards to +-this")

    def __post_init__(self):
        errors = []
        for f in dataclasses.fields(self):
            allowed = f.metadata.get(_CHOICES)
            value = getattr(self, f.name)
            if allowed is not None and value not in allowed:
                errors.append(f"{f.name} must be one of {', '.join(allowed)}; got {value!r}")
        for name, value, ok, rule in self._rules():
            if not ok:
                errors.append(f"{name} must be {rule}; got {value!r}")
        if errors:
            raise ValueError("invalid PPOConfig: " + "; ".join(errors))
        if isinstance(self.hidden_sizes, list):  # JSON and users write lists; the config keeps a tuple
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    def _rules(self):
        """(field, value, ok, rule) for every numeric constraint."""
        def finite(x):  # an int too large for a float (10**400) is no finite number either
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                return False
            try:
                return math.isfinite(x)
            except OverflowError:
                return False

        def integer(x):
            return isinstance(x, int) and not isinstance(x, bool)

        def positive(x):
            return finite(x) and x > 0

        def optional_positive(x):
            return x is None or positive(x)

        yield "seed", self.seed, integer(self.seed) and 0 <= self.seed < 2**64, "an integer >= 0 and < 2**64"
        for f in dataclasses.fields(self):
            if f.type in ("bool", bool):
                value = getattr(self, f.name)
                yield f.name, value, isinstance(value, bool), "true or false"
        for name in ("num_envs", "num_steps", "update_epochs", "minibatch_size", "checkpoint_every", "cg_iters",
                     "line_search_steps"):
            value = getattr(self, name)
            yield name, value, integer(value) and value >= 1, "an integer >= 1"
        if all(integer(v) and v >= 1 for v in (self.num_envs, self.num_steps, self.minibatch_size)):
            yield ("minibatch_size", self.minibatch_size, self.minibatch_size <= self.batch_size,
                   f"<= the batch num_envs * num_steps = {self.batch_size} (the last minibatch may be smaller)")
        sizes = self.hidden_sizes
        yield ("hidden_sizes", sizes, isinstance(sizes, (list, tuple)) and len(sizes) >= 1
               and all(integer(s) and s >= 1 for s in sizes), "a non-empty list or tuple of integers >= 1")
        yield "gamma", self.gamma, finite(self.gamma) and 0 < self.gamma <= 1, "in (0, 1]"
        yield "gae_lambda", self.gae_lambda, finite(self.gae_lambda) and 0 <= self.gae_lambda <= 1, "in [0, 1]"
        for name in ("learning_rate", "adam_eps", "max_grad_norm", "clip_coef", "kl_target", "beta_init",
                     "temperature", "obs_clip", "reward_clip", "ent_coef_lr", "trpo_max_kl", "cg_tol"):
            value = getattr(self, name)
            yield name, value, positive(value), "a finite number > 0"
        for name in ("target_kl", "vf_clip", "temperature_final", "kl_max", "kl_min", "trpo_max_kl_final"):
            value = getattr(self, name)
            yield name, value, optional_positive(value), "none or a finite number > 0"
        for name in ("vf_coef", "ent_coef", "ent_coef_final", "cg_damping"):
            value = getattr(self, name)
            yield name, value, finite(value) and value >= 0, "a finite number >= 0"
        yield ("line_search_decay", self.line_search_decay,
               finite(self.line_search_decay) and 0 < self.line_search_decay < 1, "in (0, 1)")
        yield "log_std_init", self.log_std_init, finite(self.log_std_init), "a finite number"
        yield ("target_entropy", self.target_entropy, self.target_entropy is None or finite(self.target_entropy),
               "none or a finite number")
        yield "beta_factor", self.beta_factor, finite(self.beta_factor) and self.beta_factor > 1, "a finite number > 1"
        # the rules between fields, once each field on its own is a finite number (else it is reported above)
        if positive(self.kl_target) and optional_positive(self.kl_max) and optional_positive(self.kl_min):
            kl_max, kl_min = self.kl_bounds
            yield ("kl_min", kl_min, kl_min < kl_max, f"below kl_max ({kl_max!r}; none means kl_target / 1.5 "
                   "for kl_min and 1.5 * kl_target for kl_max)")
        if self.ent_schedule == "exponential" and finite(self.ent_coef_final) and finite(self.ent_coef):
            yield ("ent_coef_final", self.ent_coef_final, self.ent_coef_final > 0 and self.ent_coef > 0,
                   "> 0, with ent_coef > 0, for an exponential schedule")
        yield ("log_gradients", self.log_gradients, not (self.log_gradients is True and self.algo == "trpo"),
               "false for algo trpo (its policy step is one natural-gradient step, not minibatch gradients)")
        if self.ent_schedule == "auto" and finite(self.ent_coef):
            yield "ent_coef", self.ent_coef, self.ent_coef > 0, "> 0 as the starting point of the auto schedule"

    @property
    def batch_size(self) -> int:
        """Samples per rollout, T * N (before the reset steps of the vector env are masked out)."""
        return self.num_envs * self.num_steps

    @property
    def kl_bounds(self) -> tuple[float, float]:
        """(kl_max, kl_min) of the adaptive penalty, defaults derived from kl_target."""
        kl_max = self.kl_max if self.kl_max is not None else 1.5 * self.kl_target
        kl_min = self.kl_min if self.kl_min is not None else self.kl_target / 1.5
        return kl_max, kl_min

    @classmethod
    def for_env(cls, env, **overrides) -> "PPOConfig":
        """The configuration ``ppo-np train ENV`` starts from, with ``overrides`` applied (and validated).

        ``env`` is anything ``PPO`` takes. An id with a preset (``PRESETS``) takes it; any other
        environment the generic discrete or continuous defaults, by its action space. A vector env
        fixes ``num_envs`` (and caps ``minibatch_size`` at the batch) unless ``overrides`` set them.
        ``PPOConfig(seed=1)`` is the bare defaults; ``PPOConfig.for_env("CartPole-v1", seed=1)`` is the
        preset with seed 1, as ``ppo-np train CartPole-v1 --seed 1``.
        """
        from ppo_np.envs import EnvSource  # gymnasium: imported only when an environment is involved
        from ppo_np.heads import head_for

        if isinstance(env, str) and env in PRESETS and env not in ("discrete", "continuous"):
            return cls(**PRESETS[env]).replace(**overrides)
        source = EnvSource.of(env)
        base = preset_for(source.recipe["id"] if source.recipe else "", head_for(source.action_space).continuous)
        if source.num_envs is not None:
            batch = source.num_envs * overrides.get("num_steps", base.num_steps)
            fixed = {"num_envs": source.num_envs, "minibatch_size": min(base.minibatch_size, batch)}
            base = base.replace(**{k: v for k, v in fixed.items() if k not in overrides})
        return base.replace(**overrides)

    def replace(self, **changes) -> "PPOConfig":
        """A copy with ``changes`` applied (and validated)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PPOConfig":
        """The config stored by ``to_json``; unknown keys are an error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"config JSON must be an object, got {type(data).__name__}")
        return cls().replace(**data)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PPOConfig)]


def field_doc(name: str) -> str:
    return next(f.metadata["doc"] for f in dataclasses.fields(PPOConfig) if f.name == name)


def parse_value(name: str, text: str) -> Any:
    """Parse the text of ``--set name=text`` into the field's type; a ValueError says what was expected."""
    fields = {f.name: f for f in dataclasses.fields(PPOConfig)}
    if name not in fields:
        raise ValueError(f"unknown config key {name!r}; known keys: {', '.join(fields)}")
    default = fields[name].default
    kind = fields[name].type
    raw = text.strip()
    if raw.lower() in ("none", "null") and "Optional" in str(kind):
        return None
    try:
        if "bool" in str(kind):
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if "tuple" in str(kind):
            return tuple(int(s) for s in raw.replace(" ", "").strip("()[]").split(",") if s)
        if "int" in str(kind):
            return int(raw)
        if "float" in str(kind):
            return float(raw)
        return raw
    except ValueError:
        expected = {"bool": "true or false", "tuple": "comma-separated integers like 64,64",
                    "int": "an integer", "float": "a number"}
        what = next((v for k, v in expected.items() if k in str(kind)), "a value")
        raise ValueError(f"config key {name}: cannot parse {text!r}, expected {what} (default {default!r})") from None


_CARTPOLE = dict(num_envs=8, num_steps=32, minibatch_size=256, update_epochs=20, gamma=0.98, gae_lambda=0.8,
                 learning_rate=1e-3, lr_schedule="linear", clip_coef=0.2, clip_schedule="linear", ent_coef=0.0)
# Acrobot without observation normalisation: 5 of 5 seeds reach about -85 in 100k steps, against 4 of 5
# with it (seed 1 stayed at -500; measured with the benchmark's seeds)
_ACROBOT = dict(num_envs=16, num_steps=256, minibatch_size=64, update_epochs=4, gamma=0.99, gae_lambda=0.94,
                normalize_obs=False, ent_coef=0.0)
_PENDULUM = dict(num_envs=4, num_steps=1024, minibatch_size=64, update_epochs=10, gamma=0.9, gae_lambda=0.95,
                 learning_rate=1e-3, clip_coef=0.2, ent_coef=0.0, normalize_obs=False, log_std_init=0.0)
# Stable-Baselines3's PPO defaults (one env of 2048 steps, 64-sample minibatches, 10 epochs, a constant
# learning rate, no entropy bonus) with observations and rewards normalised, as the continuous defaults
# are: an unseen env's scales are unknown. ``benchmarks/bench_defaults.py`` chose them over SB3's
# configuration alone (LunarLander-v3 229 against 262 here; a tie with SB3 on Acrobot), CleanRL's Atari
# settings (the defaults before: -23 on LunarLander-v3 at 1M), the same batch from 8 envs of 256 steps
# (one Acrobot seed of three stays at -500), a linear learning rate (171 on LunarLander), an entropy
# bonus of 0.01 (Acrobot spread to -91) and either normalisation alone: the README's "Defaults for an
# environment without a preset".
_GENERIC_DISCRETE = dict(num_envs=1, num_steps=2048, minibatch_size=64, update_epochs=10, learning_rate=3e-4,
                         lr_schedule="constant", ent_coef=0.0, normalize_obs=True, normalize_reward=True)
_GENERIC_CONTINUOUS = dict(num_envs=1, num_steps=2048, minibatch_size=64, update_epochs=10,
                           normalize_obs=True, normalize_reward=True, lr_schedule="linear")

_LUNAR_LANDER = dict(num_envs=16, num_steps=1024, minibatch_size=64, update_epochs=4, gamma=0.999, gae_lambda=0.98,
                     ent_coef=0.01)
_MOUNTAIN_CAR = dict(num_envs=16, num_steps=16, minibatch_size=64, update_epochs=4, gamma=0.99, gae_lambda=0.98,
                     ent_coef=0.0, normalize_obs=True, normalize_reward=True)

PRESETS: dict[str, dict] = {"CartPole-v1": _CARTPOLE, "Acrobot-v1": _ACROBOT, "Pendulum-v1": _PENDULUM,
                            "LunarLander-v3": _LUNAR_LANDER, "MountainCar-v0": _MOUNTAIN_CAR,
                            "MountainCarContinuous-v0": _GENERIC_CONTINUOUS, "Hopper-v5": _GENERIC_CONTINUOUS,
                            "HalfCheetah-v5": _GENERIC_CONTINUOUS,
                            "discrete": _GENERIC_DISCRETE, "continuous": _GENERIC_CONTINUOUS}

_ZOO = "RL Baselines3 Zoo, hyperparams/ppo.yml"
_CLEANRL = "CleanRL's ppo_continuous_action.py defaults, ppo-np's generic continuous ones"
#: where each preset comes from; ``ppo-np train`` names it beside the preset
PRESET_SOURCES: dict[str, str] = {
    "CartPole-v1": _ZOO, "Acrobot-v1": f"{_ZOO}, without observation normalisation",
    "Pendulum-v1": f"{_ZOO}, without gSDE", "LunarLander-v3": f"{_ZOO}, its LunarLander-v2 entry",
    "MountainCar-v0": _ZOO,
    "MountainCarContinuous-v0": f"{_CLEANRL}: the Zoo's tuned entry explores by gSDE, which ppo-np has not",
    "Hopper-v5": _CLEANRL, "HalfCheetah-v5": _CLEANRL,
    "discrete": "Stable-Baselines3's PPO defaults with observation and reward normalisation, ppo-np's generic "
                "discrete ones",
    "continuous": _CLEANRL}

DEFAULT_TOTAL_STEPS = {"CartPole-v1": 100_000, "Acrobot-v1": 100_000, "Pendulum-v1": 200_000,
                       "LunarLander-v3": 1_000_000, "MountainCar-v0": 1_000_000, "MountainCarContinuous-v0": 100_000,
                       "Hopper-v5": 1_000_000, "HalfCheetah-v5": 1_000_000}


def preset_for(env_id: str, continuous: bool) -> PPOConfig:
    """The preset of ``env_id``, else the generic discrete or continuous defaults."""
    values = PRESETS.get(env_id, PRESETS["continuous" if continuous else "discrete"])
    return PPOConfig(**values)
