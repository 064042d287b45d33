"""The README's example of ``ppo-np study``: CartPole-v1, its preset, seed 1, stopped at 8,192 of its
100,000 steps (mid-way through learning: training return about 110), then studied.

    python benchmarks/study_example.py [--out benchmarks/figures]

Prints the study's summary and writes study.json and the four PNGs to ``--out`` (the README shows
study_concentration.png and study_landscape.png). About 25 s on one core.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ppo_np import PPO, PPOConfig
from ppo_np.plot import _pyplot
from ppo_np.study import plot_study, run_study, study_summary

STOP_AT = 8_192


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "figures"), help="where the JSON and PNGs go")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        agent = PPO("CartPole-v1", PPOConfig.for_env("CartPole-v1", seed=1), run_dir=tmp)
        agent.learn(100_000, callback=lambda a, row: a.global_step < STOP_AT)
        start = time.perf_counter()
        result = run_study(agent, landscape_episodes=32, progress=True)
        wall = time.perf_counter() - start
        agent.close()
    (out / "study.json").write_text(json.dumps(result, indent=2))
    plot_study(result, out, _pyplot())
    print(study_summary(result))
    print(f"study: {wall:.1f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
