"""Sweeps on Ray: every trial an ordinary run directory, faults retried from checkpoints, re-runs that
resume and never rewrite a finished trial, Ctrl-C that keeps every checkpoint, statistics that are
those of the trials' results."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ppo_np import PPO, stats
from ppo_np.rundir import CHECKPOINT_NAME
from ppo_np.sweep import RESULT_NAME, SweepSpec, parse_grid_values, parse_seeds, plan, run_sweep, run_trial

TESTS = Path(__file__).parent
TINY = {"num_envs": 2, "num_steps": 16, "minibatch_size": 16, "update_epochs": 1, "hidden_sizes": (8, 8),
        "checkpoint_every": 1}


@pytest.fixture(scope="module")
def ray_instance():
    """One embedded Ray instance for the module (the sweep uses a running one), whose workers import
    the tests' environments."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, as the sweep's own instance
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray
        ray.shutdown()


def files_of(directory: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_every_trial_is_a_run_directory_and_the_summary_is_its_results(tmp_path, ray_instance):
    spec = SweepSpec(env="CartPole-v1", seeds=(0, 1, 2), grid={"gae_lambda": [0.9, 0.8]}, fixed=TINY,
                     total_steps=96, eval_episodes=2)
    summary = run_sweep(spec, tmp_path / "sweep")
    assert [c["label"] for c in summary["configurations"]] == ["gae_lambda=0.9", "gae_lambda=0.8"]
    for config in summary["configurations"]:
        returns = []
        for seed in (0, 1, 2):
            run = tmp_path / "sweep" / config["label"] / f"seed-{seed}"
            saved = json.loads((run / "config.json").read_text())
            assert (saved["seed"], saved["gae_lambda"], saved["num_steps"]) == (seed, config["point"]["gae_lambda"], 16)
            agent = PPO.load(run / CHECKPOINT_NAME)  # an ordinary run: it loads and evaluates alike
            result = json.loads((run / RESULT_NAME).read_text())
            assert agent.global_step == result["steps"] == 96
            returns.append(result["final_return"])
        assert config["final_returns"] == returns and config["seeds"] == [0, 1, 2] and config["unfinished"] == []
        assert config["iqm"] == stats.interval_estimates(returns)["iqm"]
        assert config["iqm"]["ci_low"] <= config["iqm"]["value"] <= config["iqm"]["ci_high"]
    assert (tmp_path / "sweep" / "curves.png").stat().st_size > 0
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())["configurations"] == summary["configurations"]

    before = {p: v for p, v in files_of(tmp_path / "sweep").items() if p.name not in ("summary.json", "curves.png")}
    again = run_sweep(spec, tmp_path / "sweep")  # finished: nothing runs, nothing is rewritten
    assert again["configurations"] == summary["configurations"]
    filled, trials = plan(spec, tmp_path / "sweep")
    assert run_trial(filled.to_dict(), trials[0]) == json.loads((Path(trials[0].run_dir) / RESULT_NAME).read_text())
    assert {p: v for p, v in files_of(tmp_path / "sweep").items() if p in before} == before  # not even by a retry
    with pytest.raises(ValueError, match="holds another sweep .*seeds"):
        run_sweep(SweepSpec(env="CartPole-v1", seeds=(0, 1), grid={"gae_lambda": [0.9, 0.8]}, fixed=TINY,
                            total_steps=96, eval_episodes=2), tmp_path / "sweep")
    with pytest.raises(ValueError, match="holds another sweep .*grid"):  # the same grid in another order names
        run_sweep(dataclasses.replace(spec, grid={"gae_lambda": [0.9, 0.8], "gamma": [0.99]}), tmp_path / "grid")
        run_sweep(dataclasses.replace(spec, grid={"gamma": [0.99], "gae_lambda": [0.9, 0.8]}), tmp_path / "grid")


def test_a_trial_that_raises_is_retried_from_its_checkpoint_and_one_that_keeps_failing_is_reported(
        tmp_path, ray_instance):
    once = SweepSpec(env="custom_envs:FaultyLine-v0", seeds=(0,), fixed=TINY, total_steps=160, eval_episodes=1,
                     env_kwargs={"marker": str(tmp_path / "raised"), "after_steps": 50})
    summary = run_sweep(once, tmp_path / "once", retries=1)
    assert summary["configurations"][0]["unfinished"] == [] and (tmp_path / "raised").exists()
    # the env fails in update 4's rollout; the retry continues from update 3's checkpoint: each update once
    assert updates_and_starts(tmp_path / "once" / "default" / "seed-0") == ([1, 2, 3, 4, 5], [0, 0, 0, 96, 96])

    always = SweepSpec(env="custom_envs:FaultyLine-v0", seeds=(0, 1), fixed=TINY, total_steps=160, eval_episodes=1,
                       env_kwargs={"marker": str(tmp_path / "failing"), "after_steps": 1, "always": True})
    summary = run_sweep(always, tmp_path / "always", retries=2)
    unfinished = summary["configurations"][0]["unfinished"]
    assert [u["seed"] for u in unfinished] == [0, 1]
    assert all(u["error"] == "RuntimeError: injected fault after 1 steps" for u in unfinished)
    assert len((tmp_path / "failing").read_text().split()) == 2 * 3  # each trial: its try and two retries
    assert summary["configurations"][0]["final_returns"] == [] and "iqm" not in summary["configurations"][0]


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def sweep_command(env_id: str, out: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "ppo_np", "sweep", env_id, "--out", str(out), "--no-progress", "--eval-episodes",
            "1", *(f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY.items()),
            *argv]


def updates_and_starts(run: Path) -> tuple[list[int], list[int]]:
    """The update numbers of a trial's metrics.csv, and the step at which the learn call of each row started
    (steps_per_s counts the steps of that call: step - steps_per_s * wall_s)."""
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    starts = [round(float(r["step"]) - float(r["steps_per_s"]) * float(r["wall_s"])) for r in rows]
    return [int(r["update"]) for r in rows], starts


@pytest.mark.slow
def test_a_trial_whose_worker_is_killed_is_retried_from_its_checkpoint(tmp_path):
    marker = tmp_path / "killed"
    done = subprocess.run(sweep_command("custom_envs:FaultyLine-v0", tmp_path / "sweep", "--seeds", "0",
                                        "--total-steps", "160", "--json", "--env-kwargs", f"marker={marker}",
                                        "after_steps=50", "fault=kill"),
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert marker.read_text().count("\n") == 1  # one worker SIGKILLed itself, mid-trial
    assert json.loads(done.stdout)["configurations"][0]["seeds"] == [0]
    # the embedded Ray instance lives on loopback: its node is 127.0.0.1, not this machine's address
    assert json.loads((tmp_path / "sweep" / "default" / "seed-0" / RESULT_NAME).read_text())["node"] == "127.0.0.1"
    assert updates_and_starts(tmp_path / "sweep" / "default" / "seed-0") == ([1, 2, 3, 4, 5], [0, 0, 0, 96, 96])


@pytest.mark.slow
def test_ctrl_c_keeps_every_checkpoint_and_the_same_command_resumes_the_sweep(tmp_path):
    out = tmp_path / "sweep"
    command = sweep_command("custom_envs:Line-v0", out, "--seeds", "0-3", "--total-steps", "8000", "--workers", "2")
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("default/seed-*/" + CHECKPOINT_NAME))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "run the same command again to resume" in stderr, stderr
    started = sorted(out.glob("default/seed-*"))
    assert len(started) == 2 and not any((d / RESULT_NAME).exists() for d in started)
    stopped_at = {d.name: PPO.load(d / CHECKPOINT_NAME).global_step for d in started}
    assert all(0 < step < 8000 for step in stopped_at.values())

    finished = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    for seed in range(4):
        run = out / "default" / f"seed-{seed}"
        assert json.loads((run / RESULT_NAME).read_text())["steps"] == 8000
        updates, starts = updates_and_starts(run)
        assert updates == list(range(1, 8000 // 32 + 1))
        resumed_at = stopped_at.get(run.name, 0)  # the interrupted ones continued from their checkpoints
        assert sorted(set(starts)) == sorted({0, resumed_at})


def test_seed_and_grid_syntax():
    assert parse_seeds("0-3,8") == (0, 1, 2, 3, 8) and parse_seeds("5") == (5,)
    assert parse_grid_values("[64,64],[32,32]") == ["[64,64]", "[32,32]"]
    for bad in ("a-3", "3-1"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="empty value"):
        parse_grid_values("0.9,,0.8")


def test_bad_sweeps_are_refused_before_anything_is_written(tmp_path):
    for spec, message in (
            (SweepSpec(env="CartPole-v1", seeds=(0,), grid={"gamma": [0.9, 2.0]}), "gamma must be in"),
            (SweepSpec(env="CartPole-v1", seeds=(0, 0)), "seeds must differ"),
            (SweepSpec(env="CartPole-v1", seeds=(0,), grid={"seed": [1]}), "set by the seeds"),
            (SweepSpec(env="CartPole-v1", seeds=(0,), fixed={"seed": 1}), "set by its seeds"),
            (SweepSpec(env="CartPole-v1", seeds=(0,), grid={"learning_rate": [1e-3, 0.001]}), "comes twice"),
            (SweepSpec(env="CartPole-v1", seeds=(0,), grid={"hidden_sizes": [(64,), (64,)]}), "comes twice"),
            (SweepSpec(env="NoSuchEnv-v0", seeds=(0,)), "unknown environment id")):
        with pytest.raises(ValueError, match=message):
            run_sweep(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_probability_of_improvement_and_iqm_laws():
    x, y = np.array([1.0, 2, 3, 4]), np.array([0.5, 1.5, 2.5])
    assert stats.probability_of_improvement(x, x)["value"] == 0.5
    p = stats.probability_of_improvement(x, y)
    assert p["value"] == pytest.approx(np.mean([[a > b for b in y] for a in x]))
    assert p["value"] + stats.probability_of_improvement(y, x)["value"] == pytest.approx(1.0)
    assert p["ci_low"] <= p["value"] <= p["ci_high"]
    # the middle half of 8 runs: the 3rd to 6th, whatever the outliers
    assert stats.iqm(np.array([0.0, 10, 11, 12, 13, 1000, 14, 20])) == pytest.approx(np.mean([11, 12, 13, 14]))


def test_the_command_line_sweeps_compares_and_refuses_in_one_line(tmp_path, ray_instance, capsys, monkeypatch):
    from ppo_np.cli import main

    common = ["--seeds", "0-2", "--total-steps", "64", "--eval-episodes", "1", "--no-progress",
              *(f"--set={k}={v}" for k, v in TINY.items() if k != "hidden_sizes")]
    assert main(["sweep", "CartPole-v1", "--out", str(tmp_path / "a"), "--grid", "hidden_sizes=[8,8],[4]",
                 *common]) == 0
    table = capsys.readouterr().out
    assert "hidden_sizes=8x8" in table and "hidden_sizes=4" in table and "IQM" in table
    assert json.loads((tmp_path / "a" / "hidden_sizes=4" / "seed-2" / "config.json").read_text())["hidden_sizes"] == [4]
    assert main(["sweep", "CartPole-v1", "--out", str(tmp_path / "b"), "--json", *common]) == 0
    b = json.loads(capsys.readouterr().out)
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "b"), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)["pairs"][0]
    assert same["probability_of_improvement"]["value"] == 0.5 and same["seeds_a"] == len(b["configurations"][0]["seeds"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.count(" vs default (3 seeds): ") == 2
    for argv, fragment in ((["sweep", "CartPole-v1", "--seeds", "2-1"], "runs backwards"),
                           (["sweep", "CartPole-v1", "--grid", "gamma=0.9", "--grid", "gamma=0.8"], "given twice"),
                           (["compare", str(tmp_path), str(tmp_path / "b")], "holds no sweep"),
                           (["sweep", "CartPole-v1", "--out", str(tmp_path / "a"), *common[:2], "--set",
                             "gamma=0.9"], "holds another sweep")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and fragment in err and err.count("\n") == 1, err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(SystemExit) as info:
        main(["sweep", "CartPole-v1", "--out", str(tmp_path / "c"), *common])
    assert info.value.code == 2 and "pip install 'ppo-np[sweep]'" in capsys.readouterr().err
