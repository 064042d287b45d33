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

from ppo_np.jit import jit


# --- the kernels: one call steps every environment not being reset -------------------------------------


@jit
def cartpole_step(state, actions, stepping, rewards, terminated):
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
def mountain_car_step(state, actions, stepping, rewards, terminated):
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
def pendulum_step(state, torques, torque_constants, stepping, rewards, terminated):
    """gymnasium's PendulumEnv.step on each row of ``state`` (theta, theta_dot). ``torques``: the clipped
    actions u; ``torque_constants``: (2, 3, 0.001) in their dtype, so that the terms of u are computed in
    the action's precision, and every square by ``pow`` as NumPy's scalars take it (module docstring)."""
    two, three, milli = torque_constants[0], torque_constants[1], torque_constants[2]
    two64 = np.float64(two)
    g, length, dt = 10.0, 1.0, 0.05  # and m = 1: ``three`` is 3 / (m l^2)
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        th, thdot, u = state[i, 0], state[i, 1], torques[i]
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
def mountain_car_continuous_step(state, actions, action_kind, two, stepping, rewards, terminated):
    """gymnasium's Continuous_MountainCarEnv.step on each row of ``state`` (position, velocity, stored):
    ``stored`` is 1 once gymnasium holds the state as float32 (after a step; a reset's is float64). Each
    quantity carries its NumPy scalar kind, and each operation is done in the precision that kind
    gives, as gymnasium's expressions on NumPy scalars do."""
    for i in range(state.shape[0]):
        if not stepping[i]:
            continue
        kind = SINGLE if state[i, 2] == 1.0 else WIDE
        position, velocity, a = state[i, 0], state[i, 1], actions[i]
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
def acrobot_step(state, actions, two, stepping, rewards, terminated):
    """gymnasium's AcrobotEnv.step on each row of ``state`` (theta1, theta2, dtheta1, dtheta2): one RK4 step
    of dt = 0.2 as gymnasium's ``rk4`` takes it, the angles wrapped to [-pi, pi], the speeds bounded."""
    dt = 0.2
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
def acrobot_observe(state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1] = np.cos(state[i, 0]), np.sin(state[i, 0])
        obs[i, 2], obs[i, 3] = np.cos(state[i, 1]), np.sin(state[i, 1])
        obs[i, 4], obs[i, 5] = state[i, 2], state[i, 3]


@jit
def cartpole_observe(state, obs):
    for i in range(state.shape[0]):
        for j in range(4):
            obs[i, j] = state[i, j]


@jit
def mountain_car_observe(state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1] = state[i, 0], state[i, 1]


@jit
def pendulum_observe(state, obs):
    for i in range(state.shape[0]):
        obs[i, 0], obs[i, 1], obs[i, 2] = np.cos(state[i, 0]), np.sin(state[i, 0]), state[i, 1]


# --- what each port is ------------------------------------------------------------------------------------


def _pendulum_actions(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clipped torques u, in the actions' dtype, and (2, 3, 0.001) in that dtype (``pendulum_step``)."""
    torques = np.clip(actions, -2.0, 2.0)[:, 0]
    return torques, np.array([2.0, 3.0, 0.001], torques.dtype)


def _discrete_actions(actions: np.ndarray) -> tuple[np.ndarray]:
    return (np.asarray(actions, np.int64),)


class Port(NamedTuple):
    """A ported environment: its state size, gymnasium's reset draw from an env's generator, and kernels."""
    state_dim: int
    obs_dim: int
    reset: Callable[[np.random.Generator], np.ndarray]
    step: Callable
    observe: Callable
    actions: Callable[[np.ndarray], tuple]   # the vector env's actions as the step kernel's arguments
    # the observation of a state just reset, where gymnasium's differs from ``observe``'s (None: it does not)
    reset_observation: Optional[Callable[[np.ndarray], np.ndarray]] = None


def _acrobot_reset_observation(state: np.ndarray) -> np.ndarray:
    """gymnasium's Acrobot observation of its float32 reset state: cos and sin of np.float32 scalars, which
    NumPy computes in float32, not always as float64's rounded (0.99747336 against 0.9974734 at seed 835)."""
    s = np.asarray(state[:4], np.float32)
    return np.array([np.cos(s[0]), np.sin(s[0]), np.cos(s[1]), np.sin(s[1]), s[2], s[3]], dtype=np.float32)


def _mountain_car_continuous_actions(actions: np.ndarray) -> tuple:
    """The force per environment as float64 values, the NumPy kind of its dtype, and the exponent 2.0."""
    return (np.asarray(actions[:, 0], np.float64), SINGLE if actions.dtype == np.float32 else WIDE, 2.0)


def _acrobot_actions(actions: np.ndarray) -> tuple:
    return np.asarray(actions, np.int64), 2.0


PORTS: dict[str, Port] = {
    # gymnasium stores Acrobot's reset state as float32 (then float64 from the first step on)
    "Acrobot-v1": Port(4, 6, lambda rng: rng.uniform(low=-0.1, high=0.1, size=(4,)).astype(np.float32),
                       acrobot_step, acrobot_observe, _acrobot_actions, _acrobot_reset_observation),
    "CartPole-v1": Port(4, 4, lambda rng: rng.uniform(low=-0.05, high=0.05, size=(4,)), cartpole_step,
                        cartpole_observe, _discrete_actions),
    "MountainCar-v0": Port(2, 2, lambda rng: np.array([rng.uniform(low=-0.6, high=-0.4), 0]), mountain_car_step,
                           mountain_car_observe, _discrete_actions),
    # (position, velocity, stored as float32): gymnasium's reset state is float64, its stepped one float32
    "MountainCarContinuous-v0": Port(3, 2, lambda rng: np.array([rng.uniform(low=-0.6, high=-0.4), 0, 0.0]),
                                     mountain_car_continuous_step, mountain_car_observe,
                                     _mountain_car_continuous_actions),
    "Pendulum-v1": Port(2, 3, lambda rng: rng.uniform(low=-np.array([np.pi, 1.0]), high=np.array([np.pi, 1.0])),
                        pendulum_step, pendulum_observe, _pendulum_actions),
}


class NumbaVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of a ported environment (``PORTS``), stepped by one kernel call; next-step
    autoreset; the spaces, time limit and metadata of gymnasium's own environment of that id."""

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
        n = self.num_envs
        self._state = np.zeros((n, self.port.state_dim))
        self._obs = np.zeros((n, self.port.obs_dim), np.float32)
        self._rewards, self._terminated = np.zeros(n), np.zeros(n, bool)
        self._elapsed = np.zeros(n, np.int64)
        self._autoreset = np.zeros(n, bool)
        self._rngs = [np.random.default_rng() for _ in range(n)]

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
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = np.random.default_rng(seeds[i])
        self._autoreset[mask] = False
        self._reset_rows(mask)
        self.port.observe(self._state, self._obs)
        self._observe_resets(mask)
        return self._obs.copy(), {}

    def step(self, actions):
        actions = np.asarray(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"{len(actions)} actions for {self.num_envs} environments")
        resetting = self._autoreset.copy()
        stepping = ~resetting
        if resetting.any():
            self._reset_rows(resetting)
            self._rewards[resetting] = 0.0       # the kernels write the rows they step
            self._terminated[resetting] = False
        self.port.step(self._state, *self.port.actions(actions), stepping, self._rewards, self._terminated)
        self._elapsed += stepping
        truncated = stepping & (self._elapsed >= self.max_episode_steps)
        np.logical_or(self._terminated, truncated, out=self._autoreset)
        self.port.observe(self._state, self._obs)
        if resetting.any():
            self._observe_resets(resetting)
        return self._obs.copy(), self._rewards.copy(), self._terminated.copy(), truncated, {}

    def _reset_rows(self, rows: np.ndarray) -> None:
        """A new initial state for each env of the bool mask ``rows``, from its own generator."""
        for i in np.flatnonzero(rows):
            self._state[i] = self.port.reset(self._rngs[i])
            self._elapsed[i] = 0

    def _observe_resets(self, rows: np.ndarray) -> None:
        if self.port.reset_observation is not None:
            for i in np.flatnonzero(rows):
                self._obs[i] = self.port.reset_observation(self._state[i])
