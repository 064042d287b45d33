"""PPOConfig: valid configurations construct, invalid ones name the field, the value and the rule."""
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np.config import DEFAULT_TOTAL_STEPS, PRESET_SOURCES, PRESETS, PPOConfig, field_names, parse_value, preset_for

# (field, invalid value, a fragment of the rule the message must state)
INVALID = [
    ("learning_rate", 0.0, "> 0"), ("learning_rate", -1e-3, "> 0"), ("learning_rate", float("nan"), "> 0"),
    ("gamma", 0.0, "(0, 1]"), ("gamma", 1.5, "(0, 1]"), ("gae_lambda", -0.1, "[0, 1]"), ("gae_lambda", 1.01, "[0, 1]"),
    ("clip_coef", 0.0, "> 0"), ("clip_coef", -0.2, "> 0"), ("temperature", 0.0, "> 0"), ("temperature", -1.0, "> 0"),
    ("num_envs", 0, ">= 1"), ("num_steps", 2.5, "integer"), ("minibatch_size", 0, ">= 1"),
    ("update_epochs", True, "integer"), ("beta_factor", 1.0, "> 1"), ("max_grad_norm", 0.0, "> 0"),
    ("algo", "ppo2", "clip, penalty"), ("dtype", "float16", "float32, float64"),
    ("ent_schedule", "cosine", "constant, linear, exponential, auto"), ("hidden_sizes", (), "tuple"),
    ("hidden_sizes", (64, 0), "tuple"), ("target_kl", 0.0, "none or"), ("seed", -1, ">= 0"),
]


@pytest.mark.parametrize("name, value, rule", INVALID)
def test_invalid_field_is_named_with_value_and_rule(name, value, rule):
    with pytest.raises(ValueError) as info:
        PPOConfig(**{name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and rule in message


def test_kl_min_must_lie_below_kl_max():
    with pytest.raises(ValueError, match="kl_min"):
        PPOConfig(kl_min=0.02, kl_max=0.01)
    assert PPOConfig(kl_target=0.01).kl_bounds == pytest.approx((0.015, 0.01 / 1.5))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from([n for n, _, _ in INVALID]), data=st.data())
def test_any_invalid_value_of_a_field_is_rejected_by_name(name, data):
    value = data.draw(st.sampled_from([v for n, v, _ in INVALID if n == name]))
    with pytest.raises(ValueError, match=name):
        PPOConfig().replace(**{name: value})


@settings(max_examples=60, deadline=None)
@given(lr=st.floats(1e-6, 1.0), gamma=st.floats(0.5, 1.0), lam=st.floats(0.0, 1.0), clip=st.floats(0.01, 1.0),
       tau=st.floats(0.05, 10.0), envs=st.integers(1, 16), steps=st.integers(1, 512),
       algo=st.sampled_from(["clip", "penalty"]), dtype=st.sampled_from(["float32", "float64"]))
def test_valid_configurations_construct_and_round_trip_through_json(lr, gamma, lam, clip, tau, envs, steps, algo, dtype):
    cfg = PPOConfig(learning_rate=lr, gamma=gamma, gae_lambda=lam, clip_coef=clip, temperature=tau, num_envs=envs,
                    num_steps=steps, minibatch_size=min(64, envs * steps), algo=algo, dtype=dtype)
    assert PPOConfig.from_json(cfg.to_json()) == cfg
    assert cfg.batch_size == envs * steps


def test_unknown_keys_are_rejected_with_the_known_ones_listed():
    with pytest.raises(ValueError, match="unknown config key.*lerning_rate.*learning_rate"):
        PPOConfig().replace(lerning_rate=1e-3)
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        parse_value("nope", "1")


@pytest.mark.parametrize("name, text, expected", [
    ("learning_rate", "1e-3", 1e-3), ("num_envs", "4", 4), ("norm_adv", "false", False),
    ("hidden_sizes", "32,32", (32, 32)), ("target_kl", "none", None), ("target_kl", "0.02", 0.02), ("algo", "penalty", "penalty"),
])
def test_parse_value_reads_each_field_type(name, text, expected):
    assert parse_value(name, text) == expected


@pytest.mark.parametrize("name, text", [("learning_rate", "fast"), ("num_envs", "4.5"), ("norm_adv", "maybe")])
def test_malformed_values_say_what_was_expected(name, text):
    with pytest.raises(ValueError, match=f"{name}.*{text}"):
        parse_value(name, text)


def test_every_field_is_documented_and_presets_are_valid():
    for f in dataclasses.fields(PPOConfig):
        assert f.metadata.get("doc"), f"field {f.name} has no documentation"
    for name, values in PRESETS.items():
        assert set(values) <= set(field_names()), name
        PPOConfig(**values)
    assert preset_for("CartPole-v1", False).num_steps == 32
    assert preset_for("SomethingElse-v0", True).normalize_obs


def test_for_env_is_the_preset_the_command_line_starts_from():
    from ppo_np.cli import _env_source, _train_config, build_parser

    assert PPOConfig.for_env("CartPole-v1", seed=1) == PPOConfig(**{**PRESETS["CartPole-v1"], "seed": 1})
    assert PPOConfig(seed=1) != PPOConfig.for_env("CartPole-v1", seed=1)  # the bare defaults are no preset
    args = build_parser().parse_args(["train", "CartPole-v1", "--seed", "1"])
    assert _train_config(args, _env_source(args)) == PPOConfig.for_env("CartPole-v1", seed=1)
    # an env without a preset: the generic defaults of its kind of action
    assert PPOConfig.for_env("FrozenLake-v1") == preset_for("FrozenLake-v1", continuous=False)
    assert PPOConfig.for_env("MountainCarContinuous-v0", gamma=0.9) == preset_for("x", True).replace(gamma=0.9)
    assert set(PRESET_SOURCES) == set(PRESETS) and set(DEFAULT_TOTAL_STEPS) < set(PRESETS)   # each names its source
    with pytest.raises(ValueError, match="gamma must be in \\(0, 1\\]; got 2"):
        PPOConfig.for_env("CartPole-v1", gamma=2)


def test_hidden_sizes_accepts_a_list_and_keeps_a_tuple():
    config = PPOConfig(hidden_sizes=[32, 16])
    assert config.hidden_sizes == (32, 16) and config == PPOConfig(hidden_sizes=(32, 16))
    assert PPOConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"hidden_sizes must be a non-empty list or tuple of integers >= 1; got \[\]"):
        PPOConfig(hidden_sizes=[])


def test_gradient_logging_is_for_the_minibatch_updates():
    assert PPOConfig(log_gradients=True, algo="penalty").log_gradients
    with pytest.raises(ValueError, match="log_gradients must be false for algo trpo"):
        PPOConfig(log_gradients=True, algo="trpo")
