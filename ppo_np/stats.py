"""Statistics over seeds, as Agarwal et al. recommend ("Deep RL at the Edge of the Statistical Precipice",
NeurIPS 2021): point estimates with bootstrap confidence intervals, never a bare mean +- std.

    interval_estimates(scores)    mean, median and IQM of the runs' final scores, each with a 95% CI
    probability_of_improvement(x, y)
                                  P(X > Y) + P(X = Y) / 2 for a run X of one configuration and a run Y of
                                  another (the Mann-Whitney statistic over n m), with its 95% CI
    curve_band(curves)            the IQM over runs at each point of their learning curves, with its CI

The interquartile mean (IQM) is the mean of the middle 50% of the runs (``scipy.stats.trim_mean`` cutting
25% from each end): robust to an outlier seed like the median, with the smaller variance of a mean.
Intervals are percentile bootstrap intervals computed by ``scipy.stats.bootstrap`` (no hand-written
resampling). The paper's bootstrap is stratified by task; a sweep's configuration is one task, so
its runs are resampled, and with two configurations each is resampled within itself. One run gives
no interval (bounds None). scipy is part of the ``sweep`` extra and imported here only.
"""
from __future__ import annotations

import numpy as np

#: bootstrap resamples of every interval; the percentile bounds move by about 0.01 std from run to run
RESAMPLES = 2000
CONFIDENCE = 0.95


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """The interquartile mean: the mean of the runs left once 25% are cut from each end."""
    from scipy.stats import trim_mean

    return trim_mean(scores, 0.25, axis=axis)


STATISTICS = {"mean": np.mean, "median": np.median, "iqm": iqm}


def interval_estimates(scores, seed: int = 0) -> dict[str, dict[str, float]]:
    """``{"mean" | "median" | "iqm": {"value", "ci_low", "ci_high"}}`` of the runs' ``scores``."""
    scores = _scores(scores)
    return {name: _estimate(lambda x, axis, f=statistic: f(x, axis=axis), (scores,), seed)
            for name, statistic in STATISTICS.items()}


def probability_of_improvement(x, y, seed: int = 0) -> dict[str, float]:
    """``{"value", "ci_low", "ci_high"}`` of P(X > Y) + P(X = Y) / 2, X a run's score in ``x``, Y in ``y``:
    0.5 when neither is better, 1 when every run of ``x`` beats every run of ``y``."""
    return _estimate(_improvement, (_scores(x), _scores(y)), seed)


def curve_band(curves: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IQM, CI low, CI high) at each point of ``curves``, an array (runs, points)."""
    curves = np.asarray(curves, np.float64)
    value = iqm(curves, axis=0)
    if curves.shape[0] < 2:
        return value, np.full_like(value, np.nan), np.full_like(value, np.nan)
    low, high = _bootstrap(lambda x, axis: iqm(x, axis=axis), (curves,), seed, axis=0)
    return value, low, high


def _scores(scores) -> np.ndarray:
    scores = np.asarray(scores, np.float64).ravel()
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be finite numbers, at least one; got {scores.tolist()}")
    return scores


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 over all pairs; vectorised over the leading axes of resamples."""
    x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
    return np.mean((x > y) + 0.5 * (x == y), axis=(-2, -1))


def _estimate(statistic, samples: tuple[np.ndarray, ...], seed: int) -> dict[str, float]:
    value = float(statistic(*samples, axis=-1))
    if min(len(s) for s in samples) < 2:
        return {"value": value, "ci_low": None, "ci_high": None}
    low, high = _bootstrap(statistic, samples, seed)
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def _bootstrap(statistic, samples: tuple[np.ndarray, ...], seed: int, axis: int = -1):
    from scipy.stats import bootstrap

    if all(np.ptp(s, axis=axis).max() == 0 for s in samples):  # every resample gives the one value
        value = statistic(*samples, axis=axis)
        return value, value
    result = bootstrap(samples, statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
                       vectorized=True, paired=False, axis=axis, rng=np.random.default_rng(seed))
    return result.confidence_interval.low, result.confidence_interval.high
