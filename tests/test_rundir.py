"""The run directory: one writer at a time (an OS lock that dies with its holder), and no run written over."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from ppo_np import PPO, PPOConfig
from ppo_np.rundir import CHECKPOINT_NAME, LOCK_NAME, RunDirectoryInUse, RunLock

TINY = dict(num_envs=2, num_steps=16, minibatch_size=16, update_epochs=1, hidden_sizes=(8, 8))
CLI_TINY = ["--num-envs", "2", "--num-steps", "16", "--minibatch-size", "16", "--update-epochs", "1",
            "--hidden-sizes", "8,8", "--eval-episodes", "1", "--no-progress"]


def cli(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "ppo_np", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    try:
        with pytest.raises(RunDirectoryInUse, match=f"is in use by pid {os.getpid()}, started "):
            RunLock(tmp_path).acquire()
        agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path / "sub")
        agent.learn(32)  # another directory: no conflict
        with pytest.raises(RunDirectoryInUse, match=f"pid {os.getpid()}"):
            PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path).learn(32)
        assert not (tmp_path / "metrics.csv").exists()   # refused before the first file was touched
        run = cli("train", "CartPole-v1", "--run-dir", str(tmp_path), "--total-steps", "32", *CLI_TINY)
        _, err = run.communicate(timeout=120)
        assert run.returncode == 2 and f"in use by pid {os.getpid()}" in err and "Traceback" not in err
    finally:
        lock.release()
    RunLock(tmp_path).acquire()  # released: free to take


def test_a_sigkilled_holders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ppo_np.rundir import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirectoryInUse, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    lock = RunLock(tmp_path)
    lock.acquire()   # the OS released the dead holder's lock
    assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()}, started ")
    lock.release()


def test_the_api_writes_over_no_run_and_refuses_empty_or_current_directories(tmp_path, monkeypatch):
    agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path)
    agent.learn(32)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    with pytest.raises(ValueError, match=r"already holds a run; resume it with PPO.load"):
        PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path)
    PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path, overwrite=True)            # told to
    PPO.load(tmp_path / CHECKPOINT_NAME, run_dir=tmp_path).learn(64)                     # resumed: its own
    with pytest.raises(ValueError, match="run_dir is empty"):
        PPO("CartPole-v1", PPOConfig(**TINY), run_dir="")
    monkeypatch.chdir(tmp_path)
    for here in (".", str(tmp_path)):
        with pytest.raises(ValueError, match="is the current directory"):
            PPO("CartPole-v1", PPOConfig(**TINY), run_dir=here)


@pytest.mark.slow
def test_two_concurrent_trainings_of_one_directory_one_refused_nothing_interleaved(tmp_path):
    run = tmp_path / "run"
    first = cli("train", "CartPole-v1", "--run-dir", str(run), "--total-steps", "100000", *CLI_TINY)
    deadline = time.time() + 120
    while not (run / "metrics.csv").exists() and time.time() < deadline:   # the first holds the lock now
        time.sleep(0.1)
    second = cli("train", "CartPole-v1", "--run-dir", str(run), "--total-steps", "100000", *CLI_TINY)
    _, err = second.communicate(timeout=120)
    # refused by the lock, or (once the first has written its first checkpoint) as a directory holding a run
    assert second.returncode == 2 and (f"in use by pid {first.pid}" in err or "already holds a run" in err), err
    resumed = cli("train", "--resume", str(run))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 2 and f"in use by pid {first.pid}" in err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    with open(run / "metrics.csv", newline="") as f:
        updates = [int(r["update"]) for r in csv.DictReader(f)]
    assert updates == list(range(1, len(updates) + 1)) and updates[-1] == -(-100000 // 32)  # ceil: the last update may overshoot


def test_a_lock_handed_to_the_agent_must_be_its_directorys_and_held_and_goes_with_it(tmp_path):
    agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path / "run")
    other = RunLock(tmp_path / "other")
    other.acquire()
    with pytest.raises(ValueError, match="not a held lock of the run directory"):
        agent.hold_run_dir(other)
    own = RunLock(tmp_path / "run")
    with pytest.raises(ValueError, match="not a held lock"):
        agent.hold_run_dir(own)  # not held
    own.acquire()
    assert agent.hold_run_dir(own)
    agent.learn(64)                 # runs under the handed lock
    with pytest.raises(RunDirectoryInUse):
        PPO.load(tmp_path / "run" / CHECKPOINT_NAME, run_dir=tmp_path / "run").hold_run_dir()
    agent.close()
    assert not own.held
