"""The benchmark scripts start: each one's --help runs (they import one another, and a name moved in one
broke another unnoticed once); bench_train, the README's speed table, runs end to end on a few steps (a
function lost in an edit once failed it only after a 13-minute run). Their measurements are never
asserted here: timing belongs to benchmarks/."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted(p for p in (Path(__file__).parent.parent / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_benchmark_script_starts(script):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_bench_train_runs_end_to_end_on_a_few_steps(tmp_path):
    """Both env backends, the breakdown, the plot and the JSON, on 512 steps of cartpole-zoo (ppo-np alone)."""
    png = tmp_path / "wallclock.png"
    done = subprocess.run([sys.executable, str(SCRIPTS[0].parent / "bench_train.py"), "--configs", "cartpole-zoo",
                           "--seeds", "1", "--total-steps", "512", "--env-backend", "gymnasium,numba", "--breakdown",
                           "--json", "--plot", str(png), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [c["ppo_np_envs"]["env_backend"] for c in report["configs"]] == ["gymnasium", "numba"]
    phases = [c["breakdown"]["phase_times_s"] for c in report["configs"]]
    assert phases[0]["env_step"] > 0 and phases[0]["rollout"] == 0       # the per-step collector
    assert phases[1]["rollout"] > 0 and phases[1]["env_step"] == 0        # the compiled one
    assert png.stat().st_size > 0


def test_bench_defaults_trains_each_candidate_as_given_never_the_env_preset(tmp_path, monkeypatch):
    """The study of the generic defaults on an env with a preset (CartPole-v1, Pendulum-v1) trains each
    candidate's config field for field; the shipped defaults are its "generic" candidate."""
    import importlib
    import os

    from ppo_np.config import PRESETS, PPOConfig
    from ppo_np.sweep import SweepSpec, plan

    # bench_train sets NUMBA_NUM_THREADS when imported; monkeypatch puts it back as it was
    monkeypatch.setenv("NUMBA_NUM_THREADS", os.environ.get("NUMBA_NUM_THREADS", "1"))
    monkeypatch.syspath_prepend(str(SCRIPTS[0].parent))
    bench_defaults = importlib.import_module("bench_defaults")
    for kind, env in (("discrete", "CartPole-v1"), ("continuous", "Pendulum-v1")):
        assert bench_defaults.CANDIDATES[kind]["generic"] is PRESETS[kind]
        for name, values in bench_defaults.CANDIDATES[kind].items():
            fixed = bench_defaults.candidate_config(values)
            _, trials = plan(SweepSpec(env=env, seeds=(3,), fixed=fixed), tmp_path / kind / name)
            assert PPOConfig.from_json(trials[0].config) == PPOConfig(**values, seed=3), (env, name)
