"""Logs read back by the tools people use: TensorBoard's own reader on the event files, and the videos of
``ppo-np eval --video`` frame by frame."""
import csv
import json
import math
import subprocess
import sys

import gymnasium as gym
import imageio_ffmpeg
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ppo_np import PPO, PPOConfig
from ppo_np.evaluation import evaluate
from ppo_np.rundir import CHECKPOINT_NAME, TENSORBOARD_NAME, TENSORBOARD_SECTIONS

TINY = dict(num_envs=2, num_steps=16, minibatch_size=16, update_epochs=1, hidden_sizes=(8, 8))
BATCH = TINY["num_envs"] * TINY["num_steps"]


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the run's event files, as TensorBoard shows them (purged events left out)."""
    events = EventAccumulator(str(run_dir / TENSORBOARD_NAME), size_guidance={"scalars": 0})
    events.Reload()
    series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return {tag: points for tag, points in series.items() if points}  # a tag whose events were all purged shows none


def csv_series(path, column) -> list[tuple[int, float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(int(r["step"]), float(r[column])) for r in rows if r[column] != "" and math.isfinite(float(r[column]))]


def assert_tensorboard_holds_the_csvs(run_dir):
    """Every value of metrics.csv, and of gradients.csv if the run has one, and nothing else."""
    series = scalars(run_dir)
    expected = {f"{section}/{column}": csv_series(run_dir / "metrics.csv", column)
                for section, columns in TENSORBOARD_SECTIONS.items() for column in columns}
    if (run_dir / "gradients.csv").exists():
        with open(run_dir / "gradients.csv", newline="") as f:
            header = next(csv.reader(f))
        assert header[:3] == ["update", "step", "grad_norm"]  # grad_norm is charted with the losses
        expected.update({f"gradients/{column}": csv_series(run_dir / "gradients.csv", column)
                         for column in header[3:]})
    expected = {tag: points for tag, points in expected.items() if points}
    assert set(series) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in series[tag]] == [s for s, _ in points], tag  # each update once, in order
        np.testing.assert_allclose([v for _, v in series[tag]], [v for _, v in points], rtol=1e-6, atol=1e-30,
                                   err_msg=tag)  # event files hold float32


def test_tensorboard_holds_every_value_of_metrics_and_gradients_csv(tmp_path):
    agent = PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True, log_gradients=True), run_dir=tmp_path / "run")
    agent.learn(4 * BATCH)
    agent.close()
    assert_tensorboard_holds_the_csvs(tmp_path / "run")
    series = scalars(tmp_path / "run")
    assert [s for s, _ in series["loss/policy_loss"]] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    assert {"schedule/learning_rate", "gradients/outside_share", "gradients/actor/W0", "gradients/critic/b2"} <= set(series)
    assert "trpo/step_size" not in series  # NaN in a PPO run's CSV: not written


def test_a_resumed_run_purges_the_events_a_stopped_run_wrote_past_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    agent = PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True, checkpoint_every=100), run_dir=run)
    agent.learn(2 * BATCH, callback=lambda a, row: a.save(tmp_path / "at2.npz") if a.update_count == 2 else None)
    agent.learn(4 * BATCH)  # events of updates 3 and 4, which the resumed run will take again
    agent.close()
    first = dict(scalars(run)["schedule/learning_rate"])
    (tmp_path / "at2.npz").replace(run / CHECKPOINT_NAME)  # as if killed after update 4 with its checkpoint at 2

    resumed = PPO.load(run / CHECKPOINT_NAME, run_dir=run)
    resumed.change_config(learning_rate=1e-2)
    resumed.learn(4 * BATCH)
    resumed.close()
    assert_tensorboard_holds_the_csvs(run)
    again = dict(scalars(run)["schedule/learning_rate"])
    assert again[2 * BATCH] == first[2 * BATCH] and again[3 * BATCH] == pytest.approx(1e-2)
    assert first[3 * BATCH] != pytest.approx(1e-2)  # the stale event existed, and is gone


def test_a_run_written_over_leaves_none_of_the_old_runs_events(tmp_path):
    run = tmp_path / "run"
    old = PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True, log_gradients=True), run_dir=run)
    old.learn(4 * BATCH)
    old.close()
    new = PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True, seed=1), run_dir=run, overwrite=True)
    new.learn(2 * BATCH)
    new.close()
    assert not (run / "gradients.csv").exists()
    assert_tensorboard_holds_the_csvs(run)  # no gradients/ tags left
    assert [s for s, _ in scalars(run)["loss/policy_loss"]] == [BATCH, 2 * BATCH]


def test_tensorboard_turned_on_when_resuming_gets_the_earlier_updates_from_the_csvs(tmp_path):
    run = tmp_path / "run"
    agent = PPO("CartPole-v1", PPOConfig(**TINY, log_gradients=True), run_dir=run)
    agent.learn(2 * BATCH)
    agent.close()
    assert not (run / TENSORBOARD_NAME).exists()
    resumed = PPO.load(run / CHECKPOINT_NAME, run_dir=run)
    resumed.change_config(tensorboard=True)
    resumed.learn(4 * BATCH)
    resumed.close()
    assert_tensorboard_holds_the_csvs(run)
    assert "gradients/actor/b0" in scalars(run)
    assert [s for s, _ in scalars(run)["episode/episode_length"]][:2] == [BATCH, 2 * BATCH]


def test_tensorboard_needs_a_run_directory_and_the_extra(tmp_path, monkeypatch):
    agent = PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True))  # loading such a run to evaluate is fine
    with pytest.raises(ValueError, match="tensorboard=True writes into the run directory"):
        agent.learn(BATCH)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    with pytest.raises(ValueError, match=r"pip install 'ppo-np\[tensorboard\]'"):
        PPO("CartPole-v1", PPOConfig(**TINY, tensorboard=True), run_dir=tmp_path / "run")
    plain = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path / "plain")
    with pytest.raises(ValueError, match=r"ppo-np\[tensorboard\]"):
        plain.change_config(tensorboard=True)
    assert plain.config.tensorboard is False


def test_the_cli_switch_writes_tensorboard_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ppo_np", "train", "CartPole-v1", "--run-dir", str(tmp_path / "run"),
                          "--total-steps", str(2 * BATCH), "--num-envs", "2", "--num-steps", "16", "--minibatch-size",
                          "16", "--update-epochs", "1", "--hidden-sizes", "8,8", "--eval-episodes", "1",
                          "--no-progress", "--tensorboard"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tensorboard"] is True
    assert_tensorboard_holds_the_csvs(tmp_path / "run")


# --- videos ---------------------------------------------------------------------------------------------


def frames_in(path) -> int:
    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def test_videos_record_the_episodes_of_the_evaluation_itself(tmp_path):
    agent = PPO("CartPole-v1", PPOConfig(**TINY))  # untrained: episodes of a few dozen steps
    # sampled actions: episodes of lengths 9, 20, 14, 13, which end in another order than they are numbered
    plain = evaluate(agent, episodes=4, seed=0, deterministic=False)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "episode-7.mp4").write_text("an earlier evaluation's")
    (tmp_path / "videos" / "notes.txt").write_text("the user's")
    recorded = evaluate(agent, episodes=4, seed=0, deterministic=False, video_dir=tmp_path / "videos")
    assert {k: v for k, v in recorded.items() if k != "videos"} == plain
    assert [v["path"] for v in recorded["videos"]] == [str(tmp_path / "videos" / f"episode-{j}.mp4") for j in range(4)]
    assert np.mean([v["return"] for v in recorded["videos"]]) == pytest.approx(plain["mean_return"])
    for video in recorded["videos"]:
        # one frame for the reset and one per step; moviepy's duration rounding may drop the last
        assert frames_in(video["path"]) in (video["length"], video["length"] + 1)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "episode-0.mp4", "episode-1.mp4", "episode-2.mp4", "episode-3.mp4", "notes.txt"]  # stale video gone, scratch folder too


def test_videos_of_an_env_that_cannot_render_frames_are_refused(tmp_path, monkeypatch):
    agent = PPO(gym.make("CartPole-v1"), PPOConfig(**TINY))  # an instance made without render_mode
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        evaluate(agent, episodes=1, video_dir=tmp_path / "videos")
    rendering = PPO(gym.make("CartPole-v1", render_mode="rgb_array"), PPOConfig(**TINY))
    result = evaluate(rendering, episodes=2, video_dir=tmp_path / "videos")
    assert all(frames_in(v["path"]) >= v["length"] for v in result["videos"])
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot write videos into"):
        evaluate(rendering, episodes=1, video_dir=tmp_path / "file" / "videos")
    monkeypatch.setitem(sys.modules, "moviepy", None)  # as if not installed
    with pytest.raises(ValueError, match=r"pip install 'ppo-np\[video\]'"):
        evaluate(rendering, episodes=1, video_dir=tmp_path / "videos")


def test_eval_video_on_the_command_line(tmp_path):
    agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path / "run")
    agent.learn(BATCH)
    agent.close()
    out = subprocess.run([sys.executable, "-m", "ppo_np", "eval", str(tmp_path / "run"), "--episodes", "2",
                          "--video", str(tmp_path / "videos"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [v["path"] for v in result["videos"]] == [str(tmp_path / "videos" / f"episode-{j}.mp4") for j in range(2)]
    assert all(frames_in(v["path"]) >= v["length"] for v in result["videos"])
    refused = subprocess.run([sys.executable, "-m", "ppo_np", "eval", str(tmp_path / "run"), "--video",
                              str(tmp_path / "run" / CHECKPOINT_NAME / "videos")], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "cannot write videos" in refused.stderr
