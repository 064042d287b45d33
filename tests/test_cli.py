"""The command line: train/eval JSON contracts, and bad input as exit status 2 with one clear line."""
import csv
import json

import pytest

from ppo_np.cli import main

SMALL = ["--num-envs", "2", "--num-steps", "16", "--minibatch-size", "16", "--update-epochs", "1",
         "--eval-episodes", "2", "--no-progress"]


def test_train_json_then_eval_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run), "--json", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"env_id", "total_steps", "wall_s", "steps_per_s", "mean_return_last20", "eval_mean_return"} <= set(summary)
    assert summary["env_id"] == "CartPole-v1" and summary["total_steps"] == 64
    assert {"config.json", "metrics.csv", "checkpoint.npz"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["num_envs"] == 2

    assert main(["eval", str(run), "--episodes", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"mean_return", "std_return", "episodes", "mean_length", "capped_episodes",
                           "max_episode_steps", "seed"} and result["episodes"] == 3

    assert main(["train", "--resume", str(run), "--total-steps", "96", "--json", "--eval-episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["total_steps"] == 96


def test_gradcheck_of_a_run_checks_each_term_on_its_own_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "Pendulum-v1", "--total-steps", "64", "--run-dir", str(run), "--json", *SMALL,
                 "--hidden-sizes", "4,4", "--algo", "penalty"]) == 0
    capsys.readouterr()
    assert main(["gradcheck", str(run), "--json", "--samples", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and {c["component"] for c in result["checks"]} == {
        "run-surrogate_inside_clip", "run-surrogate_outside_clip", "run-kl_penalty", "run-value"}  # c_e = 0
    assert set(result["checks"][0]) == {"component", "param", "max_rel_error", "ok"}


def test_a_custom_env_from_a_user_module_trains_resumes_and_evaluates(tmp_path, capsys):
    """``module:EnvId`` imports the module that registers the env; its kwargs are saved with the run."""
    run = tmp_path / "run"
    assert main(["train", "custom_envs:Line-v0", "--env-kwargs", "length=3", "discrete_obs=true",
                 "--total-steps", "64", "--run-dir", str(run), "--json", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["env_id"] == "custom_envs:Line-v0"
    saved = json.loads((run / "config.json").read_text())
    assert saved["env_recipe"] == {"id": "custom_envs:Line-v0", "kwargs": {"length": 3, "discrete_obs": True},
                                   "wrappers": []}
    assert main(["train", "--resume", str(run), "--total-steps", "96", "--json", "--eval-episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["total_steps"] == 96
    for flags in ([], ["--stochastic"]):
        assert main(["eval", str(run), "--episodes", "2", "--seed", "1", *flags]) == 0
        out = capsys.readouterr().out
        assert out.startswith("custom_envs:Line-v0: mean return ") and ("stochastic" if flags else "deterministic") in out


def test_the_restart_command_of_a_run_without_checkpoint_rebuilds_its_env(tmp_path, capsys):
    from ppo_np.cli import _restart_command

    run = tmp_path / "run"
    assert main(["train", "custom_envs:Line-v0", "--env-kwargs", "length=3", "--wrapper",
                 "gymnasium.wrappers:RecordEpisodeStatistics", "--total-steps", "32", "--run-dir", str(run),
                 "--json", *SMALL]) == 0
    (run / "checkpoint.npz").unlink()  # as if the run had stopped before its first checkpoint
    assert _restart_command(run, None) == (
        f"ppo-np train custom_envs:Line-v0 --env-kwargs length=3 --wrapper "
        f"gymnasium.wrappers.common:RecordEpisodeStatistics --run-dir {run} ...")
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run)])
    assert _restart_command(run, None) in capsys.readouterr().err


def test_eval_reports_the_episodes_cut_by_the_step_cap(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "custom_envs:Endless-v0", "--wrapper", "gymnasium.wrappers:RecordEpisodeStatistics",
                 "--total-steps", "32", "--run-dir", str(run), "--json", *SMALL]) == 0
    assert json.loads((run / "config.json").read_text())["env_recipe"]["wrappers"] == [
        "gymnasium.wrappers.common:RecordEpisodeStatistics"]
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--max-episode-steps", "7"]) == 0
    assert capsys.readouterr().out.strip().endswith("mean return 7.00 +- 0.00 over 2 episodes (deterministic "
                                                    "actions, seed 10000); 2 cut at the step cap of 7")


def test_set_and_field_options_reach_the_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "32", "--run-dir", str(run), "--json", *SMALL,
                 "--set", "gae_lambda=0.9", "--algo", "penalty"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["gae_lambda"] == 0.9 and config["algo"] == "penalty"


@pytest.mark.parametrize("argv, fragment", [
    (["train", "CartPole-v1", "--set", "learning_rate=-1"], "learning_rate"),
    (["train", "CartPole-v1", "--set", "nonsense=1"], "nonsense"),
    (["train", "CartPole-v1", "--set", "gamma"], "key=value"),
    (["train", "no_such_module:Line-v0"], "cannot import module 'no_such_module'"),
    (["train", "CartPole-v1", "--fork", "x"], "--fork continues a saved run: it goes with --resume RUN_DIR"),
    (["train", "CartPole-v1", "--reschedule"], "--reschedule continues a saved run"),
    (["train", "custom_envs:Line-v0", "--env-kwargs", "lenght=3"], "unexpected keyword argument 'lenght'"),
    (["train", "custom_envs:Line-v0", "--env-kwargs", "length"], "key=value"),
    (["train", "custom_envs:Line-v0", "--wrapper", "no_such_module:Wrapper"], "cannot import 'no_such_module:Wrapper'"),
    (["train", "CartPole-v1", "--env-kwargs", "sutton_barto_reward=true", "--vectorization", "native"],
     "no native vectorised implementation"),
    (["train", "CartPole-v1", "--gamma", "abc"], "gamma"),
    (["train", "CartPole-v1", "--temperature", "0"], "temperature"),
    (["train", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["train", "CartPole-v1", "--total-steps", "-5"], "-5"),
    (["train"], "ENV_ID"),
    (["eval", "/nonexistent/run"], "no checkpoint"),
    (["plot", "/nonexistent/run"], "/nonexistent/run"),
    (["gradcheck", "--trials", "0"], "positive integer"),
])
def test_bad_input_exits_2_with_one_clear_line(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "32", "--run-dir", str(run), "--json", *SMALL]) == 0
    with pytest.raises(SystemExit) as info:
        main(["train", "CartPole-v1", "--total-steps", "32", "--run-dir", str(run), *SMALL])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err


def test_plot_draws_the_run_to_png(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "96", "--run-dir", str(run), "--json", *SMALL]) == 0
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not (run / "gradients.png").exists()  # the run logged no gradients

    logged = tmp_path / "logged"
    assert main(["train", "CartPole-v1", "--total-steps", "96", "--run-dir", str(logged), "--json", *SMALL,
                 "--log-gradients", "true"]) == 0
    capsys.readouterr()
    assert main(["plot", str(logged)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {logged / 'curves.png'}", f"wrote {logged / 'gradients.png'}"]
    assert (logged / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_version_print_config_the_preset_said_and_one_evaluation_seed(tmp_path, capsys):
    from ppo_np import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"ppo-np {__version__}"

    run = tmp_path / "run"
    argv = ["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run), *SMALL, "--seed", "3"]
    assert main([*argv, "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not run.exists()                                   # printed, nothing written
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((run / "config.json").read_text())
    assert printed.pop("preset") == summary["preset"] == \
        "preset CartPole-v1 (after RL Baselines3 Zoo, hyperparams/ppo.yml)"
    assert printed == saved
    assert main(["train", "--resume", str(run), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 3

    # train's own evaluation and eval's default are the same episodes
    assert main(["eval", str(run), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seed"] == summary["eval_seed"] == 3 + 10_000
    assert main(["train", "Acrobot-v1", "--total-steps", "32", "--run-dir", str(tmp_path / "b"), *SMALL]) == 0
    assert ("ppo-np train: Acrobot-v1 with the preset Acrobot-v1 (after RL Baselines3 Zoo, hyperparams/ppo.yml, "
            "without observation normalisation), 32 steps") in capsys.readouterr().err
    assert main(["train", "FrozenLake-v1", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == "generic discrete defaults (no preset for FrozenLake-v1)"
    assert main(["train", "FrozenLake-v1", "--preset", "continuous", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == \
        "preset continuous (after CleanRL's ppo_continuous_action.py defaults, ppo-np's generic continuous ones)"


@pytest.mark.parametrize("env_id", ["LunarLander-v3", "Hopper-v5", "HalfCheetah-v5"])
def test_the_box2d_and_mujoco_presets_train_evaluate_and_say_their_source(env_id, tmp_path, capsys):
    """The standard suite's Box2D and MuJoCo environments (the box2d and mujoco extras, installed by the
    test command) train from their presets, which the run names with their source and saves."""
    from ppo_np.config import PRESET_SOURCES, PRESETS

    run = tmp_path / "run"
    assert main(["train", env_id, "--total-steps", "64", "--run-dir", str(run), "--json", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["preset"] == f"preset {env_id} (after {PRESET_SOURCES[env_id]})"
    saved = json.loads((run / "config.json").read_text())
    small = {"num_envs", "num_steps", "minibatch_size", "update_epochs"}   # the fields SMALL sets
    assert {k: v for k, v in PRESETS[env_id].items() if k not in small} == \
        {k: saved[k] for k in PRESETS[env_id] if k not in small}
    assert main(["eval", str(run), "--episodes", "1", "--max-episode-steps", "20"]) == 0
    assert capsys.readouterr().out.startswith(f"{env_id}: mean return ")


def test_run_files_honour_the_umask(tmp_path):
    import os
    import stat

    previous = os.umask(0o027)
    try:
        assert main(["train", "CartPole-v1", "--total-steps", "32", "--run-dir", str(tmp_path / "r"), "--json",
                     *SMALL]) == 0
    finally:
        os.umask(previous)
    for name in ("checkpoint.npz", "config.json", "metrics.csv", ".lock"):
        assert stat.S_IMODE((tmp_path / "r" / name).stat().st_mode) == 0o640, name


@pytest.mark.parametrize("damage, fragment", [
    ("garbage", "line 2 is not a row ppo-np wrote"),
    ("missing folder", "cannot write"),
    ("read-only", "cannot write"),
])
def test_plot_refuses_bad_files_and_places_in_one_line(tmp_path, capsys, damage, fragment):
    import os

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "32", "--run-dir", str(run), "--json", *SMALL]) == 0
    capsys.readouterr()
    argv = ["plot", str(run)]
    if damage == "garbage":
        (run / "metrics.csv").write_text("update,step,episode_return\nabc,def,1\n")
    elif damage == "missing folder":
        argv += ["--out", str(tmp_path / "no" / "such" / "folder" / "x.png")]
    else:
        os.chmod(run, 0o555)
        if os.access(run, os.W_OK):  # root writes anyway: make the PNG's path a directory instead
            os.chmod(run, 0o755)
            (run / "curves.png").mkdir()
    try:
        with pytest.raises(SystemExit) as info:
            main(argv)
    finally:
        os.chmod(run, 0o755)
    err = capsys.readouterr().err
    assert info.value.code == 2 and fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_may_change_a_few_fields_recorded_and_fork_leaves_the_original_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run), "--json", *SMALL,
                 "--set", "lr_schedule=constant"]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    fork = tmp_path / "fork"
    assert main(["train", "--resume", str(run), "--fork", str(fork), "--total-steps", "128", "--learning-rate",
                 "1e-4", "--set", "max_grad_norm=1.0", "--json", "--eval-episodes", "1"]) == 0
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before          # the original, byte for byte
    saved = json.loads((fork / "config.json").read_text())
    assert saved["learning_rate"] == 1e-4 and saved["max_grad_norm"] == 1.0
    assert saved["config_changes"] == [{"update": 2, "field": "max_grad_norm", "old": 0.5, "new": 1.0},
                                       {"update": 2, "field": "learning_rate", "old": 1e-3, "new": 1e-4}]
    with open(fork / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]                 # its history, then its own updates
    assert [float(r["learning_rate"]) for r in rows] == [1e-3] * 2 + [1e-4] * 2
    capsys.readouterr()
    for argv, fragment in ((["--gamma", "0.9"], "--gamma cannot be combined with it (a resumed run may change "
                                                "learning_rate, ent_coef, max_grad_norm, target_kl, checkpoint_every, tensorboard)"),
                           (["--fork", str(run)], "is the run being resumed"),
                           (["--fork", str(fork)], "already holds a run")):
        with pytest.raises(SystemExit) as info:
            main(["train", "--resume", str(run), *argv])
        assert info.value.code == 2 and fragment in capsys.readouterr().err


def test_extending_a_run_says_what_its_schedules_do(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run), *SMALL,
                 "--set", "lr_schedule=linear"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--total-steps", "96", "--eval-episodes", "1", "--no-progress"]) == 0
    assert "ran over the first 64 steps; from there to 96 they hold their final values" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--total-steps", "128", "--reschedule", "--eval-episodes", "1",
                 "--no-progress"]) == 0
    assert "now run over 128 steps, from their values at step 96" in capsys.readouterr().err
    with open(run / "metrics.csv") as f:
        lrs = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([1e-3, 1e-3 * (1 - 32 / 64), 0.0, 1e-3 * (1 - 96 / 128)])


@pytest.mark.parametrize("command", ["eval", "gradcheck", "study", "plot"])
@pytest.mark.parametrize("place", ["missing", "empty dir", "damaged checkpoint", "a csv for a checkpoint"])
def test_every_command_refuses_bad_paths_in_one_line(tmp_path, capsys, command, place):
    path = tmp_path / "x"
    if place == "empty dir":
        path.mkdir()
    elif place == "damaged checkpoint":
        path.mkdir()
        (path / "checkpoint.npz").write_bytes(b"PK\x03\x04 not really a zip")
        (path / "metrics.csv").write_text("update,step\n1,oops\n")
    elif place == "a csv for a checkpoint":
        path = tmp_path / "metrics.csv"
        path.write_text("update,step\n1,32\n")
    with pytest.raises(SystemExit) as info:
        main([command, str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"ppo-np {command}: error: ") and str(path.name) in err
