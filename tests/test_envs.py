"""Environment sources: every kind of env a user passes trains, saves, loads, evaluates and resumes;
bad input of every kind is refused with a message naming it."""
import copy
import functools

import gymnasium as gym
import numpy as np
import pytest
from custom_envs import CueDict, EndlessEnv, LineEnv
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import PPO, PPOConfig, evaluate
from ppo_np.checkpoint import CheckpointError
from ppo_np.config import PRESETS
from ppo_np.envs import EnvSource, LeanSyncVectorEnv
from ppo_np.evaluation import DEFAULT_MAX_EPISODE_STEPS

TINY = dict(num_envs=2, num_steps=16, minibatch_size=16, update_epochs=2, hidden_sizes=[8, 8])


def line_vector_env():
    return gym.vector.SyncVectorEnv([functools.partial(gym.make, "Line-v0", length=3)] * 2)


# (env given to PPO, env_kwargs, what PPO.load needs again: None when the checkpoint rebuilds it)
KINDS = {
    "id": ("Line-v0", None, None),
    "module:id": ("custom_envs:Line-v0", None, None),
    "id+kwargs": ("Line-v0", {"length": 3, "discrete_obs": True}, None),
    "factory": (functools.partial(LineEnv, length=3), None, "same"),
    "class": (LineEnv, None, "same"),
    "instance": (LineEnv(length=3), None, LineEnv(length=3)),
    "vector env": (line_vector_env(), None, line_vector_env()),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_env_trains_saves_loads_evaluates_and_resumes(tmp_path, kind):
    env, env_kwargs, again = KINDS[kind]
    agent = PPO(env, PPOConfig(**TINY), run_dir=tmp_path, env_kwargs=env_kwargs)
    agent.learn(64)
    assert agent.global_step == 64 and agent.env_source.rebuildable == (again is None)
    result = evaluate(agent, episodes=3, seed=5)
    assert result["episodes"] == 3 and result["capped_episodes"] == 0
    agent.close()

    loaded = PPO.load(tmp_path / "checkpoint.npz", run_dir=tmp_path) if again is None else \
        PPO.load(tmp_path / "checkpoint.npz", run_dir=tmp_path, env=env if again == "same" else again)
    assert loaded.env_id == agent.env_id
    obs = np.stack([loaded.env_source.observation_space.sample() for _ in range(4)])
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    assert evaluate(loaded, episodes=3, seed=5) == result
    loaded.learn(96)  # resumes where the checkpoint stopped
    assert loaded.global_step == 96 and loaded.update_count == 3
    loaded.close()


def test_a_checkpoint_that_cannot_rebuild_its_env_asks_for_it_and_checks_its_spaces(tmp_path):
    agent = PPO(LineEnv, PPOConfig(**TINY))
    path = agent.save(tmp_path / "ckpt.npz")
    with pytest.raises(CheckpointError, match=r"factory LineEnv.*cannot rebuild.*PPO.load\(path, env=\.\.\.\)"):
        PPO.load(path)
    with pytest.raises(CheckpointError, match=r"observation space is Box.*\(2,\).*trained with Box.*\(1,\)"):
        PPO.load(path, env=EndlessEnv)
    with pytest.raises(CheckpointError, match=r"observation space is Discrete\(6\)"):
        PPO.load(path, env="Line-v0", env_kwargs={"discrete_obs": True})
    with pytest.raises(CheckpointError, match="env_kwargs and wrappers describe the env passed as env="):
        PPO.load(path, env_kwargs={"length": 3})


def test_the_recipe_names_what_rebuilds_the_env():
    source = EnvSource.of("Line-v0", {"length": 4}, [gym.wrappers.RecordEpisodeStatistics])
    assert source.recipe == {"id": "Line-v0", "kwargs": {"length": 4},
                             "wrappers": ["gymnasium.wrappers.common:RecordEpisodeStatistics"]}
    rebuilt = EnvSource.from_recipe(source.recipe)
    assert rebuilt.recipe == source.recipe and rebuilt.observation_space == source.observation_space
    assert EnvSource.of("Line-v0", wrappers=[lambda e: e]).recipe is None  # a lambda has no name to import
    assert EnvSource.of("Line-v0").max_episode_steps == 50 and EnvSource.of(EndlessEnv).max_episode_steps is None


def test_wrappers_apply_to_every_env_in_order():
    calls = []

    def tag(name):
        def wrapper(env):
            calls.append(name)
            return gym.wrappers.TransformReward(env, lambda r: 10 * r)
        return wrapper

    envs = EnvSource.of("Line-v0", wrappers=[tag("a"), tag("b")]).make_vector(3, "sync")
    envs.reset(seed=0)
    rewards = envs.step(np.ones(3, np.int64))[1]
    envs.close()
    np.testing.assert_array_equal(rewards, -100.0)  # both wrappers, on every env
    assert calls == ["a", "b"] * 4  # the probe, then the three envs


@pytest.mark.parametrize("env, kwargs, fragment", [
    (3, {}, r"env must be a registered gymnasium id .* got int 3"),
    (None, {}, "got NoneType None"),
    ("NoSuchEnv-v0", {}, "unknown environment id 'NoSuchEnv-v0'"),
    ("no_such_module:Line-v0", {}, "cannot import module 'no_such_module'"),
    ("Line-v0", {"env_kwargs": {"no_such_arg": 1}}, "cannot build environment Line-v0: TypeError.*no_such_arg"),
    ("Line-v0", {"env_kwargs": [1]}, "env_kwargs must be a dict"),
    (LineEnv, {"env_kwargs": {"length": 3}}, "env_kwargs apply to an environment id"),
    ("Line-v0", {"wrappers": "notalist"}, "wrappers must be a list of callables"),
    ("Line-v0", {"wrappers": [lambda e: 5]}, "returned int 5, not a gymnasium.Env"),
    (lambda: "CartPole-v1", {}, r"factory <lambda> returned str 'CartPole-v1'; it must return a gymnasium.Env"),
    (line_vector_env(), {"wrappers": [gym.wrappers.RecordEpisodeStatistics]}, "wrappers apply to each environment"),
])
def test_bad_envs_are_refused_with_a_message_naming_them(env, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        PPO(env, PPOConfig(**TINY), **kwargs)


class Spaces(gym.Env):
    """An env of any spaces, for the checks made before its first step."""

    def __init__(self, observation_space=gym.spaces.Box(-1, 1, (2,)), action_space=gym.spaces.Discrete(2)):
        self.observation_space, self.action_space = observation_space, action_space


@pytest.mark.parametrize("action_space", [
    gym.spaces.Discrete(3, start=-1), gym.spaces.Box(-1, 1, (2, 2)), gym.spaces.MultiBinary([2, 2]),
    gym.spaces.MultiDiscrete([2, 3], start=[1, 0]), gym.spaces.MultiDiscrete([[2, 2], [2, 2]]),
    gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2))), gym.spaces.Text(3),
])
def test_refused_action_spaces_get_their_message(action_space):
    with pytest.raises(ValueError, match=r"(?s)factory partial\(Spaces\): action space .* is not supported; ppo-np's "
                                         r"policy heads take Discrete \(start 0\), a 1-D Box, a 1-D MultiBinary, "
                                         r"a 1-D MultiDiscrete \(start 0\)"):
        PPO(functools.partial(Spaces, action_space=action_space))


def test_refused_observation_spaces_are_refused_before_training():
    image = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"factory partial\(Spaces\): observation space Box.* is an image"):
        PPO(functools.partial(Spaces, observation_space=image))


def test_a_vector_env_fixes_num_envs():
    envs = line_vector_env()
    assert PPOConfig.for_env(envs).num_envs == 2
    assert PPOConfig.for_env(envs).minibatch_size == PRESETS["discrete"]["minibatch_size"]  # within the batch
    assert PPOConfig.for_env(envs, num_steps=16).minibatch_size == 32  # capped at the batch, 2 envs * 16 steps
    with pytest.raises(ValueError, match="holds 2 environments, but num_envs is 4; set num_envs=2"):
        PPO(envs, PPOConfig(**{**TINY, "num_envs": 4})).learn(64)


def test_auto_vectorization_takes_native_from_eight_envs_on():
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    source = EnvSource.of("CartPole-v1")
    for n, native in ((1, False), (7, False), (8, True), (16, True)):
        envs = source.make_vector(n)
        assert isinstance(envs.unwrapped, CartPoleVectorEnv if native else LeanSyncVectorEnv), n
        envs.close()
    assert isinstance(source.make_vector(1, "native").unwrapped, CartPoleVectorEnv)
    assert isinstance(EnvSource.of("CartPole-v1", {"sutton_barto_reward": True}).make_vector(8).unwrapped,
                      LeanSyncVectorEnv)  # kwargs: the native env might not take them
    with pytest.raises(ValueError, match="Pendulum-v1 has no native"):
        EnvSource.of("Pendulum-v1").make_vector(2, "native")


# --- the lean sync vector env ---------------------------------------------------------------------

class SometimesInfo(gym.Wrapper):
    """Adds {"cart": x, "nested": {"steps": k}} to the info whenever the cart is right of centre."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps = getattr(self, "steps", 0) + 1
        if obs[0] > 0:
            info = {**info, "cart": float(obs[0]), "nested": {"steps": self.steps}}
        return obs, reward, terminated, truncated, info


def _dict_observations(env):
    """The env with its observation wrapped in a dict: a non-Box space, for gymnasium's general path."""
    space = gym.spaces.Dict({"x": env.observation_space})
    return gym.wrappers.TransformObservation(env, lambda obs: {"x": obs}, space)


LEAN_CASES = {  # name: (make one env, its episodes end by)
    "cartpole": (lambda: gym.make("CartPole-v1"), "termination, every ~20 random steps"),
    "pendulum": (lambda: gym.make("Pendulum-v1", max_episode_steps=15), "truncation at 15 steps"),
    "with infos": (lambda: SometimesInfo(gym.make("CartPole-v1")), "termination; infos on some steps"),
    "dict obs": (lambda: _dict_observations(gym.make("CartPole-v1")), "the fallback to gymnasium's step"),
}


@settings(deadline=None, max_examples=30)
@given(case=st.sampled_from(sorted(LEAN_CASES)), N=st.integers(1, 5), steps=st.integers(1, 80),
       reset_at=st.integers(0, 80), seed=st.integers(0, 2**16))
def test_lean_sync_vector_env_steps_like_gymnasiums(case, N, steps, reset_at, seed):
    """Same envs, seeds and actions: every step's observations, rewards, terminations, truncations and
    infos are equal to gymnasium's SyncVectorEnv's, across autoresets and a reset partway (of some
    envs, by ``reset_mask``, or of all), and what a step returned stays the caller's."""
    make_env = LEAN_CASES[case][0]
    lean, reference = LeanSyncVectorEnv([make_env] * N), gym.vector.SyncVectorEnv([make_env] * N)
    rng = np.random.default_rng(seed)
    try:
        results = lean.reset(seed=seed), reference.reset(seed=seed)
        for t in range(steps):
            _assert_same_step(*results)
            returned, kept = results[0], copy.deepcopy(results[0])
            if t == reset_at:
                mask = rng.random(N) < 0.5
                options = (lambda: {"reset_mask": mask.copy()}) if mask.any() else (lambda: None)
                results = lean.reset(options=options()), reference.reset(options=options())
            else:
                actions = _random_actions(reference.action_space, rng)
                results = lean.step(actions), reference.step(actions.copy())
            _assert_same_step(returned, kept)      # never overwritten by a later step
        _assert_same_step(*results)
    finally:
        lean.close()
        reference.close()


def test_lean_sync_vector_env_refuses_an_observation_of_the_wrong_shape():
    """gymnasium's step would fail to stack it; the lean one names the env and both shapes."""
    class ShortObservations(gym.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs[:3], reward, terminated, truncated, info

    envs = LeanSyncVectorEnv([lambda: gym.make("CartPole-v1"), lambda: ShortObservations(gym.make("CartPole-v1"))])
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"environment 1 returned an observation of shape \(3,\), expected \(4,\)"):
        envs.step(np.array([0, 1]))
    envs.close()


def _random_actions(space, rng):
    if isinstance(space, gym.spaces.MultiDiscrete):
        return rng.integers(0, space.nvec)
    return rng.uniform(space.low, space.high).astype(space.dtype)


def _assert_same_step(lean, reference):
    assert len(lean) == len(reference)
    for ours, theirs in zip(lean, reference):
        if isinstance(theirs, dict):
            assert ours.keys() == theirs.keys()
            _assert_same_step(tuple(ours.values()), tuple(theirs.values()))
        else:
            assert type(ours) is type(theirs)
            np.testing.assert_array_equal(ours, theirs)
            assert np.asarray(ours).dtype == np.asarray(theirs).dtype


# --- evaluation ---------------------------------------------------------------------------------------

def test_evaluation_caps_episodes_of_an_env_without_time_limit_and_says_so():
    agent = PPO(EndlessEnv, PPOConfig(**TINY))
    result = evaluate(agent, episodes=3, max_episode_steps=20)
    assert result == {"mean_return": 20.0, "std_return": 0.0, "episodes": 3, "mean_length": 20.0,
                      "capped_episodes": 3, "max_episode_steps": 20}
    assert evaluate(agent, episodes=1, max_episode_steps=5)["max_episode_steps"] == 5
    # with no cap given: the env's time limit, else the documented default
    assert evaluate(PPO("Line-v0", PPOConfig(**TINY)), episodes=1)["max_episode_steps"] == 50
    assert DEFAULT_MAX_EPISODE_STEPS == 10_000
    with pytest.raises(ValueError, match="max_episode_steps must be an integer >= 1, got 0"):
        evaluate(agent, episodes=1, max_episode_steps=0)


def test_evaluation_runs_each_copy_its_share_of_episodes_and_leaves_the_agent_untouched():
    agent = PPO("Line-v0", PPOConfig(**TINY, seed=3))
    state = agent.action_rng.bit_generator.state
    first = evaluate(agent, episodes=11, seed=7, deterministic=False)
    assert first == evaluate(agent, episodes=11, seed=7, deterministic=False)   # its own generator
    assert agent.action_rng.bit_generator.state == state                       # not the agent's
    assert first["episodes"] == 11
    # a policy that always walks right: every episode is the optimum, 5 steps
    right = PPO("Line-v0", PPOConfig(**TINY))
    right.act = lambda obs, deterministic, rng: np.ones(len(obs), np.int64)
    assert evaluate(right, episodes=11) == {"mean_return": -5.0, "std_return": 0.0, "episodes": 11,
                                            "mean_length": 5.0, "capped_episodes": 0, "max_episode_steps": 50}


class CopyNumber(gym.Env):
    """Episodes of 1 + k steps with return k, k the seed of the copy's first reset (its number in the
    vector env): a copy with shorter episodes must not get a larger share of them."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k = seed if seed is not None else self.k
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t > self.k
        return np.zeros(1, np.float32), float(self.k) * done, done, False, {}


def test_evaluation_gives_each_copy_its_fixed_share_of_the_episodes():
    result = evaluate(PPO(CopyNumber, PPOConfig(**TINY)), episodes=11, seed=0)
    # copies 0..7 run (11 + i) // 8 episodes: one each for 0..4, two each for 5..7
    assert result["mean_return"] == pytest.approx((0 + 1 + 2 + 3 + 4 + 2 * (5 + 6 + 7)) / 11)


def test_evaluation_on_another_env_needs_the_same_spaces():
    agent = PPO("Line-v0", PPOConfig(**TINY))
    assert evaluate(agent, episodes=2, env=LineEnv)["episodes"] == 2
    with pytest.raises(ValueError, match="evaluation env .* has observation space Discrete"):
        evaluate(agent, episodes=2, env=functools.partial(LineEnv, discrete_obs=True))


# --- prediction ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("env", [
    "Line-v0", functools.partial(LineEnv, discrete_obs=True), CueDict, "Pendulum-v1",
    functools.partial(Spaces, gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2, 2)))),
                      gym.spaces.MultiBinary(3)),
    functools.partial(Spaces, gym.spaces.MultiDiscrete([2, 4]), gym.spaces.MultiDiscrete([3, 2])),
])
def test_predict_takes_one_observation_or_a_batch(env):
    """For every kind of observation space, and of action space (Discrete, Box, MultiBinary, MultiDiscrete)."""
    agent = PPO(env, PPOConfig(**TINY))
    space = agent.env_source.observation_space
    single = space.sample()
    action = agent.predict(single)
    assert agent.head.env_actions(action[None]).shape[1:] == agent.env_source.action_space.shape
    batch = gym.vector.utils.concatenate(space, [single, single, space.sample()],
                                         gym.vector.utils.create_empty_array(space, 3))
    actions = agent.predict(batch)
    assert len(actions) == 3
    np.testing.assert_array_equal(actions[0], action)  # deterministic: the same observation, the same action


def test_predict_refuses_non_finite_and_misshapen_observations():
    agent = PPO("Pendulum-v1", PPOConfig(**TINY))
    with pytest.raises(ValueError, match=r"observations must be finite; row\(s\) \[1\] hold NaN or inf"):
        agent.predict(np.array([[0.0, 1.0, 0.0], [np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"observations must be finite"):
        agent.predict(np.array([np.inf, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"expected an observation of shape \(3,\) or a batch of shape \(N, 3\)"):
        agent.predict(np.zeros(4))
    with pytest.raises(ValueError, match=r"expected a dict with keys \['cue', 'signs'\]"):
        PPO(CueDict, PPOConfig(**TINY)).predict(np.zeros(5))
