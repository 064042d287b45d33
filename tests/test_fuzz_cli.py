"""Bad input, drawn at random: every invalid configuration is a ValueError naming the field, the value and
the rule; every invalid command line exits with status 2 and one error line saying the same (argparse's
own refusals included), never a traceback.
And the other side of the law: valid configurations and command lines, drawn the same way, construct.
"""
import contextlib
import dataclasses
import io
import math
import tempfile
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppo_np import cli
from ppo_np.ppo import PPO
from ppo_np.config import PPOConfig, parse_value

FIELDS = {f.name: f for f in dataclasses.fields(PPOConfig)}
CHOICES = {name: f.metadata["choices"] for name, f in FIELDS.items() if "choices" in f.metadata}

# --- invalid values, by the rule they break ---------------------------------------------------------------

NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE_INT = st.integers(min_value=2**1100, max_value=2**1200)  # an int that is no finite float
NOT_A_NUMBER = st.sampled_from(["1e-3", "", "fast", b"1", [1.0], (0.5,), {}, True, False])
NOT_AN_INT = st.one_of(st.floats(allow_nan=True), st.sampled_from(["4", "", b"4", [4], (4,), {}, True, False]))


def _floats(**kw):
    return st.floats(allow_nan=False, allow_infinity=False, **kw)


def _positive_invalid(optional: bool):
    cases = [_floats(max_value=0.0), st.integers(max_value=0), NON_FINITE, HUGE_INT, NOT_A_NUMBER]
    return st.one_of(*cases) if optional else st.one_of(*cases, st.none())


INVALID: dict[str, st.SearchStrategy] = {
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64, max_value=2**80), NOT_AN_INT, st.none()),
    "gamma": st.one_of(_floats(max_value=0.0), _floats(min_value=1.0, exclude_min=True), NON_FINITE, NOT_A_NUMBER),
    "gae_lambda": st.one_of(_floats(max_value=0.0, exclude_max=True), _floats(min_value=1.0, exclude_min=True),
                            NON_FINITE, NOT_A_NUMBER),
    "beta_factor": st.one_of(_floats(max_value=1.0), NON_FINITE, NOT_A_NUMBER),
    "log_std_init": st.one_of(NON_FINITE, HUGE_INT, NOT_A_NUMBER, st.none()),
    "target_entropy": st.one_of(NON_FINITE, HUGE_INT, NOT_A_NUMBER),
    "hidden_sizes": st.one_of(st.just(()), st.tuples(st.integers(1, 64), st.integers(max_value=0)),
                              st.lists(st.integers(max_value=0), min_size=1, max_size=3),
                              st.tuples(st.sampled_from([2.0, True, "64", None])), st.integers(), st.none(),
                              st.text(max_size=5)),
}
INVALID.update({name: _positive_invalid(False) for name in (
    "learning_rate", "adam_eps", "max_grad_norm", "clip_coef", "kl_target", "beta_init", "temperature",
    "obs_clip", "reward_clip", "ent_coef_lr")})
INVALID.update({name: _positive_invalid(True) for name in (
    "target_kl", "vf_clip", "temperature_final", "kl_max", "kl_min")})
INVALID.update({name: st.one_of(_floats(max_value=0.0, exclude_max=True), st.integers(max_value=-1), NON_FINITE,
                                HUGE_INT, NOT_A_NUMBER, st.none())
                for name in ("vf_coef", "ent_coef", "ent_coef_final")})
INVALID.update({name: st.one_of(st.integers(max_value=0), NOT_AN_INT, st.none())
                for name in ("num_envs", "num_steps", "update_epochs", "minibatch_size", "checkpoint_every")})
INVALID.update({name: st.one_of(st.integers(), st.floats(), st.sampled_from(["true", "no", "", None, [True]]))
                for name, f in FIELDS.items() if f.type == "bool"})
INVALID.update({name: st.one_of(st.text(max_size=12).filter(lambda t, c=choices: t not in c),
                                st.sampled_from([None, 1, 1.5, True, b"clip", ["clip"]]))
                for name, choices in CHOICES.items()})


@st.composite
def invalid_configs(draw):
    """(kwargs, the field the error must name, that field's value): one field or one relation broken."""
    kind = draw(st.sampled_from(["field"] * 6 + ["kl", "minibatch", "exponential", "auto"]))
    if kind == "field":
        name = draw(st.sampled_from(sorted(INVALID)))
        value = draw(INVALID[name])
        return {name: value}, name, value
    if kind == "kl":  # kl_min must lie below kl_max
        kl_max = draw(_floats(min_value=1e-6, max_value=1.0))
        kl_min = draw(_floats(min_value=kl_max, max_value=10.0))
        return {"kl_max": kl_max, "kl_min": kl_min}, "kl_min", kl_min
    if kind == "minibatch":  # a minibatch larger than the batch
        envs, steps = draw(st.integers(1, 8)), draw(st.integers(1, 64))
        mb = draw(st.integers(envs * steps + 1, envs * steps + 1000))
        return {"num_envs": envs, "num_steps": steps, "minibatch_size": mb}, "minibatch_size", mb
    if kind == "exponential":  # an exponential schedule needs both ends > 0
        final = draw(st.sampled_from([0, 0.0]))
        return {"ent_schedule": "exponential", "ent_coef": 0.01, "ent_coef_final": final}, "ent_coef_final", final
    return {"ent_schedule": "auto", "ent_coef": 0.0}, "ent_coef", 0.0


@settings(max_examples=400, deadline=None)
@given(case=invalid_configs())
def test_every_invalid_configuration_is_a_value_error_naming_field_value_and_rule(case):
    kwargs, name, value = case
    with pytest.raises(ValueError) as info:
        PPOConfig(**kwargs)
    message = str(info.value)
    assert f"{name} must be" in message and repr(value) in message, message
    assert "\n" not in message
    with pytest.raises(ValueError, match=name):  # the same through replace() and through a checkpoint's JSON
        PPOConfig().replace(**kwargs)


# --- valid values ------------------------------------------------------------------------------------------

@st.composite
def valid_configs(draw):
    envs, steps = draw(st.integers(1, 16)), draw(st.integers(1, 256))
    kl_target = draw(_floats(min_value=1e-4, max_value=0.5))
    schedule = draw(st.sampled_from(CHOICES["ent_schedule"]))
    ent_coef = draw(_floats(min_value=1e-4, max_value=0.1)) if schedule in ("exponential", "auto") else \
        draw(_floats(min_value=0.0, max_value=0.1))
    return dict(
        seed=draw(st.integers(0, 2**64 - 1)), num_envs=envs, num_steps=steps,
        minibatch_size=draw(st.integers(1, envs * steps)), update_epochs=draw(st.integers(1, 20)),
        hidden_sizes=tuple(draw(st.lists(st.integers(1, 256), min_size=1, max_size=3))),
        gamma=draw(_floats(min_value=1e-3, max_value=1.0)), gae_lambda=draw(_floats(min_value=0.0, max_value=1.0)),
        learning_rate=draw(_floats(min_value=1e-8, max_value=1.0)), clip_coef=draw(_floats(min_value=1e-4, max_value=10)),
        temperature=draw(_floats(min_value=1e-3, max_value=100.0)),
        temperature_final=draw(st.none() | _floats(min_value=1e-3, max_value=100.0)),
        target_kl=draw(st.none() | _floats(min_value=1e-6, max_value=1.0)),
        vf_clip=draw(st.none() | _floats(min_value=1e-3, max_value=10.0)),
        kl_target=kl_target, kl_max=draw(st.none() | _floats(min_value=kl_target * 1.01, max_value=1.0)),
        beta_factor=draw(_floats(min_value=1.001, max_value=10.0)),
        ent_schedule=schedule, ent_coef=ent_coef,
        ent_coef_final=draw(_floats(min_value=1e-5, max_value=0.1)),
        norm_adv=draw(st.booleans()), normalize_obs=draw(st.booleans()),
        **{name: draw(st.sampled_from(choices)) for name, choices in CHOICES.items() if name != "ent_schedule"})


@settings(max_examples=200, deadline=None)
@given(kwargs=valid_configs())
def test_valid_configurations_construct_and_survive_json(kwargs):
    cfg = PPOConfig(**kwargs)
    assert PPOConfig.from_json(cfg.to_json()) == cfg
    assert all(getattr(cfg, k) == v for k, v in kwargs.items())


# --- the command line --------------------------------------------------------------------------------------

class _SpaceEnv(gym.Env):
    """An environment with the given spaces, for the spaces ppo-np must refuse."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _missing_dependency(**kwargs):
    raise gym.error.DependencyNotInstalled("box3d is not installed, run `pip install box3d`")


BOX4 = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
IMAGE = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
UNSUPPORTED = {  # env id -> what the message must name
    "PpoNpTest/DictImageObs-v0": (dict(observation_space=gym.spaces.Dict({"x": BOX4, "cam": IMAGE}),
                                       action_space=gym.spaces.Discrete(2)), "observation space ['cam']"),
    "PpoNpTest/ImageObs-v0": (dict(observation_space=IMAGE, action_space=gym.spaces.Discrete(2)),
                              "is an image (a 3-D Box of uint8)"),
    "PpoNpTest/TextObs-v0": (dict(observation_space=gym.spaces.Text(5), action_space=gym.spaces.Discrete(2)),
                             "observation space Text"),
    "PpoNpTest/MultiDiscrete-v0": (dict(observation_space=BOX4,
                                        action_space=gym.spaces.MultiDiscrete([2, 3], start=[1, 0])),
                                   "action space"),
    "PpoNpTest/MatrixAction-v0": (dict(observation_space=BOX4, action_space=gym.spaces.Box(-1, 1, (2, 2))),
                                  "action space"),
}
for _id, (_kwargs, _) in UNSUPPORTED.items():
    gym.register(_id, entry_point=_SpaceEnv, kwargs=_kwargs, disable_env_checker=True)
gym.register("PpoNpTest/MissingDependency-v0", entry_point=_missing_dependency)


class _WouldTrain(Exception):
    pass


def run_cli(argv, train=False):
    """(exit status, stderr) of ``ppo-np argv`` run in this process; unless ``train``, reaching training is an error."""
    err = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if not train:  # a case drawn as invalid that is valid fails fast (status 1) instead of training
            stack.enter_context(mock.patch.object(PPO, "learn", side_effect=_WouldTrain("input was valid")))
        try:
            status = cli.main(argv)
        except SystemExit as exc:
            status = exc.code
    return status, err.getvalue()


def _render(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# invalid text for a field, by the field's type; every entry is either unparseable or breaks a rule
_BAD_NUMBER_TEXT = st.sampled_from(["fast", "1..2", "", "0x10", "1e", "--", "None", "[1]"])
_BAD_INT_TEXT = st.sampled_from(["2.5", "1e3", "four", "", "0x10", "none", "True"])


def _invalid_text(name: str):
    f = FIELDS[name]
    if name in CHOICES:
        return st.text(max_size=12).filter(lambda t: t.strip() not in CHOICES[name])
    if f.type == "bool":
        return st.sampled_from(["maybe", "2", "", "y", "none", "ja"])
    if f.type == "tuple":
        return st.sampled_from(["", "0", "64,-1", "a,b", "64,,0", "1.5", "64;64", "none"])
    if f.type == "int":
        lowest = 0 if name == "seed" else 1
        ints = st.integers(max_value=lowest - 1).map(str)
        if name == "seed":
            ints = ints | st.integers(min_value=2**64, max_value=2**70).map(str)
        return ints | _BAD_INT_TEXT
    # float fields: a value that breaks the field's rule, or text that is no number
    bad = INVALID.get(name)
    numbers = bad.filter(lambda v: isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool))) \
        if bad is not None else st.nothing()
    optional = "Optional" in str(f.type)
    return numbers.map(_render) | _BAD_NUMBER_TEXT.filter(lambda t: not (optional and t.lower() in ("none", "null")))


FIELD_NAMES_WITH_INVALID_TEXT = sorted(n for n in FIELDS if n in INVALID or n in CHOICES)


@st.composite
def invalid_command_lines(draw):
    """(argv, fragments the one error line must contain)."""
    env = "CartPole-v1"
    kind = draw(st.sampled_from(["field"] * 8 + ["set_unknown", "set_malformed", "env", "space", "total",
                                                 "minibatch", "kl", "option", "preset", "resume"]))
    if kind == "field":
        name = draw(st.sampled_from(FIELD_NAMES_WITH_INVALID_TEXT))
        text = draw(_invalid_text(name))
        form = draw(st.sampled_from(["option", "set"]))
        arg = f"--{name.replace('_', '-')}={text}" if form == "option" else f"--set={name}={text}"
        try:
            shown = [repr(parse_value(name, text))]  # parses: the rule must name the parsed value
        except ValueError:
            shown = [repr(text)]
        return ["train", env, arg], [name, *shown]
    if kind == "set_unknown":
        key = draw(st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(lambda k: k not in FIELDS))
        return ["train", env, f"--set={key}=1"], [repr(key)]
    if kind == "set_malformed":
        text = draw(st.sampled_from(["gamma", "=0.9", "", "gamma0.9"]))
        return ["train", env, f"--set={text}"], ["key=value", repr(text)]
    if kind == "env":
        env_id = draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_:/-]{0,20}", fullmatch=True)
                      .filter(lambda e: e not in gym.registry))
        return ["train", env_id], [env_id]
    if kind == "space":
        env_id = draw(st.sampled_from(sorted(UNSUPPORTED) + ["PpoNpTest/MissingDependency-v0"]))
        what = UNSUPPORTED[env_id][1] if env_id in UNSUPPORTED else "box3d"
        return ["train", env_id], [env_id, what]
    if kind == "total":
        text = draw(st.integers(max_value=0).map(str) | _BAD_INT_TEXT)
        return ["train", env, f"--total-steps={text}"], ["--total-steps", text]
    if kind == "minibatch":
        envs, steps = draw(st.integers(1, 4)), draw(st.integers(1, 32))
        mb = draw(st.integers(envs * steps + 1, 10_000))
        return (["train", env, f"--num-envs={envs}", f"--num-steps={steps}", f"--minibatch-size={mb}"],
                ["minibatch_size", repr(mb), str(envs * steps)])
    if kind == "kl":
        kl_min = draw(_floats(min_value=0.015, max_value=10.0))  # the default kl_max is 1.5 * 0.01
        return ["train", env, f"--kl-min={kl_min!r}"], ["kl_min", repr(kl_min), "kl_max"]
    if kind == "option":
        options = ("--preset", "--total-steps", "--run-dir", "--resume", "--set", "--eval-episodes", "--json",
                   "--no-progress", "--help", "--env-kwargs", "--wrapper", "--fork", "--reschedule",
                   "--print-config")
        option = draw(st.from_regex(r"--[a-z][a-z-]{0,12}", fullmatch=True).filter(  # no option, nor its prefix
            lambda o: not any(a.startswith(o) for a in (*options, *(f"--{n.replace('_', '-')}" for n in FIELDS)))))
        return ["train", env, f"{option}=1"], [option]
    if kind == "preset":
        name = draw(st.text(min_size=1, max_size=10).filter(lambda t: t not in cli.PRESETS))
        return ["train", env, f"--preset={name}"], ["--preset", repr(name)]
    # --resume with a config option outside config.RESUMABLE_FIELDS: refused
    name = draw(st.sampled_from(["gamma", "clip_coef", "seed"]))  # fields a resumed run may not change
    return ["train", "--resume", "runs/x", f"--set={name}=1"], ["--resume", f"--set {name}"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=invalid_command_lines())
def test_every_invalid_command_line_exits_2_with_one_error_line_naming_the_value(case):
    argv, fragments = case
    with tempfile.TemporaryDirectory() as tmp:
        status, err = run_cli([*argv, f"--run-dir={tmp}/run"])
    assert status == 2, (argv, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err   # one line, argparse's own refusals too (no usage block)
    line = lines[0]
    assert line.startswith("ppo-np") and "error:" in line, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in line, (fragment, err)


@st.composite
def valid_command_lines(draw):
    """(argv, the config values they must produce)."""
    envs, steps = draw(st.integers(1, 4)), draw(st.integers(1, 32))
    values = {"num_envs": envs, "num_steps": steps, "minibatch_size": draw(st.integers(1, envs * steps)),
              "gamma": draw(_floats(min_value=1e-3, max_value=1.0)),
              "gae_lambda": draw(_floats(min_value=0.0, max_value=1.0)),
              "learning_rate": draw(_floats(min_value=1e-8, max_value=1.0)),
              "clip_coef": draw(_floats(min_value=1e-4, max_value=10.0)),
              "temperature": draw(_floats(min_value=1e-3, max_value=100.0)),
              "target_kl": draw(st.none() | _floats(min_value=1e-6, max_value=1.0)),
              "hidden_sizes": tuple(draw(st.lists(st.integers(1, 32), min_size=1, max_size=2))),
              "norm_adv": draw(st.booleans()), "seed": draw(st.integers(0, 2**64 - 1)),
              "algo": draw(st.sampled_from(["clip", "penalty"])), "dtype": draw(st.sampled_from(CHOICES["dtype"])),
              "activation": draw(st.sampled_from(CHOICES["activation"]))}
    chosen = draw(st.lists(st.sampled_from(sorted(values)), unique=True))
    chosen = sorted(set(chosen) | {"num_envs", "num_steps", "minibatch_size"})
    argv = ["train", draw(st.sampled_from(["CartPole-v1", "Pendulum-v1", "Acrobot-v1"]))]
    for name in chosen:
        value = values[name]
        text = ("none" if value is None else ",".join(map(str, value)) if isinstance(value, tuple)
                else str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float)
                else str(value))
        argv.append(draw(st.sampled_from([f"--{name.replace('_', '-')}={text}", f"--set={name}={text}"])))
    return argv, {name: values[name] for name in chosen}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=valid_command_lines())
def test_valid_command_lines_build_the_agent_they_describe(case):
    argv, expected = case
    with tempfile.TemporaryDirectory() as tmp:
        args = cli.build_parser().parse_args([*argv, f"--run-dir={tmp}/run"])
        agent, run_dir, total = cli._train_setup(args)
        try:
            assert {name: getattr(agent.config, name) for name in expected} == expected
            assert agent.env_id == argv[1] and total >= 1 and run_dir.is_dir()
        finally:
            agent.close()


def test_resume_refusals_name_the_problem(tmp_path):
    """Resuming a directory with no checkpoint, or below the steps already taken, is bad input too."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"env_id": "CartPole-v1"}')
    status, err = run_cli(["train", "--resume", str(run)])
    assert status == 2 and "nothing to resume" in err and "ppo-np train CartPole-v1 --run-dir" in err
    status, err = run_cli(["train", "--resume", str(tmp_path / "absent")])
    assert status == 2 and "no such run directory" in err
    file_dir = tmp_path / "a-file"
    file_dir.write_text("")
    status, err = run_cli(["train", "CartPole-v1", "--run-dir", str(file_dir)])
    assert status == 2 and "cannot create run directory" in err and "Traceback" not in err
    status, err = run_cli(["train", "CartPole-v1", "--run-dir", str(run), "--total-steps", "32", "--num-envs", "2",
                           "--num-steps", "16", "--minibatch-size", "16", "--update-epochs", "1",
                           "--eval-episodes", "1", "--no-progress"], train=True)
    assert status == 0, err
    status, err = run_cli(["train", "--resume", str(run), "--total-steps", "16"])
    assert status == 2 and "--total-steps 16 is below the 32 steps" in err
    status, err = run_cli(["train", "Pendulum-v1", "--resume", str(run)])
    assert status == 2 and "CartPole-v1" in err and "Pendulum-v1" in err
