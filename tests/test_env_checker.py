"""check_env passes on well-formed envs and names the problem of broken ones."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.env_checker import check_env
from mlx_baselines3.common.envs import (
    BitFlippingEnv,
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)


@pytest.mark.parametrize(
    "env_fn",
    [
        lambda: IdentityEnv(5),
        lambda: IdentityEnvMultiDiscrete(3),
        lambda: IdentityEnvMultiBinary(3),
        lambda: FakeImageEnv(),
        lambda: FakeImageEnv(channel_first=True, discrete=False),
        SimpleMultiObsEnv,
        lambda: BitFlippingEnv(4),
        lambda: BitFlippingEnv(4, continuous=True),
        lambda: BitFlippingEnv(4, discrete_obs_space=True),
        lambda: BitFlippingEnv(4, image_obs_space=True),
        lambda: gym.make("CartPole-v1"),
    ],
)
def test_check_env_passes_without_warnings(env_fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env_fn())


class GoodEnv(gym.Env):
    def __init__(self):
        self.observation_space = spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


def _env_with(**overrides):
    env = GoodEnv()
    for name, value in overrides.items():
        setattr(env, name, value)
    return env


def test_good_env_passes():
    check_env(GoodEnv())


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (
            {"reset": lambda **kw: np.zeros(3, np.float32)},
            TypeError,
            r"reset\(\)` method must return a tuple",
        ),
        (
            {"reset": lambda **kw: (np.zeros(4, np.float32), {})},
            ValueError,
            r"Expected: \(3,\), actual shape: \(4,\)",
        ),
        ({"reset": lambda **kw: (np.zeros(3, np.float64), {})}, TypeError, "does not match the data type"),
        ({"reset": lambda **kw: (np.full(3, 2, np.float32), {})}, ValueError, "does not match the bounds"),
        ({"reset": lambda **kw: ([0.0, 0.0, 0.0], {})}, TypeError, "must be a numpy array"),
        ({"reset": lambda **kw: (np.zeros(3, np.float32), None)}, TypeError, "must be a dictionary"),
        (
            {"step": lambda a: (np.zeros(3, np.float32), 0.0, False, {})},
            ValueError,
            "must return five values",
        ),
        ({"step": lambda a: (np.zeros(3, np.float32), 0.0, 0, False, {})}, TypeError, "`terminated` signal"),
        ({"step": lambda a: (np.zeros(3, np.float32), "1", False, False, {})}, TypeError, "reward"),
        (
            {"step": lambda a: (np.zeros(3, np.float32), np.nan, False, False, {})},
            ValueError,
            "found nan in rewards",
        ),
        ({"observation_space": "Box(3)"}, TypeError, "observation space must inherit from gymnasium.spaces"),
        ({"action_space": spaces.Box(-np.inf, np.inf, (2,))}, ValueError, "finite lower and upper bound"),
    ],
)
def test_broken_envs_give_clear_errors(overrides, error, match):
    env = _env_with(**overrides)
    with pytest.raises(error, match=match):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env)


def test_reset_without_seed_keyword():
    class NoSeed(GoodEnv):
        def reset(self):  # type: ignore[override]
            return np.zeros(3, np.float32), {}

    with pytest.raises(TypeError, match="seed"):
        check_env(NoSeed())


def test_not_a_gym_env():
    with pytest.raises(TypeError, match="gymnasium.Env"):
        check_env(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"action_space": spaces.Box(0, 5, (2,), np.float32)}, "symmetric and normalized Box action space"),
        ({"observation_space": spaces.Box(0, 255, (20, 20, 3), np.uint8)}, "36x36"),
        ({"observation_space": spaces.Box(0, 255, (40, 40, 3), np.float32)}, "np.uint8"),
        ({"observation_space": spaces.Box(-1, 1, (3, 2), np.float32)}, "unconventional shape"),
        ({"action_space": spaces.Discrete(3, start=1)}, "non-zero start"),
    ],
)
def test_advice_warnings(overrides, match):
    env = _env_with(**overrides)
    shape = env.observation_space.shape
    env.reset = lambda **kw: (env.observation_space.sample() * 0 + env.observation_space.low, {})
    env.step = lambda a: (env.observation_space.low.copy(), 0.0, False, False, {})
    assert env.observation_space.shape == shape
    with pytest.warns(UserWarning, match=match):
        check_env(env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, warn=False)


def test_goal_env_compute_reward_must_agree():
    class BadGoalEnv(BitFlippingEnv):
        def compute_reward(self, achieved_goal, desired_goal, _info):
            return np.float32(5.0)

    with pytest.raises(ValueError, match="compute_reward"):
        check_env(BadGoalEnv(4))
