r"""Running statistics for observation normalisation and return-based reward scaling.

Running mean and variance by the parallel merge of Chan et al. (1979): a running (mean, var, count)
and a batch (mu_b, var_b, n_b) combine as

    n = count + n_b,    d = mu_b - mean,
    mean' = mean + d n_b / n,
    var'  = (var count + var_b n_b + d^2 count n_b / n) / n,

which equals the mean and (population) variance of all samples seen, in one pass per batch.

Observation normalisation: o' = clip((o - mean) / sqrt(var + eps), -c, c).

Reward scaling (as in the PPO implementation details literature): keep a per-environment discounted
return G_t = gamma G_{t-1} + r_t (reset to 0 when an episode ends), track Var[G] with the running
statistics, and feed the update r_t / sqrt(Var[G] + eps), clipped to +-c. The mean is not subtracted:
shifting rewards changes which behaviour is optimal in episodic tasks; scaling does not.

Both normalisers are part of the agent: their statistics are checkpointed, and frozen (``update=False``)
at evaluation.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-8


class RunningMeanStd:
    """Mean and variance of every vector seen so far, per coordinate."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4  # a tiny prior count keeps the first merge well defined

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch of shape (n, *shape)."""
        batch = np.asarray(batch, dtype=np.float64)
        n_b = batch.shape[0]
        mu_b, var_b = batch.mean(axis=0), batch.var(axis=0)
        n = self.count + n_b
        delta = mu_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.var = (self.var * self.count + var_b * n_b + delta**2 * (self.count * n_b / n)) / n
        self.count = n

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}/mean": self.mean.copy(), f"{prefix}/var": self.var.copy(),
                f"{prefix}/count": np.array(self.count)}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        for key in ("mean", "var"):
            value = np.asarray(state[f"{prefix}/{key}"], dtype=np.float64)
            if value.shape != self.mean.shape:
                raise ValueError(f"{prefix}/{key} has shape {value.shape}, expected {self.mean.shape}")
            setattr(self, key, value.copy())
        self.count = float(state[f"{prefix}/count"])


class ObsNormalizer:
    """o -> clip((o - mean) / sqrt(var + eps), -clip, clip), statistics updated from raw observations."""

    def __init__(self, shape, clip: float, enabled: bool):
        self.rms = RunningMeanStd(shape)
        self.clip = clip
        self.enabled = enabled

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        if not self.enabled:
            return obs
        if update:
            self.rms.update(obs)
        scaled = (obs - self.rms.mean) / np.sqrt(self.rms.var + EPS)
        return np.clip(scaled, -self.clip, self.clip)


class RewardScaler:
    """r_t -> clip(r_t / sqrt(Var[G] + eps), -clip, clip), with G the running discounted return per env."""

    def __init__(self, num_envs: int, gamma: float, clip: float, enabled: bool):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)  # G per environment
        self.gamma, self.clip, self.enabled = gamma, clip, enabled

    def __call__(self, rewards: np.ndarray, done: np.ndarray, valid: np.ndarray, update: bool) -> np.ndarray:
        """Scale this step's rewards; ``done`` marks episodes that ended at this step (G restarts),
        ``valid`` the environments whose step is a real transition (a vector env's reset step is not,
        and its G = 0 must not pull Var[G] down)."""
        if not self.enabled:
            return rewards
        if update:
            self.returns = self.returns * self.gamma + rewards  # G_t = gamma G_{t-1} + r_t
            if valid.any():
                self.rms.update(self.returns[valid])
            self.returns[done] = 0.0
        return np.clip(rewards / np.sqrt(self.rms.var + EPS), -self.clip, self.clip)
