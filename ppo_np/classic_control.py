"""Classic control, compiled: gymnasium 1.x's Acrobot-v1, CartPole-v1, MountainCar-v0, MountainCarContinuous-v0 and
Pendulum-v1 as Numba kernels
that step N environments in one call, behind a gymnasium ``VectorEnv`` (``NumbaVectorEnv``, chosen by
``PPOConfig.env_backend = "numba"``).

The dynamics, rewards, termination and time limits are gymnasium's, operation for operation, so that a
``NumbaVectorEnv`` and gymnasium's ``SyncVectorEnv`` of the same id, reset with the same seed and given
the same actions, return the same observations, rewards and flags, bit for bit
(``tests/test_classic_control.py``). Two details make that hold:

- resets draw from one ``numpy.random.Generator`` per environment, seeded as gymnasium seeds env i of a
  vector env (seed + i), with gymnasium's own calls (``uniform(-0.05, 0.05, size=4)`` for CartPole), so
  the initial states, and those of every autoreset after them, are gymnasium's;
- gymnasium computes on NumPy scalars: Pendulum's torque terms in the action's own precision (float32),
  and squares as ``x ** 2``, which is libm's ``pow``, not the rounded product ``x * x`` (they differ for
  0.1-0.2% of inputs: 0.26163244 ** 2 is 0.06845154 in float32, where u * u is 0.06845153). The kernels
  do the same: the action's terms in its dtype, and ``x ** two`` with the exponent an argument, which
  compiles to a call of ``pow`` (a constant 2 would compile to ``x * x``).

Autoreset is gymnasium's next-step mode, as ppo-np's rollout expects: the step after an episode's end
resets that environment (reward 0, flags False, the action ignored).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import gymnasium as gym
import numpy as np

from ppo_np.jit import by_type, jit, plain


# --- the kernels: one call steps every environment not being reset -------------------------------------


@jit
def cartpole_step(spec, state, actions, stepping, rewards, terminated):
    """gymnasium's CartPoleEnv.step (Euler integration) on each row of ``state`` (x, x_dot, theta, theta_dot)."""
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold = 12 * 2 * math.pi / 360
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        x, x_dot, theta, theta_dot = state[i, 0], state[i, 1], state[i, 2], state[i, 3]
        force = force_mag if actions[i] == 1 else -force_mag
        costheta, sintheta = np.cos(theta), np.sin(theta)
        temp = (force + polemass_length * np.square(theta_dot) * sintheta) / total_mass
        thetaacc = (gravity * sintheta - costheta * temp) / (
            length * (4.0 / 3.0 - masspole * np.square(costheta) / total_mass))
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        state[i, 0] = x + tau * x_dot
        state[i, 1] = x_dot + tau * xacc
        state[i, 2] = theta + tau * theta_dot
        state[i, 3] = theta_dot + tau * thetaacc
        terminated[i] = (state[i, 0] < -2.4 or state[i, 0] > 2.4 or state[i, 2] < -theta_threshold
                         or state[i, 2] > theta_threshold)
        rewards[i] = 1.0


@jit
def mountain_car_step(spec, state, actions, stepping, rewards, terminated):
    """gymnasium's MountainCarEnv.step on each row of ``state`` (position, velocity)."""
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        position, velocity = state[i, 0], state[i, 1]
        velocity += (actions[i] - 1) * 0.001 + math.cos(3 * position) * (-0.0025)
        velocity = min(max(velocity, -0.07), 0.07)
        position += velocity
        position = min(max(position, -1.2), 0.6)
        if position == -1.2 and velocity < 0:
            velocity = 0.0
        state[i, 0], state[i, 1] = position, velocity
        terminated[i] = position >= 0.5 and velocity >= 0.0
        rewards[i] = -1.0


@jit
def pendulum_step(spec, state, actions, stepping, rewards, terminated):
    """gymnasium's PendulumEnv.step on each row of ``state`` (theta, theta_dot), the torque u the action
    clipped to [-2, 2] in its own dtype; ``spec.torque_constants``: (2, 3, 0.001) in that dtype, so that
    the terms of u are computed in the action's precision, and every square by ``pow`` as NumPy's
    scalars take it (module docstring)."""
    two, three, milli = spec.torque_constants[0], spec.torque_constants[1], spec.torque_constants[2]
    two64 = np.float64(two)
    g, length, dt = 10.0, 1.0, 0.05  # and m = 1: ``three`` is 3 / (m l^2)
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        th, thdot, u = state[i, 0], state[i, 1], actions[i, 0]
        if u < -two:                                   # np.clip(u, -2.0, 2.0), NaN kept
            u = -two
        elif u > two:
            u = two
        normalized = ((th + np.pi) % (2 * np.pi)) - np.pi
        costs = normalized ** two64 + 0.1 * thdot ** two64 + np.float64(milli * u ** two)
        newthdot = thdot + (3 * g / (2 * length) * np.sin(th) + np.float64(three * u)) * dt
        newthdot = min(max(newthdot, -8.0), 8.0)
        state[i, 0] = th + newthdot * dt
        state[i, 1] = newthdot
        terminated[i] = False
        rewards[i] = -costs


# NumPy 2's scalar kinds, which MountainCarContinuous's arithmetic mixes (NEP 50): a Python float, an
# np.float64, an np.float32. An operation takes the widest NumPy kind of its operands, a Python float
# being weak (np.float32 op float is float32, with the float rounded to float32 first); comparisons too.
PYTHON, WIDE, SINGLE = 0, 1, 2


@jit
def _kind_of(kind_x, kind_y):
    if kind_x == WIDE or kind_y == WIDE:
        return WIDE
    return SINGLE if kind_x == SINGLE or kind_y == SINGLE else PYTHON


@jit
def _greater(x, kind, constant):
    """x > constant as NumPy compares a scalar of ``kind`` with a Python float (in float32 for SINGLE)."""
    return np.float32(x) > np.float32(constant) if kind == SINGLE else x > constant


@jit
def _less(x, kind, constant):
    return np.float32(x) < np.float32(constant) if kind == SINGLE else x < constant


@jit
def _clip(x, kind, low, high):
    """x bounded to [low, high] as gymnasium bounds a NumPy scalar of ``kind`` by Python floats (max then
    min, or two ifs): a bound that x passes replaces it, as a Python float."""
    if _less(x, kind, low):
        return low, PYTHON
    if _greater(x, kind, high):
        return high, PYTHON
    return x, kind


@jit
def _add(x, y, kind):
    """x + y (or x - (-y)) in the precision of ``kind``, the kind of the result."""
    return np.float64(np.float32(x) + np.float32(y)) if kind == SINGLE else x + y


@jit
def mountain_car_continuous_step(spec, state, actions, stepping, rewards, terminated):
    """gymnasium's Continuous_MountainCarEnv.step on each row of ``state`` (position, velocity, stored):
    ``stored`` is 1 once gymnasium holds the state as float32 (after a step; a reset's is float64). Each
    quantity carries its NumPy scalar kind, and each operation is done in the precision that kind
    gives, as gymnasium's expressions on NumPy scalars do; ``spec.action_kind`` is the actions' kind."""
    action_kind, two = spec.action_kind, spec.two
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        kind = SINGLE if state[i, 2] == 1.0 else WIDE
        position, velocity, a = state[i, 0], state[i, 1], np.float64(actions[i, 0])
        force, force_kind = _clip(a, action_kind, -1.0, 1.0)      # min(max(a, -1.0), 1.0)
        pushed = (np.float64(np.float32(force) * np.float32(0.0015)) if force_kind == SINGLE
                  else force * 0.0015)                             # force * power
        slope = 0.0025 * math.cos(np.float64(np.float32(3.0) * np.float32(position)) if kind == SINGLE
                                  else 3 * position)               # a Python float
        change = _add(pushed, -slope, force_kind)                 # pushed - slope: the kind of pushed
        velocity_kind = _kind_of(kind, force_kind)
        velocity, velocity_kind = _clip(_add(velocity, change, velocity_kind), velocity_kind, -0.07, 0.07)
        position_kind = _kind_of(kind, velocity_kind)
        position, position_kind = _clip(_add(position, velocity, position_kind), position_kind, -1.2, 0.6)
        if not _greater(position, position_kind, -1.2) and not _less(position, position_kind, -1.2) \
                and _less(velocity, velocity_kind, 0.0):         # position == min_position and velocity < 0
            velocity = 0.0
        done = not _less(position, position_kind, 0.45) and not _less(velocity, velocity_kind, 0.0)
        terminated[i] = done
        rewards[i] = (100.0 if done else 0.0) - a ** two * 0.1    # math.pow(action[0], 2) * 0.1
        state[i, 0], state[i, 1], state[i, 2] = np.float32(position), np.float32(velocity), 1.0


@jit
def acrobot_derivatives(s, torque, two):
    """gymnasium's AcrobotEnv._dsdt ("book" dynamics): (dtheta1, dtheta2, ddtheta1, ddtheta2) at state ``s``,
    in gymnasium's order of operations (squares of variables by ``pow``: ``two`` is 2.0)."""
    m1, m2, l1, lc1, lc2, i1, i2, g = 1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 9.8
    theta1, theta2, dtheta1, dtheta2 = s[0], s[1], s[2], s[3]
    d1 = m1 * lc1 ** 2 + m2 * (l1 ** 2 + lc2 ** 2 + 2 * l1 * lc2 * np.cos(theta2)) + i1 + i2
    d2 = m2 * (lc2 ** 2 + l1 * lc2 * np.cos(theta2)) + i2
    phi2 = m2 * lc2 * g * np.cos(theta1 + theta2 - np.pi / 2.0)
    phi1 = (-m2 * l1 * lc2 * dtheta2 ** two * np.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * np.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * np.cos(theta1 - np.pi / 2)
            + phi2)
    ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1 ** two * np.sin(theta2) - phi2) / (
        m2 * lc2 ** 2 + i2 - d2 ** two / d1)
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return dtheta1, dtheta2, ddtheta1, ddtheta2


@jit
def acrobot_step(spec, state, actions, stepping, rewards, terminated):
    """gymnasium's AcrobotEnv.step on each row of ``state`` (theta1, theta2, dtheta1, dtheta2): one RK4 step
    of dt = 0.2 as gymnasium's ``rk4`` takes it, the angles wrapped to [-pi, pi], the speeds bounded."""
    dt, two = 0.2, spec.two
    dt2, sixth = dt / 2.0, dt / 6.0
    k1, k2, k3, k4, y = np.empty(4), np.empty(4), np.empty(4), np.empty(4), np.empty(4)
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        torque = actions[i] - 1.0  # AVAIL_TORQUE = [-1.0, 0.0, +1]
        y0 = state[i]
        k1[:] = acrobot_derivatives(y0, torque, two)
        for j in range(4):
            y[j] = y0[j] + dt2 * k1[j]
        k2[:] = acrobot_derivatives(y, torque, two)
        for j in range(4):
            y[j] = y0[j] + dt2 * k2[j]
        k3[:] = acrobot_derivatives(y, torque, two)
        for j in range(4):
            y[j] = y0[j] + dt * k3[j]
        k4[:] = acrobot_derivatives(y, torque, two)
        for j in range(4):
            y[j] = y0[j] + sixth * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j])
        for j in range(2):
            while y[j] > np.pi:
                y[j] = y[j] - 2 * np.pi
            while y[j] < -np.pi:
                y[j] = y[j] + 2 * np.pi
        y[2] = min(max(y[2], -4 * np.pi), 4 * np.pi)
        y[3] = min(max(y[3], -9 * np.pi), 9 * np.pi)
        state[i, :] = y
        terminated[i] = -np.cos(y[0]) - np.cos(y[1] + y[0]) > 1.0
        rewards[i] = 0.0 if terminated[i] else -1.0


@jit
def acrobot_observe(spec, state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1] = np.cos(state[i, 0]), np.sin(state[i, 0])
        obs[i, 2], obs[i, 3] = np.cos(state[i, 1]), np.sin(state[i, 1])
        obs[i, 4], obs[i, 5] = state[i, 2], state[i, 3]


@jit
def cartpole_observe(spec, state, obs):
    for i in range(state.shape[0]):
        for j in range(4):
            obs[i, j] = state[i, j]


@jit
def mountain_car_observe(spec, state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1] = state[i, 0], state[i, 1]


@jit
def pendulum_observe(spec, state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1], obs[i, 2] = np.cos(state[i, 0]), np.sin(state[i, 0]), state[i, 1]


# --- what each port is: the key its kernels take, its reset draws, its kernels -----------------------------


class CartPoleSpec(NamedTuple):
    """What CartPole-v1's kernels take beside the state: its time limit. The class names the port's
    kernels to ``port_step`` and ``port_observe`` (``jit.by_type``)."""

    max_episode_steps: int

    @classmethod
    def make(cls, max_episode_steps: int, action_dtype) -> "CartPoleSpec":
        return cls(max_episode_steps)


class MountainCarSpec(NamedTuple):
    """MountainCar-v0's: its time limit."""

    max_episode_steps: int

    @classmethod
    def make(cls, max_episode_steps: int, action_dtype) -> "MountainCarSpec":
        return cls(max_episode_steps)


class AcrobotSpec(NamedTuple):
    """Acrobot-v1's: its time limit, and the exponent 2.0 of its squares (``pow``, module docstring)."""

    max_episode_steps: int
    two: float

    @classmethod
    def make(cls, max_episode_steps: int, action_dtype) -> "AcrobotSpec":
        return cls(max_episode_steps, 2.0)


class PendulumSpec(NamedTuple):
    """Pendulum-v1's: its time limit, and (2, 3, 0.001) in the actions' dtype (``pendulum_step``)."""

    max_episode_steps: int
    torque_constants: np.ndarray

    @classmethod
    def make(cls, max_episode_steps: int, action_dtype) -> "PendulumSpec":
        return cls(max_episode_steps, np.array([2.0, 3.0, 0.001], action_dtype))


class MountainCarContinuousSpec(NamedTuple):
    """MountainCarContinuous-v0's: its time limit, the NumPy kind of the actions' dtype, and the exponent 2.0."""

    max_episode_steps: int
    action_kind: int
    two: float

    @classmethod
    def make(cls, max_episode_steps: int, action_dtype) -> "MountainCarContinuousSpec":
        return cls(max_episode_steps, SINGLE if np.dtype(action_dtype) == np.float32 else WIDE, 2.0)


class Port(NamedTuple):
    """A ported environment: its sizes, its kernels' key (``spec``), and gymnasium's reset draws.

    ``reset(rng, k)`` draws k initial states, (k, state_dim): those of k gymnasium resets in turn from one
    env's generator (one vectorised call draws the same numbers in the same order). Actions reach the
    step kernel as ``canonical_actions`` makes them: int64 (N,) for a discrete port, (N, 1) floats for a
    continuous one.
    """

    state_dim: int
    obs_dim: int
    discrete: bool
    spec: type
    reset: Callable[[np.random.Generator, int], np.ndarray]
    step: Callable
    observe: Callable
    # the observations of states just reset, where gymnasium's differ from ``observe``'s (None: they do not)
    reset_observation: Optional[Callable[[np.ndarray], np.ndarray]] = None


def _acrobot_reset_observation(states: np.ndarray) -> np.ndarray:
    """gymnasium's Acrobot observation of its float32 reset states (k, 4): cos and sin of np.float32
    values, which NumPy computes in float32, not always as float64's rounded (0.99747336 against
    0.9974734 at seed 835)."""
    s = np.asarray(states[:, :4], np.float32)
    return np.stack([np.cos(s[:, 0]), np.sin(s[:, 0]), np.cos(s[:, 1]), np.sin(s[:, 1]), s[:, 2], s[:, 3]], axis=1)


def _mountain_car_resets(rng: np.random.Generator, k: int) -> np.ndarray:
    """(position ~ U(-0.6, -0.4), velocity 0); a third column of zeros for the continuous port's ``stored``."""
    states = np.zeros((k, 3))
    states[:, 0] = rng.uniform(low=-0.6, high=-0.4, size=k)
    return states


PORTS: dict[str, Port] = {
    # gymnasium stores Acrobot's reset state as float32 (then float64 from the first step on)
    "Acrobot-v1": Port(4, 6, True, AcrobotSpec,
                       lambda rng, k: rng.uniform(low=-0.1, high=0.1, size=(k, 4)).astype(np.float32),
                       acrobot_step, acrobot_observe, _acrobot_reset_observation),
    "CartPole-v1": Port(4, 4, True, CartPoleSpec, lambda rng, k: rng.uniform(low=-0.05, high=0.05, size=(k, 4)),
                        cartpole_step, cartpole_observe),
    "MountainCar-v0": Port(2, 2, True, MountainCarSpec, lambda rng, k: _mountain_car_resets(rng, k)[:, :2],
                           mountain_car_step, mountain_car_observe),
    # (position, velocity, stored as float32): gymnasium's reset state is float64, its stepped one float32
    "MountainCarContinuous-v0": Port(3, 2, False, MountainCarContinuousSpec, _mountain_car_resets,
                                     mountain_car_continuous_step, mountain_car_observe),
    "Pendulum-v1": Port(2, 3, False, PendulumSpec,
                        lambda rng, k: rng.uniform(low=-np.array([np.pi, 1.0]), high=np.array([np.pi, 1.0]),
                                                   size=(k, 2)),
                        pendulum_step, pendulum_observe),
}

#: ``port_step(spec, state, actions, stepping, rewards, terminated)`` and ``port_observe(spec, state, obs)``:
#: the kernels of the port whose spec ``spec`` is, in Python and inside kernels alike
port_step = by_type("port_step", {port.spec: port.step for port in PORTS.values()})
port_observe = by_type("port_observe", {port.spec: port.observe for port in PORTS.values()})


def canonical_actions(port: Port, actions) -> np.ndarray:
    """A vector env's actions as the step kernels take them: int64 (N,) for a discrete port; (N, 1) for a
    continuous one, in their own float dtype (gymnasium computes in it), other dtypes as float64."""
    actions = np.asarray(actions)
    if port.discrete:
        return np.asarray(actions, np.int64).reshape(len(actions))
    if actions.dtype not in (np.float32, np.float64):
        actions = actions.astype(np.float64)
    return actions.reshape(len(actions), 1)


# --- N environments in one call --------------------------------------------------------------------------


class VectorState(NamedTuple):
    """A ``NumbaVectorEnv``'s arrays, N rows each: the states, their observations, the last step's rewards,
    terminated and truncated, each episode's elapsed steps, whether the next step resets it (next-step
    autoreset), and a scratch row (which envs a step steps)."""

    state: np.ndarray
    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    elapsed: np.ndarray
    autoreset: np.ndarray
    stepping: np.ndarray


class ResetQueue(NamedTuple):
    """Initial states drawn ahead from each env's generator, in gymnasium's order: states (N, Q, state_dim),
    their observations (N, Q, obs_dim), and each env's next unused one (N,), Q when none is left. Drawing
    ahead lets a kernel reset environments with no Python in the loop; the states each env starts from
    are the same as one draw per reset gives."""

    states: np.ndarray
    observations: np.ndarray
    next: np.ndarray


@jit
def vector_step(spec, env, queue, actions):
    """One step of every environment in next-step autoreset, in place in ``env`` (a ``VectorState``): an env
    whose last step ended its episode takes its next queued initial state (reward 0, flags False, its
    action ignored); every other one steps (``port_step``), its elapsed steps counted against
    ``spec.max_episode_steps`` (truncated at the limit). Every env to be reset must have a queued state
    (``resets_short`` is False). Checked against gymnasium's ``SyncVectorEnv`` by
    ``tests/test_classic_control.py``."""
    state, obs, rewards, terminated, truncated, elapsed, autoreset, stepping = env
    states, observations, next_reset = queue
    for i in range(state.shape[0]):
        stepping[i] = not autoreset[i]
        if autoreset[i]:
            state[i, :] = states[i, next_reset[i]]
            elapsed[i] = 0
            rewards[i] = 0.0
            terminated[i] = False
    port_step(spec, state, actions, stepping, rewards, terminated)
    port_observe(spec, state, obs)
    for i in range(state.shape[0]):
        if stepping[i]:
            elapsed[i] += 1
        truncated[i] = stepping[i] and elapsed[i] >= spec.max_episode_steps
        if not stepping[i]:
            obs[i, :] = observations[i, next_reset[i]]
            next_reset[i] += 1
        autoreset[i] = terminated[i] or truncated[i]


@jit
def resets_short(env, queue):
    """Whether some env is to be reset on the next step with no queued state left."""
    autoreset, next_reset = env[6], queue[2]
    for i in range(autoreset.shape[0]):
        if autoreset[i] and next_reset[i] >= queue[0].shape[1]:
            return True
    return False


#: initial states drawn ahead per environment at a time (``ResetQueue``)
RESETS_AHEAD = 64


class NumbaVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of a ported environment (``PORTS``), stepped by one kernel call (``vector_step``);
    next-step autoreset; the spaces, time limit and metadata of gymnasium's own environment of that id.

    For the compiled rollout: ``kernel_args(action_dtype)`` (the spec, ``VectorState`` and ``ResetQueue``
    a kernel steps in place), ``refill_resets()`` and ``observations()``.
    """

    def __init__(self, env_id: str, num_envs: int):
        if env_id not in PORTS:
            raise ValueError(f"no compiled port of {env_id}; the ported environments: {', '.join(PORTS)}")
        self.port = PORTS[env_id]
        reference = gym.make(env_id)
        self.env_id, self.num_envs = env_id, int(num_envs)
        self.single_observation_space = reference.observation_space
        self.single_action_space = reference.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.max_episode_steps = reference.spec.max_episode_steps
        self.spec = reference.spec
        self.metadata = {**reference.metadata, "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
        reference.close()
        n, port = self.num_envs, self.port
        self._env = VectorState(np.zeros((n, port.state_dim)), np.zeros((n, port.obs_dim), np.float32), np.zeros(n),
                                np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, bool),
                                np.zeros(n, bool))
        self._queue = ResetQueue(np.zeros((n, RESETS_AHEAD, port.state_dim)),
                                 np.zeros((n, RESETS_AHEAD, port.obs_dim), np.float32),
                                 np.full(n, RESETS_AHEAD, np.int64))
        self._plain = (plain(self._env), plain(self._queue))  # the same arrays, as the kernels take them
        self._rngs = [np.random.default_rng() for _ in range(n)]
        self._specs: dict[np.dtype, tuple] = {}

    def kernel_args(self, action_dtype) -> tuple:
        """(spec, env, queue) for ``vector_step`` with actions of ``action_dtype``; env and queue plain tuples
        of this env's own arrays, which a kernel updates in place."""
        return (self._spec(action_dtype), *self._plain)

    def _spec(self, action_dtype):
        action_dtype = np.dtype(action_dtype)
        if action_dtype not in self._specs:
            self._specs[action_dtype] = self.port.spec.make(self.max_episode_steps, action_dtype)
        return self._specs[action_dtype]

    def reset(self, *, seed=None, options=None):
        """gymnasium's vector reset: env i seeded with seed + i (a list gives each its own), or only those
        in ``options["reset_mask"]`` (a bool array, one per env); no other option is supported."""
        unknown = sorted(set(options or {}) - {"reset_mask"})
        if unknown:
            raise ValueError(f"the compiled {self.env_id} takes no reset option but reset_mask; got {', '.join(unknown)}")
        mask = np.ones(self.num_envs, bool) if not options or "reset_mask" not in options else options["reset_mask"]
        if not (isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (self.num_envs,)):
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},); got {mask!r}")
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} environments")
            seeds = list(seed)
        else:
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        env, queue = self._env, self._queue
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = np.random.default_rng(seeds[i])
                queue.next[i] = RESETS_AHEAD          # what was drawn ahead came from the old generator
            self._refill(i)
            env.state[i], env.obs[i] = queue.states[i, queue.next[i]], queue.observations[i, queue.next[i]]
            queue.next[i] += 1
            env.elapsed[i] = 0
        env.autoreset[mask] = False
        return env.obs.copy(), {}

    def step(self, actions):
        actions = canonical_actions(self.port, actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"{len(actions)} actions for {self.num_envs} environments")
        self.refill_resets()
        vector_step(*self.kernel_args(actions.dtype), actions)
        env = self._env
        return env.obs.copy(), env.rewards.copy(), env.terminated.copy(), env.truncated.copy(), {}

    def observations(self) -> np.ndarray:
        """A copy of the current observations (N, obs_dim), as the last ``reset`` or ``step`` returned them."""
        return self._env.obs.copy()

    def refill_resets(self) -> None:
        """Draw initial states ahead for every env to be reset on the next step that has none queued."""
        for i in np.flatnonzero(self._env.autoreset):
            self._refill(i)

    def _refill(self, i: int) -> None:
        queue = self._queue
        if queue.next[i] < RESETS_AHEAD:
            return
        states = self.port.reset(self._rngs[i], RESETS_AHEAD)
        queue.states[i] = states
        port_observe(self._spec(self.single_action_space.dtype), queue.states[i], queue.observations[i])
        if self.port.reset_observation is not None:
            queue.observations[i] = self.port.reset_observation(states)
        queue.next[i] = 0
