"""Faults lose nothing, and checkpoints are safe to load.

* A NaN or inf in an observation, a reward, a loss or a gradient stops training with a NonFiniteError
  naming the quantity, the update and the step; the weights are those of the last good checkpoint.
* An environment that raises in step or reset ends the run with its error shown and a checkpoint
  saved; through the CLI that is exit status 1 (even for a ValueError: it is not bad input).
* SIGKILL at random moments, during checkpoint writes included, never leaves a run directory without a
  loadable checkpoint (once it had one) and --resume finishes the run; SIGINT or SIGTERM saves and exits
  with 130 or 143.
* A checkpoint file, treated as untrusted: loading never unpickles; damaged bytes (flipped, truncated,
  inserted, zeroed) load exactly the original or raise CheckpointError, never anything else.
"""
import collections
import contextlib
import io
import math
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppo_np
from ppo_np import PPO, PPOConfig, checkpoint, cli
from ppo_np.checkpoint import CheckpointError
from ppo_np.fused import FusedLoss
from ppo_np.fused_update import FusedUpdate
from ppo_np.ppo import NonFiniteError
from ppo_np.rundir import CHECKPOINT_NAME

TINY = dict(num_envs=2, num_steps=16, minibatch_size=8, update_epochs=2, hidden_sizes=(16, 16), checkpoint_every=1)
BATCH = TINY["num_envs"] * TINY["num_steps"]
LEARNER_KEYS = ("actor/", "critic/", "adam_actor/", "adam_critic/", "ent/", "beta")


# --- environments that go wrong ---------------------------------------------------------------------------

FAULTS_ON = {"on": True}  # a switch: resuming after "fixing" the environment


class Faulty(gym.Wrapper):
    """CartPole that goes wrong after ``after`` steps (or resets) of this instance.

    fault: "obs" or "reward" (replaced by ``value`` from then on), "step" or "reset" (raise ``error``).
    """

    def __init__(self, fault: str, after: int, value: float = math.nan, error: type = RuntimeError):
        super().__init__(gym.make("CartPole-v1"))
        self.fault, self.after, self.value, self.error = fault, after, value, error
        self.steps = self.resets = 0

    def reset(self, **kwargs):
        self.resets += 1
        if self.fault == "reset" and FAULTS_ON["on"] and self.resets > self.after:
            raise self.error(f"simulator lost on reset {self.resets}")
        return self.env.reset(**kwargs)

    def step(self, action):
        self.steps += 1
        if self.fault == "step" and FAULTS_ON["on"] and self.steps > self.after:
            raise self.error(f"sensor failure at step {self.steps}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.steps > self.after and FAULTS_ON["on"]:
            if self.fault == "obs":
                obs = np.full_like(obs, self.value)
            elif self.fault == "reward":
                reward = self.value
        return obs, reward, terminated, truncated, info


def faulty_env(name: str, **kwargs) -> str:
    env_id = f"PpoNpTest/{name}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=Faulty, kwargs=kwargs, disable_env_checker=True)
    return env_id


@pytest.fixture(autouse=True)
def _faults_on():
    FAULTS_ON["on"] = True
    yield
    FAULTS_ON["on"] = True


def learner_state(arrays: dict) -> dict:
    return {k: v for k, v in arrays.items() if k.startswith(LEARNER_KEYS)}


def assert_same_arrays(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k


def no_temp_files(run: Path) -> bool:
    return not list(run.glob(".*.tmp"))


# --- 2. non-finite numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, value, quantity", [
    ("obs", math.nan, "observations"), ("obs", math.inf, "observations"),
    ("reward", math.nan, "rewards"), ("reward", -math.inf, "rewards"),
])
def test_non_finite_environment_output_stops_before_the_weights_change(tmp_path, fault, value, quantity):
    env_id = faulty_env(f"NonFinite-{fault}-{value}", fault=fault, after=40, value=value)
    agent = PPO(env_id, PPOConfig(**TINY), run_dir=tmp_path)
    with pytest.raises(NonFiniteError) as info:
        agent.learn(BATCH * 50)
    match = re.fullmatch(rf"non-finite {quantity} at update (\d+), step (\d+); weights were not changed by "
                         r"this update", str(info.value))
    assert match, str(info.value)
    update, step = int(match[1]), int(match[2])
    assert update == agent.update_count + 1 and step == update * BATCH and update >= 3
    saved = checkpoint.load(tmp_path / CHECKPOINT_NAME)  # the last good checkpoint: the update before
    assert int(saved["counters/update"]) == update - 1 and int(saved["counters/global_step"]) == (update - 1) * BATCH
    assert_same_arrays(learner_state(saved), learner_state(agent.state_arrays()))
    PPO.load(tmp_path / CHECKPOINT_NAME).close()
    assert no_temp_files(tmp_path)
    agent.close()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_non_finite_loss_or_gradient_mid_update_rolls_the_whole_update_back(tmp_path, monkeypatch, poison):
    """The NaN appears at the third minibatch of update 2: minibatches 1 and 2 have stepped Adam already,
    and must be undone, so that the weights are exactly those of the checkpoint after update 1."""
    agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=tmp_path)
    # the update's Python loop, whose loss calls can be poisoned one by one (the compiled loop's stop
    # before a non-finite step: tests/test_fused_update.py)
    agent._fused_loss = FusedLoss(agent.actor, agent.critic, TINY["minibatch_size"], compiled_passes=False)
    real_loss, calls = FusedLoss.__call__, []

    def poisoned(fused, mb, coefs, normalize_advantages=False):
        loss, stats = real_loss(fused, mb, coefs, normalize_advantages)
        if agent.update_count == 1:
            calls.append(1)
            if len(calls) == 3:
                if poison == "loss":
                    return math.nan, stats
                fused.actor_flat_grad[0] = math.inf
        return loss, stats

    monkeypatch.setattr(FusedLoss, "__call__", poisoned)
    with pytest.raises(NonFiniteError, match=rf"non-finite {'loss' if poison == 'loss' else 'gradient norm'} "
                                             rf"at update 2, step {2 * BATCH}"):
        agent.learn(BATCH * 10)
    saved = checkpoint.load(tmp_path / CHECKPOINT_NAME)
    assert int(saved["counters/update"]) == 1 == agent.update_count
    assert_same_arrays(learner_state(saved), learner_state(agent.state_arrays()))
    assert agent.global_step == BATCH  # the rollout that taught nothing is not counted
    agent.close()


def test_a_state_holding_nan_never_overwrites_a_checkpoint(tmp_path):
    agent = PPO("CartPole-v1", PPOConfig(**TINY))
    path = agent.save(tmp_path / CHECKPOINT_NAME)
    before = path.read_bytes()
    agent.obs_norm.rms.mean[0] = math.nan
    with pytest.raises(CheckpointError, match="obs_rms/mean.*non-finite"):
        agent.save(path)
    assert path.read_bytes() == before and no_temp_files(tmp_path)
    with pytest.raises(CheckpointError, match="object array"):
        checkpoint.save(path, {"x": np.array([{}], dtype=object)})
    with pytest.raises(CheckpointError, match="reserved"):
        checkpoint.save(path, {"format_version": np.array(7)})
    assert path.read_bytes() == before


# --- 5. environment faults --------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, after, error", [
    ("step", 40, RuntimeError), ("step", 40, ValueError), ("reset", 3, RuntimeError),
])
def test_an_environment_error_ends_the_run_with_a_checkpoint_that_resumes(tmp_path, fault, after, error):
    env_id = faulty_env(f"Raise-{fault}-{after}-{error.__name__}", fault=fault, after=after, error=error)
    agent = PPO(env_id, PPOConfig(**{**TINY, "checkpoint_every": 1000}), run_dir=tmp_path)
    with pytest.raises(error, match="sensor failure|simulator lost"):
        agent.learn(BATCH * 30)
    saved = checkpoint.load(tmp_path / CHECKPOINT_NAME)  # written by the fault, not by checkpoint_every
    updates = int(saved["counters/update"])
    assert updates == agent.update_count >= 1 and int(saved["counters/global_step"]) == updates * BATCH
    assert_same_arrays(learner_state(saved), learner_state(agent.state_arrays()))
    agent.close()

    FAULTS_ON["on"] = False  # the environment is fixed: the same run finishes from its checkpoint
    resumed = PPO.load(tmp_path / CHECKPOINT_NAME, run_dir=tmp_path)
    resumed.learn(BATCH * 30)
    resumed.close()
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r.split(",")[0]) for r in f.read().splitlines()[1:]] == list(range(1, 31))
    assert no_temp_files(tmp_path)


def test_an_environment_that_fails_its_first_reset_leaves_nothing_to_resume(tmp_path):
    """Nothing was learned, so nothing is saved: the run directory holds no checkpoint, and no temp file."""
    env_id = faulty_env("Raise-first-reset", fault="reset", after=0)
    agent = PPO(env_id, PPOConfig(**TINY), run_dir=tmp_path)
    with pytest.raises(RuntimeError, match="simulator lost on reset 1"):
        agent.learn(BATCH * 4)
    assert not (tmp_path / CHECKPOINT_NAME).exists() and no_temp_files(tmp_path)
    agent.close()


def run_cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv)
        except SystemExit as exc:
            status = exc.code
    return status, err.getvalue()


CLI_TINY = ["--num-envs", "2", "--num-steps", "16", "--minibatch-size", "8", "--update-epochs", "2",
            "--hidden-sizes", "16,16", "--eval-episodes", "1", "--no-progress"]


def test_cli_an_environment_error_is_a_fault_exit_1_with_checkpoint_and_resume_command(tmp_path):
    """A ValueError raised inside env.step is the environment's fault, not bad input: status 1, not 2."""
    env_id = faulty_env("Raise-step-cli", fault="step", after=40, error=ValueError)
    run = tmp_path / "run"
    status, err = run_cli(["train", env_id, "--run-dir", str(run), "--total-steps", str(BATCH * 30), *CLI_TINY])
    assert status == 1 and "Traceback" not in err, err
    assert re.search(r"training stopped by ValueError: sensor failure at step 41 \(raised at .*test_hardening\.py:\d+ "
                     r"in step\)", err), err
    saved = checkpoint.load(run / CHECKPOINT_NAME)
    assert f"checkpoint: {run / CHECKPOINT_NAME} (step {int(saved['counters/global_step'])}, " \
           f"update {int(saved['counters/update'])})" in err
    assert f"ppo-np train --resume {run}" in err
    FAULTS_ON["on"] = False
    status, err = run_cli(["train", "--resume", str(run), "--eval-episodes", "1", "--no-progress"])
    assert status == 0, err
    assert int(checkpoint.load(run / CHECKPOINT_NAME)["counters/global_step"]) == BATCH * 30


def test_cli_faults_before_the_first_checkpoint_and_non_finite_numbers(tmp_path):
    env_id = faulty_env("Raise-first-reset-cli", fault="reset", after=0)
    status, err = run_cli(["train", env_id, "--run-dir", str(tmp_path / "a"), "--total-steps", "64", *CLI_TINY])
    assert status == 1 and "RuntimeError: simulator lost on reset 1" in err and "nothing to resume" in err
    assert "Traceback" not in err
    status, err = run_cli(["train", "--resume", str(tmp_path / "a")])
    assert status == 2 and "nothing to resume" in err and re.search(r"start it again with ppo-np train \S+ --run-dir", err)

    env_id = faulty_env("NonFinite-cli", fault="reward", after=40, value=math.nan)
    status, err = run_cli(["train", env_id, "--run-dir", str(tmp_path / "b"), "--total-steps", str(BATCH * 30),
                           "--checkpoint-every", "1", *CLI_TINY])
    assert status == 1 and "Traceback" not in err
    assert re.search(r"non-finite rewards at update \d+, step \d+", err) and "last good checkpoint: " in err, err


# --- 4. untrusted checkpoint files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """(bytes, arrays, state) of a trained agent's checkpoint; (64, 64) layers make members > 4 KiB."""
    path = tmp_path_factory.mktemp("ckpt") / CHECKPOINT_NAME
    agent = PPO("CartPole-v1", PPOConfig(**{**TINY, "hidden_sizes": (64, 64)}))
    agent.learn(BATCH * 2)
    agent.save(path)
    state = agent.state_arrays()
    agent.close()
    return path.read_bytes(), checkpoint.load(path), state


def _structure_offsets(data: bytes) -> list[int]:
    """Where the zip's headers and the .npy headers start: the bytes a loader must not trust blindly."""
    marks = (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07", b"\x93NUMPY")
    return sorted(m.start() for mark in marks for m in re.finditer(re.escape(mark), data))


@st.composite
def damaged(draw, data: bytes):
    n = len(data)
    offsets = _structure_offsets(data)
    at = draw(st.one_of(st.integers(0, n - 1),
                        st.sampled_from(offsets).flatmap(lambda o: st.integers(o, min(n - 1, o + 140)))))
    kind = draw(st.sampled_from(["flip", "set", "zero", "truncate", "insert", "delete"]))
    out = bytearray(data)
    if kind == "flip":
        out[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set":
        out[at] = draw(st.integers(0, 255).filter(lambda b: b != data[at]))
    elif kind == "zero":
        length = draw(st.integers(1, 256))
        out[at:at + length] = bytes(len(out[at:at + length]))
    elif kind == "truncate":
        out = out[:at]
    elif kind == "insert":
        out[at:at] = draw(st.binary(min_size=1, max_size=64))
    else:
        del out[at:at + draw(st.integers(1, 64))]
    return bytes(out)


@pytest.mark.slow
def test_damaged_bytes_load_the_original_exactly_or_raise_checkpoint_error(real_checkpoint, tmp_path):
    data, original, state = real_checkpoint
    path = tmp_path / "damaged.npz"
    outcomes = collections.Counter()

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bad=damaged(data))
    def check(bad):
        path.write_bytes(bad)
        try:
            arrays = checkpoint.load(path)
        except CheckpointError:
            outcomes["refused with CheckpointError"] += 1
            with pytest.raises(CheckpointError):
                PPO.load(path)
            return
        outcomes["loaded the original exactly"] += 1
        assert_same_arrays(arrays, original)  # never a silent wrong load
        agent = PPO.load(path)
        assert_same_arrays(agent.state_arrays(), state)
        agent.close()

    check()
    print(f"\ndamaged checkpoints: {sum(outcomes.values())} tried: {dict(outcomes)}")


def _member_header(data: bytes, key: str) -> int:
    """Offset of the .npy header of ``key`` inside the checkpoint's bytes."""
    name = f"{key}.npy".encode()
    at = data.index(b"PK\x03\x04")  # the first local file header
    while True:
        name_len, extra_len = np.frombuffer(data[at + 26:at + 30], "<u2")
        if data[at + 30:at + 30 + name_len] == name:
            return at + 30 + int(name_len) + int(extra_len)
        at = data.index(b"PK\x03\x04", at + 4)


@pytest.mark.parametrize("old, new", [(b"(64, 64)", b"(64, 6 )"), (b"'<f4'", b"'<f2'"), (b"(64, 64)", b"(6,  64)")])
def test_a_damaged_npy_header_is_refused_though_its_data_would_parse(real_checkpoint, tmp_path, old, new):
    """np.load reads a member only as far as its header says; a header shrunk to fewer bytes never reaches
    the end of the member, where zipfile checks the CRC, and would load silently. Not here."""
    data, _, _ = real_checkpoint
    header = _member_header(data, "actor/W1")
    at = data.index(old, header, header + 128)
    bad = data[:at] + new + data[at + len(old):]
    path = tmp_path / "a.npz"
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match="CRC"):
        checkpoint.load(path)


def test_a_central_directory_entry_grown_over_the_next_ones_is_refused(real_checkpoint, tmp_path):
    """Found by the fuzz test above: a comment length of 2048 in one central-directory entry makes zipfile
    read the entries after it as that comment and drop them, with no error; the load must not be partial."""
    data, _, _ = real_checkpoint
    bad = bytearray(data)
    entry = [m.start() for m in re.finditer(b"PK\x01\x02", data)][-10]
    bad[entry + 32:entry + 34] = (2048).to_bytes(2, "little")  # the entry's comment length field
    path = tmp_path / "a.npz"
    path.write_bytes(bad)
    assert len(zipfile.ZipFile(path).infolist()) < len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    with pytest.raises(CheckpointError, match=r"declares \d+ entries, \d+ could be read"):
        checkpoint.load(path)


class _Trap:
    """Unpickling this creates a file: proof that a loader executed code from a checkpoint."""

    marker: Path = Path("/nonexistent")

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _rewrite(path: Path, arrays: dict, saver=np.savez) -> None:
    """A well-formed zip (valid CRCs) holding ``arrays``: damage no checksum can see."""
    with open(path, "wb") as f:
        saver(f, **arrays)


@pytest.mark.parametrize("craft, message", [
    (lambda a: a.update({"actor/W0": a["actor/W0"].astype(np.float16)}), "actor/W0.*dtype float16"),
    (lambda a: a.update({"actor/W0": np.full_like(a["actor/W0"], np.nan)}), "actor/W0.*non-finite"),
    (lambda a: a.update({"critic/b1": a["critic/b1"][:0]}), "critic/b1.*shape"),
    (lambda a: a.update({"config": np.array(a["config"].item().replace('"hidden_sizes": [64, 64]',
                                                                       '"hidden_sizes": [32, 32]'))}),
     "actor/W0.*shape"),
    (lambda a: a.update({"config": np.array(a["config"].item().replace('"kl_target": 0.01',
                                                                       '"kl_target": "x"'))}), "kl_target"),
    (lambda a: a.update({"config": np.array("[1, 2")}), "config is not valid JSON"),
    (lambda a: a.update({"env/recipe": np.array('{"id": "NoSuchEnv-v9"}')}), "NoSuchEnv-v9"),
    (lambda a: a.update({"env/recipe": np.array('{"id": "CartPole-v1"')}), "env/recipe is not valid JSON"),
    (lambda a: a.update({"env/recipe": np.array('["CartPole-v1"]')}), "recipe .* is not of the form"),
    (lambda a: a.update({"env/recipe": np.array('{"id": "Acrobot-v1"}')}), "observation space is Box.*\\(6,\\)"),
    (lambda a: a.update({"env/recipe": np.array("")}), "cannot rebuild from names; pass the environment again"),
    (lambda a: a.update({"env_id": np.array(["CartPole-v1"])}), "env_id.*shape"),
    (lambda a: a.update({"recent_returns": np.zeros((2, 2))}), "recent_returns.*dimensions"),
    (lambda a: a.update({"counters/global_step": np.array(-32)}), "negative counters"),
    (lambda a: a.update({"rng/action": np.array("{}")}), "RNG state"),
    (lambda a: a.pop("adam_critic/v/W0"), "missing 'adam_critic/v/W0'"),
    (lambda a: a.update({"format_version": np.array(2)}), "format version 2, newer"),
    (lambda a: a.update({"format_version": np.array(0)}), "no valid format_version"),
    (lambda a: a.update({"format_version": np.array("1")}), "no valid format_version"),
    (lambda a: a.update({"kind": np.array("something else")}), "not a ppo-np checkpoint"),
    (lambda a: a.pop("kind"), "not a ppo-np checkpoint"),
])
def test_well_formed_files_that_do_not_fit_get_a_clear_checkpoint_error(real_checkpoint, tmp_path, craft, message):
    _, original, _ = real_checkpoint
    arrays = dict(original)
    craft(arrays)
    path = tmp_path / "crafted.npz"
    _rewrite(path, arrays)
    with pytest.raises(CheckpointError, match=message):
        PPO.load(path)


def test_loading_never_unpickles_and_refuses_foreign_zips(real_checkpoint, tmp_path):
    _, original, _ = real_checkpoint
    _Trap.marker = tmp_path / "code-was-executed"
    path = tmp_path / "trap.npz"
    _rewrite(path, {**original, "trap": np.array([_Trap()], dtype=object)})
    with pytest.raises(CheckpointError, match="trap.*Object arrays cannot be loaded|allow_pickle"):
        PPO.load(path)
    assert not _Trap.marker.exists()

    _rewrite(path, original, saver=np.savez_compressed)
    with pytest.raises(CheckpointError, match="compressed"):
        checkpoint.load(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("kind.npy", b"")
        zf.writestr("setup.py", b"import os")
    with pytest.raises(CheckpointError, match="unexpected entry 'setup.py'"):
        checkpoint.load(path)
    for content in (b"", b"PK\x05\x06" + bytes(18), b"\x93NUMPY" + bytes(100), b"not a zip" * 50):
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            PPO.load(path)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        PPO.load(tmp_path)  # a directory
    assert not _Trap.marker.exists()


def test_atomic_text_writes_and_stale_temp_cleanup(tmp_path):
    target = tmp_path / "metrics.csv"
    checkpoint.write_text_atomic(target, "a\n")
    checkpoint.write_text_atomic(target, "b\n")
    assert target.read_text() == "b\n"
    stale = [tmp_path / ".checkpoint.npz.abc123.tmp", tmp_path / ".metrics.csv.x.tmp"]
    keep = [tmp_path / "checkpoint.npz.tmp", tmp_path / ".other.npz.abc.tmp", target]
    for p in stale + keep:
        p.write_bytes(b"partial")
    removed = checkpoint.remove_stale_temps(tmp_path / CHECKPOINT_NAME, target)
    assert sorted(removed) == sorted(stale) and all(p.exists() for p in keep) and not any(p.exists() for p in stale)


# --- 3. kill and resume -----------------------------------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(Path(ppo_np.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}
SUB_TINY = ["--checkpoint-every", "1", "--num-envs", "2", "--num-steps", "16", "--minibatch-size", "16",
            "--update-epochs", "1", "--hidden-sizes", "128,128"]
SUB_END = ["--eval-episodes", "1", "--no-progress"]


def fresh_command(run: Path, total: int) -> list[str]:
    return [sys.executable, "-m", "ppo_np", "train", "CartPole-v1", "--run-dir", str(run),
            "--total-steps", str(total), *SUB_TINY, *SUB_END]


def resume_command(run: Path, total: int | None = None) -> list[str]:
    return [sys.executable, "-m", "ppo_np", "train", "--resume", str(run), *SUB_END,
            *(["--total-steps", str(total)] if total else [])]


def metrics_updates(run: Path) -> list[int]:
    """Update numbers of the complete rows of metrics.csv (a row a kill cut short has no newline yet)."""
    try:
        text = (run / "metrics.csv").read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[1:-1]  # header, ..., and whatever follows the last newline
    return [int(line.split(",")[0]) for line in lines if line]


def saved_counters(run: Path) -> tuple[int, int] | None:
    """(global_step, update) of the run's checkpoint; None when there is none; CheckpointError if it is bad."""
    if not (run / CHECKPOINT_NAME).exists():
        return None
    arrays = checkpoint.load(run / CHECKPOINT_NAME)
    return int(arrays["counters/global_step"]), int(arrays["counters/update"])


def _kill_when_writing(proc: subprocess.Popen, run: Path, after: float) -> bool:
    """Wait ``after`` seconds, then SIGKILL as soon as a checkpoint temp file exists. False if proc ended."""
    time.sleep(after)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if any(name.startswith(f".{CHECKPOINT_NAME}.") for name in os.listdir(run)):
            proc.kill()
            return True
    proc.kill()
    return True


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_checkpoint_and_resume_finishes(tmp_path):
    """12 kills, half at a random time, half the moment a checkpoint is being written.

    The kill times are fractions of how long one whole run takes on this machine (measured first,
    after a short run that fills Numba's cache, by a run that is left to finish and checked), so
    that the kills land inside runs on a fast machine and on a slow one. After every kill: the run
    directory holds no checkpoint only if it never had one; otherwise its checkpoint loads, is never
    older than the last one seen, and lags the metrics by at most the one update in flight. The next
    command is --resume (or, with no checkpoint yet, the same fresh command again); a run that
    finishes is checked whole (every update logged once, no temp file left) and the kills go on in
    a new run directory.
    """
    rng = np.random.default_rng(20260507)
    updates = 80
    total = updates * 32
    runs, kills, before_first, during_write, problems = 1, 0, 0, 0, []

    def check_finished(run: Path):
        counters = saved_counters(run)
        if counters is None or counters[0] < total or metrics_updates(run) != list(range(1, updates + 1)) \
                or not no_temp_files(run):
            problems.append(f"{run.name} finished as {counters}, metrics {metrics_updates(run)[-3:]}, "
                            f"files {sorted(p.name for p in run.iterdir())}")

    # a cold Numba cache compiles in this short run, so that the timed one below runs as every later one
    warm_up = subprocess.run(fresh_command(tmp_path / "warm-up", 64), capture_output=True, env=ENV, timeout=300)
    assert warm_up.returncode == 0, warm_up.stderr.decode()
    start = time.monotonic()
    whole = subprocess.run(fresh_command(tmp_path / "run1", total), capture_output=True, env=ENV, timeout=120)
    duration = time.monotonic() - start            # of one run, interpreter start-up included
    assert whole.returncode == 0, whole.stderr.decode()
    check_finished(tmp_path / "run1")

    run, last = None, None
    while kills < 12:
        assert runs < 60, f"only {kills} of 12 kills landed in {runs} run directories ({duration:.1f} s a run)"
        if run is None:
            runs += 1
            run, last = tmp_path / f"run{runs}", None
        command = resume_command(run) if last is not None else fresh_command(run, total)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        if kills % 2 == 0:
            try:
                proc.wait(timeout=rng.uniform(0.1, 0.9) * duration)
                killed = False
            except subprocess.TimeoutExpired:
                proc.kill()
                killed = True
        else:
            run.mkdir(parents=True, exist_ok=True)
            killed = _kill_when_writing(proc, run, rng.uniform(0.3, 0.7) * duration)
        _, err = proc.communicate()
        if not killed:  # it finished before the kill
            assert proc.returncode == 0, err.decode()
            check_finished(run)
            run = None
            continue
        kills += 1
        during_write += bool(run.exists() and list(run.glob(f".{CHECKPOINT_NAME}.*.tmp")))
        try:
            counters = saved_counters(run)
        except CheckpointError as exc:
            problems.append(f"kill {kills}: the checkpoint does not load: {exc}")
            continue
        if counters is None:
            before_first += 1
            if last is not None:
                problems.append(f"kill {kills}: the checkpoint of step {last[0]} disappeared")
            continue
        step, update = counters
        logged = metrics_updates(run)
        if last is not None and step < last[0]:
            problems.append(f"kill {kills}: the checkpoint went back from step {last[0]} to {step}")
        if step != update * 32 or (logged and update < max(logged) - 1):
            problems.append(f"kill {kills}: checkpoint (step {step}, update {update}) vs metrics {logged[-3:]}")
        last = counters
    if run is not None:  # finish the last run
        finished = subprocess.run(resume_command(run) if last is not None else fresh_command(run, total),
                                  capture_output=True, env=ENV, timeout=120)
        assert finished.returncode == 0, finished.stderr.decode()
        check_finished(run)
    print(f"\nSIGKILL: {kills} kills over {runs} runs, {during_write} during a checkpoint write, {before_first} "
          f"before the first checkpoint, {len(problems)} lost or damaged")
    assert not problems, problems
    assert during_write >= 2  # the deterministic test below covers every stage of a write


@pytest.mark.slow
def test_sigint_or_sigterm_saves_a_checkpoint_exits_130_or_143_and_says_how_to_resume(tmp_path):
    rng = np.random.default_rng(7)
    run = tmp_path / "run"
    total = 32 * 2000
    for attempt, (signum, status) in enumerate([(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGINT, 130)]):
        command = fresh_command(run, total) if attempt == 0 else resume_command(run)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        seen = len(metrics_updates(run))
        deadline = time.monotonic() + 30
        while len(metrics_updates(run)) < seen + 2 and time.monotonic() < deadline:  # training is under way
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert proc.returncode == status, err
        assert "Traceback" not in err and "interrupted at step" in err
        step, update = saved_counters(run)
        assert f"checkpoint: {run / CHECKPOINT_NAME} (step {step}, update {update})" in err
        assert f"ppo-np train --resume {run}" in err
        assert step == update * 32 and update >= max(metrics_updates(run)) - 1
    finished = subprocess.run(resume_command(run, step + 64), capture_output=True, env=ENV, timeout=60)
    assert finished.returncode == 0, finished.stderr.decode()
    assert saved_counters(run)[0] == step + 64 and no_temp_files(run)


def _signal_at(agent_updates: dict, presses: dict, signum: int):
    """The update's compiled loop, sending this process ``signum`` as it starts the given updates."""
    real_loop = FusedUpdate.__call__

    def loop(fused_update, *args):
        update = agent_updates["agent"].update_count + 1
        if presses.get(update):
            presses[update] -= 1
            os.kill(os.getpid(), signum)
        return real_loop(fused_update, *args)
    return loop


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("presses, stops_at", [({3: 1}, 3), ({3: 1, 5: 1}, 4)])
def test_a_stop_signal_once_finishes_the_update_twice_stops_at_once(tmp_path, monkeypatch, presses, stops_at,
                                                                    signum, status):
    """Ctrl-C (SIGINT) or SIGTERM in update 3 lets update 3 finish and checkpoint; a second one in update 5
    (the first one's stop is suppressed by patching learn's callback) interrupts update 5 as its minibatches
    start: it is rolled back, and the checkpoint holds update 4, with counters that agree. Exit status 128 + the
    signal's number; the previous handlers are put back."""
    seen = {}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real_init = PPO.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen["agent"] = self
    monkeypatch.setattr(PPO, "__init__", init)
    monkeypatch.setattr(FusedUpdate, "__call__", _signal_at(seen, dict(presses), signum))
    if len(presses) == 2:  # keep training after the first press, to press again mid-update
        monkeypatch.setattr(cli._StopSignals, "callback", lambda self, agent, row: True)
    run = tmp_path / "run"
    status_seen, err = run_cli(["train", "CartPole-v1", "--run-dir", str(run), "--total-steps", str(BATCH * 20),
                                "--checkpoint-every", "1000", *CLI_TINY])
    assert status_seen == status and "Traceback" not in err, err
    assert ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM") + ": stopping after this update" in err
    step, update = saved_counters(run)
    assert update == stops_at and step == update * BATCH
    assert f"checkpoint: {run / CHECKPOINT_NAME} (step {step}, update {update})" in err
    assert f"ppo-np train --resume {run}" in err
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def metrics_updates_and_steps(run: Path) -> list[tuple[int, int]]:
    with open(run / "metrics.csv") as f:
        rows = f.read().splitlines()
    header = rows[0].split(",")
    return [(int(r.split(",")[0]), int(float(r.split(",")[header.index("step")]))) for r in rows[1:]]


def learn_interrupted_at(agent: PPO, code, line: int, total_steps: int) -> bool:
    """``agent.learn`` with a KeyboardInterrupt raised as ``line`` of ``code`` starts, the first time it runs
    once update 1 has counted: Ctrl-C (or ray.cancel, which raises the same) between any two lines of an
    update. Returns whether the line ran, and so raised."""
    raised = []

    def local_trace(frame, event, arg):
        if event == "line" and frame.f_lineno == line and agent.update_count == 1 and not raised:
            raised.append(line)
            raise KeyboardInterrupt
        return local_trace

    sys.settrace(lambda frame, event, arg: local_trace if frame.f_code is code else None)
    try:
        agent.learn(total_steps)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return bool(raised)


def test_a_stop_between_any_two_lines_of_an_update_loses_no_row_of_metrics(tmp_path):
    """The update that the checkpoint holds is the last row of metrics.csv, or the one before it (a row
    written ahead of its update counting, which the resumed run drops and writes again), never a row
    short: resumed, the run's metrics hold each update once, at its own step."""
    config = PPOConfig(**{**TINY, "update_epochs": 1})
    interrupted = 0
    for code in (PPO._learn.__code__, PPO._update.__code__):
        for line in sorted({n for _, _, n in code.co_lines() if n is not None and n > code.co_firstlineno}):
            run = tmp_path / f"{code.co_name}-{line}"
            agent = PPO("CartPole-v1", config, run_dir=run)
            if not learn_interrupted_at(agent, code, line, BATCH * 3):
                agent.close()
                continue
            interrupted += 1
            step, update = saved_counters(run)
            assert (step, update) == (agent.global_step, agent.update_count) == (update * BATCH, update), line
            logged = metrics_updates_and_steps(run)
            assert logged[:update] == [(u, u * BATCH) for u in range(1, update + 1)], (code.co_name, line)
            assert len(logged) in (update, update + 1), (code.co_name, line)
            agent.close()
            resumed = PPO.load(run / CHECKPOINT_NAME, run_dir=run)
            resumed.learn(BATCH * 3)
            resumed.close()
            assert metrics_updates_and_steps(run) == [(u, u * BATCH) for u in (1, 2, 3)], (code.co_name, line)
    assert interrupted >= 25  # the lines of the loop and of an update's body, each interrupted once


KILL_DURING_SAVE = r"""
import os, signal, sys
import numpy as np
from ppo_np import checkpoint

path, stage = sys.argv[1], sys.argv[2]
arrays = {k: v for k, v in checkpoint.load(path).items() if k not in ("kind", "format_version")}
arrays["actor/W0"] = arrays["actor/W0"] + 1  # the new checkpoint differs from the old one
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
if stage == "before_write":
    np.savez = die
elif stage == "mid_write":
    def half(f, **kwargs):
        f.write(b"PK\x03\x04" + bytes(4096))
        f.flush()
        die()
    np.savez = half
elif stage == "before_fsync":
    os.fsync = die
elif stage == "before_rename":
    os.replace = die
elif stage == "after_rename":
    checkpoint._fsync_dir = die
checkpoint.save(path, arrays)
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["before_write", "mid_write", "before_fsync", "before_rename", "after_rename"])
def test_sigkill_at_each_stage_of_a_checkpoint_write(tmp_path, stage):
    """Every stage of the write, deterministically: the old checkpoint or the new one, never half of one."""
    run = tmp_path / "run"
    agent = PPO("CartPole-v1", PPOConfig(**TINY), run_dir=run)
    agent.learn(BATCH)
    agent.close()
    old = checkpoint.load(run / CHECKPOINT_NAME)
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(run / CHECKPOINT_NAME), stage],
                          capture_output=True, env=ENV, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    now = checkpoint.load(run / CHECKPOINT_NAME)
    renamed = stage == "after_rename"
    assert np.array_equal(now["actor/W0"], old["actor/W0"] + 1 if renamed else old["actor/W0"])
    temps = list(run.glob(f".{CHECKPOINT_NAME}.*.tmp"))
    assert len(temps) == (0 if renamed else 1)
    if stage == "mid_write":
        with pytest.raises(CheckpointError):
            checkpoint.load(temps[0])
    status, err = run_cli(["eval", str(run), "--episodes", "1", "--json"])  # the directory means checkpoint.npz
    assert status == 0, err
    status, err = run_cli(["train", "--resume", str(run), "--total-steps", str(2 * BATCH), "--eval-episodes", "1",
                           "--no-progress"])
    assert status == 0, err
    assert no_temp_files(run) and int(checkpoint.load(run / CHECKPOINT_NAME)["counters/update"]) == 2
