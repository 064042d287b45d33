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

Both run as kernels (``normalize_obs_kernel``, ``scale_rewards_kernel``, on ``merge_moments_kernel``), so
that the compiled rollout (``rollout.rollout_kernel``) and the per-step one compute the same numbers.
``merge_moments_reference`` is the merge in NumPy; ``tests/test_normalize.py`` holds the kernels to it
(to rounding: NumPy sums a batch pairwise, the kernel row after row).
"""
from __future__ import annotations

import math

import numpy as np

from ppo_np.jit import jit

EPS = 1e-8


def merge_moments_reference(mean: np.ndarray, var: np.ndarray, count: float, batch: np.ndarray):
    """The running (mean, var, count) merged with a batch (n, *shape), in NumPy: the specification of
    ``merge_moments_kernel``. Returns the new (mean, var, count)."""
    batch = np.asarray(batch, dtype=np.float64)
    n_b = batch.shape[0]
    mu_b, var_b = batch.mean(axis=0), batch.var(axis=0)
    n = count + n_b
    delta = mu_b - mean
    new_mean = mean + delta * (n_b / n)
    new_var = (var * count + var_b * n_b + delta**2 * (count * n_b / n)) / n
    return new_mean, new_var, n


@jit
def merge_moments_kernel(mean, var, count, batch):
    """``merge_moments_reference`` for a batch (n, d) and mean, var (d,), updated in place; returns the new
    count. The batch's mean, then its (population) variance about that mean, summed row after row."""
    n_b, d = batch.shape
    n = count + n_b
    for j in range(d):
        total = 0.0
        for i in range(n_b):
            total += batch[i, j]
        mu_b = total / n_b
        squares = 0.0
        for i in range(n_b):
            squares += (batch[i, j] - mu_b) * (batch[i, j] - mu_b)
        var_b = squares / n_b
        delta = mu_b - mean[j]
        mean[j] = mean[j] + delta * (n_b / n)
        var[j] = (var[j] * count + var_b * n_b + delta * delta * (count * n_b / n)) / n
    return n


@jit
def normalize_obs_kernel(obs, moments, bounds, update, out):
    """``ObsNormalizer``: with ``update``, merge the raw observations (N, d) into moments = (mean, var, count)
    first; then out = clip((o - mean) / sqrt(var + eps), -clip, clip) (N, d), bounds = (clip, eps).
    Returns the count."""
    mean, var, count = moments
    clip, eps = bounds
    if update:
        batch = np.empty(obs.shape)
        for i in range(obs.shape[0]):
            for j in range(obs.shape[1]):
                batch[i, j] = obs[i, j]
        count = merge_moments_kernel(mean, var, count, batch)
    for j in range(obs.shape[1]):
        scale = math.sqrt(var[j] + eps)
        for i in range(obs.shape[0]):
            out[i, j] = min(max((np.float64(obs[i, j]) - mean[j]) / scale, -clip), clip)
    return count


@jit
def scale_rewards_kernel(step, returns, moments, bounds, update, out):
    """``RewardScaler``: for step = (rewards, done, valid) (N,) and moments = (mean, var, count) of G, mean
    and var (1,) views: with ``update``, G <- gamma G + r per env, Var[G] merged with the G of the valid
    envs, then G <- 0 where an episode ended; out = clip(r / sqrt(Var[G] + eps), -clip, clip) (N,),
    bounds = (gamma, clip, eps). Returns the count."""
    rewards, done, valid = step
    mean, var, count = moments
    gamma, clip, eps = bounds
    N = rewards.shape[0]
    if update:
        batch = np.empty((N, 1))
        m = 0
        for i in range(N):
            returns[i] = returns[i] * gamma + rewards[i]
            if valid[i]:
                batch[m, 0] = returns[i]
                m += 1
        if m > 0:
            count = merge_moments_kernel(mean, var, count, batch[:m])
        for i in range(N):
            if done[i]:
                returns[i] = 0.0
    scale = math.sqrt(var[0] + eps)
    for i in range(N):
        out[i] = min(max(rewards[i] / scale, -clip), clip)
    return count


class RunningMeanStd:
    """Mean and variance of every vector seen so far, per coordinate."""

    def __init__(self, shape=()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4  # a tiny prior count keeps the first merge well defined

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch of shape (n, *shape) (``merge_moments_kernel``)."""
        batch = np.asarray(batch, dtype=np.float64)
        self.count = merge_moments_kernel(*self.moments()[:2], self.count, batch.reshape(batch.shape[0], -1))

    def moments(self) -> tuple:
        """(mean, var, count) as the kernels take them: mean and var flat views, updated in place."""
        return self.mean.reshape(-1), self.var.reshape(-1), self.count

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
        """The observations (..., d) normalised (float64), after merging them into the statistics if
        ``update``; as they are when normalisation is off."""
        if not self.enabled:
            return obs
        obs = np.asarray(obs)
        rows = obs.reshape(-1, obs.shape[-1])
        out = np.empty(rows.shape)
        self.rms.count = normalize_obs_kernel(rows, self.rms.moments(), (self.clip, EPS), update, out)
        return out.reshape(obs.shape)


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
        out = np.empty(len(rewards))
        step = (np.asarray(rewards, np.float64), done, valid)
        self.rms.count = scale_rewards_kernel(step, self.returns, self.rms.moments(), (self.gamma, self.clip, EPS),
                                              update, out)
        return out
