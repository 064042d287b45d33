"""Wall time per phase of training, accumulated in a plain dict: ``with timer("optimizer"): ...``.

A context manager keeps the update loop in the algorithm's order: each phase is one indented block
instead of clock readings interleaved with the steps they measure.
"""
from __future__ import annotations

import time


class PhaseTimer:
    """``with timer(phase):`` adds the block's wall seconds to ``times[phase]`` (created at 0.0).

    ``times`` is the caller's dict, shared with whoever else fills or reads it (``PPO.phase_times``,
    which the rollout's ``Collector`` fills too and ``benchmarks/bench_train.py`` reports). Blocks may
    nest: each ``timer(phase)`` call is its own clock.
    """

    __slots__ = ("times",)

    def __init__(self, times: dict[str, float]):
        self.times = times

    def __call__(self, phase: str) -> "_Block":
        return _Block(self.times, phase)


class _Block:
    __slots__ = ("times", "phase", "start")

    def __init__(self, times: dict[str, float], phase: str):
        self.times, self.phase = times, phase

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc_info) -> None:
        self.times[self.phase] = self.times.get(self.phase, 0.0) + (time.perf_counter() - self.start)
