"""Environments a user would write, registered on import: ``ppo-np train custom_envs:Line-v0`` imports
this module (the tests directory is on the path), as gymnasium's ``module:EnvId`` form does."""
import os
import signal

import gymnasium as gym
import numpy as np


class LineEnv(gym.Env):
    """Walk from 0 to ``length`` on a line: action 1 steps right, 0 left (not below 0); reward -1 a step.

    The optimum walks right: return -length. Observation: the position as a 1-D Box, or one-hot over
    the positions with ``discrete_obs`` (a Discrete observation space)."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 5, discrete_obs: bool = False):
        self.length, self.discrete_obs = length, discrete_obs
        self.observation_space = (gym.spaces.Discrete(length + 1) if discrete_obs
                                  else gym.spaces.Box(0.0, float(length), (1,), np.float32))
        self.position = 0

    def _obs(self):
        return self.position if self.discrete_obs else np.array([self.position], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._obs(), {}

    def step(self, action):
        self.position = max(0, self.position + (1 if int(action) == 1 else -1))
        return self._obs(), -1.0, self.position >= self.length, False, {}


class EndlessEnv(gym.Env):
    """No time limit and no end: reward 1 a step, whatever the action."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, False, {}


class CueDict(gym.Env):
    """Dict observations: the best action is the observed ``cue`` (a Discrete part), beside two noise
    signs (a Box part); reward 1 when the action matches, 8 steps an episode. Optimum 8, random 8/3."""

    observation_space = gym.spaces.Dict({"signs": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                                         "cue": gym.spaces.Discrete(3)})
    action_space = gym.spaces.Discrete(3)

    def _obs(self):
        self.cue = int(self.np_random.integers(3))
        return {"cue": self.cue, "signs": self.np_random.choice([-1.0, 1.0], size=2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._obs(), reward, False, self.t >= 8, {}


class FaultyLineEnv(LineEnv):
    """``LineEnv`` that fails at its ``after_steps``-th step: ``fault`` "raise" raises a RuntimeError,
    "kill" SIGKILLs its own process. Once per ``marker`` file (made as it fails), or every time with
    ``always``: a fault that a retry gets past, or one that it does not."""

    def __init__(self, marker: str, fault: str = "raise", after_steps: int = 100, always: bool = False):
        super().__init__()
        self.marker, self.fault, self.after_steps, self.always, self.steps = marker, fault, after_steps, always, 0

    def step(self, action):
        self.steps += 1
        if self.steps >= self.after_steps and (self.always or not os.path.exists(self.marker)):
            with open(self.marker, "a") as f:
                f.write(f"{os.getpid()}\n")
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"injected fault after {self.steps} steps")
        return super().step(action)


gym.register("Line-v0", entry_point=LineEnv, max_episode_steps=50)
gym.register("FaultyLine-v0", entry_point=FaultyLineEnv, max_episode_steps=50)
gym.register("Endless-v0", entry_point=EndlessEnv)
gym.register("CueDict-v0", entry_point=CueDict)
