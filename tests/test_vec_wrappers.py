"""VecFrameStack, VecMonitor, VecTransposeImage, VecCheckNan, VecExtractDictObs."""

from __future__ import annotations

import csv
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from mlx_baselines3.common.monitor import Monitor
from mlx_baselines3.common.vec_env import (
    DummyVecEnv,
    VecCheckNan,
    VecExtractDictObs,
    VecFrameStack,
    VecMonitor,
    VecTransposeImage,
    is_vecenv_wrapped,
    unwrap_vec_wrapper,
)


class CounterEnv(gym.Env):
    """Obs = [t, -t] (or an image filled with t); the episode ends after ``ep_len`` steps."""

    def __init__(self, ep_len: int, image: bool = False, channel_first: bool = False, dict_obs: bool = False):
        self.ep_len, self.image, self.channel_first, self.dict_obs = ep_len, image, channel_first, dict_obs
        if image:
            shape = (1, 36, 36) if channel_first else (36, 36, 1)
            box = spaces.Box(0, 255, shape, np.uint8)
        else:
            box = spaces.Box(-100, 100, (2,), np.float32)
        self.observation_space = spaces.Dict({"v": box, "k": spaces.Box(0, 1, (1,))}) if dict_obs else box
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        if self.image:
            box = self.observation_space["v"] if self.dict_obs else self.observation_space
            value = np.full(box.shape, self.t, np.uint8)
        else:
            value = np.array([self.t, -self.t], np.float32)
        return {"v": value, "k": np.zeros(1, np.float32)} if self.dict_obs else value

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 10  # first observation of an episode is 10
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0 + action, self.t - 10 >= self.ep_len, False, {"extra": self.t}


def _step(venv, n=None):
    return venv.step(np.zeros(n or venv.num_envs, dtype=np.int64))


def test_frame_stack_vector_obs_across_resets():
    venv = VecFrameStack(DummyVecEnv([lambda: CounterEnv(2), lambda: CounterEnv(3)]), n_stack=3)
    assert venv.observation_space.shape == (6,)
    np.testing.assert_array_equal(venv.observation_space.low, np.full(6, -100))
    obs = venv.reset()
    # Zeros, then the first observation (newest last)
    np.testing.assert_array_equal(obs[0], [0, 0, 0, 0, 10, -10])
    obs, _, _, _ = _step(venv)
    np.testing.assert_array_equal(obs[0], [0, 0, 10, -10, 11, -11])
    obs, _, dones, infos = _step(venv)
    np.testing.assert_array_equal(dones, [True, False])
    # The terminal observation is stacked with the frames of its own episode
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [10, -10, 11, -11, 12, -12])
    # The new episode starts from zeros
    np.testing.assert_array_equal(obs[0], [0, 0, 0, 0, 10, -10])
    np.testing.assert_array_equal(obs[1], [10, -10, 11, -11, 12, -12])
    obs, _, dones, _ = _step(venv)
    np.testing.assert_array_equal(obs[0], [0, 0, 10, -10, 11, -11])


def test_frame_stack_returns_independent_arrays():
    venv = VecFrameStack(DummyVecEnv([lambda: CounterEnv(5)]), n_stack=2)
    first = venv.reset()
    kept = first.copy()
    _step(venv)
    venv.reset()
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("channel_first", [False, True])
def test_frame_stack_images_channel_axis(channel_first):
    venv = VecFrameStack(
        DummyVecEnv([lambda: CounterEnv(5, image=True, channel_first=channel_first)]), n_stack=4
    )
    expected_shape = (4, 36, 36) if channel_first else (36, 36, 4)
    assert venv.observation_space.shape == expected_shape
    assert venv.observation_space.dtype == np.uint8
    venv.reset()
    obs, _, _, _ = _step(venv)
    assert obs.shape == (1, *expected_shape)
    channels = obs[0, :, 0, 0] if channel_first else obs[0, 0, 0, :]
    np.testing.assert_array_equal(channels, [0, 0, 10, 11])


def test_frame_stack_dict_and_channels_order():
    venv = VecFrameStack(DummyVecEnv([lambda: CounterEnv(1, dict_obs=True)]), n_stack=2)
    assert venv.observation_space["v"].shape == (4,)
    assert venv.observation_space["k"].shape == (2,)
    venv.reset()
    obs, _, dones, infos = _step(venv)
    assert dones[0]
    np.testing.assert_array_equal(infos[0]["terminal_observation"]["v"], [10, -10, 11, -11])
    np.testing.assert_array_equal(obs["v"][0], [0, 0, 10, -10])
    # Forcing channels first on a vector space stacks along axis 0 of each observation
    forced = VecFrameStack(DummyVecEnv([lambda: CounterEnv(5)]), n_stack=2, channels_order="first")
    assert forced.observation_space.shape == (4,)
    with pytest.raises(ValueError, match="channels_order"):
        VecFrameStack(DummyVecEnv([lambda: CounterEnv(5)]), n_stack=2, channels_order="middle")
    with pytest.raises(TypeError, match="Box and gym.spaces.Dict"):
        VecFrameStack(DummyVecEnv([lambda: gym.make("FrozenLake-v1")]), n_stack=2)


def test_vec_monitor_episode_info_and_csv(tmp_path):
    venv = VecMonitor(
        DummyVecEnv([lambda: CounterEnv(2), lambda: CounterEnv(3)]),
        filename=str(tmp_path / "log"),
        info_keywords=("extra",),
    )
    venv.reset()
    episodes = []
    for _ in range(6):
        _, _, dones, infos = venv.step(np.ones(2, dtype=np.int64))
        for i in np.flatnonzero(dones):
            episodes.append((i, infos[i]["episode"]))
    assert [(i, ep["r"], ep["l"]) for i, ep in episodes] == [
        (0, 4.0, 2),
        (1, 6.0, 3),
        (0, 4.0, 2),
        (0, 4.0, 2),
        (1, 6.0, 3),
    ]
    assert venv.episode_count == 5
    venv.close()
    with open(tmp_path / "log.monitor.csv") as file:
        header = json.loads(file.readline()[1:])
        rows = list(csv.DictReader(file))
    assert "t_start" in header
    assert [float(row["r"]) for row in rows] == [4.0, 6.0, 4.0, 4.0, 6.0]
    assert [int(row["extra"]) for row in rows] == [12, 13, 12, 12, 13]


def test_vec_monitor_warns_over_monitor():
    with pytest.warns(UserWarning, match="already wrapped with a `Monitor`"):
        VecMonitor(DummyVecEnv([lambda: Monitor(CounterEnv(2))]))


def test_vec_transpose_image():
    venv = DummyVecEnv([lambda: FakeImageEnv(screen_height=40, screen_width=50, n_channels=3)])
    transposed = VecTransposeImage(venv)
    assert transposed.observation_space.shape == (3, 40, 50)
    venv.seed(0)
    raw = venv.reset()
    venv.seed(0)
    obs = transposed.reset()
    np.testing.assert_array_equal(obs, raw.transpose(0, 3, 1, 2))
    for _ in range(10):
        _, _, dones, infos = transposed.step(np.zeros(1, dtype=np.int64))
    assert dones[0] and infos[0]["terminal_observation"].shape == (3, 40, 50)
    with pytest.raises(ValueError, match="channel last"):
        VecTransposeImage(DummyVecEnv([lambda: FakeImageEnv(channel_first=True)]))
    with pytest.raises(ValueError, match="image or dictionary"):
        VecTransposeImage(DummyVecEnv([lambda: CounterEnv(2)]))
    assert is_vecenv_wrapped(transposed, VecTransposeImage)
    assert unwrap_vec_wrapper(transposed, VecFrameStack) is None


def test_vec_transpose_dict_image_keys():
    transposed = VecTransposeImage(DummyVecEnv([SimpleMultiObsEnv]))
    assert transposed.observation_space["img"].shape == (1, 64, 64)
    assert transposed.observation_space["vec"].shape == (5,)
    obs = transposed.reset()
    assert obs["img"].shape == (1, 1, 64, 64) and obs["vec"].shape == (1, 5)


class NanEnv(CounterEnv):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs * np.nan, reward, terminated, truncated, info


def test_vec_check_nan():
    venv = VecCheckNan(DummyVecEnv([lambda: NanEnv(5)]), raise_exception=True)
    venv.reset()
    with pytest.raises(ValueError, match="found nan in observations"):
        _step(venv)
    venv = VecCheckNan(DummyVecEnv([lambda: CounterEnv(5)]), raise_exception=True)
    venv.reset()
    with pytest.raises(ValueError, match="found inf in actions"):
        venv.step(np.array([np.inf]))
    warn_env = VecCheckNan(DummyVecEnv([lambda: NanEnv(5)]))
    warn_env.reset()
    with pytest.warns(UserWarning, match="nan"):
        _step(warn_env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _step(warn_env)  # warn_once


def test_vec_extract_dict_obs():
    venv = VecExtractDictObs(DummyVecEnv([lambda: CounterEnv(1, dict_obs=True)]), key="v")
    assert venv.observation_space.shape == (2,)
    np.testing.assert_array_equal(venv.reset(), [[10, -10]])
    obs, _, dones, infos = _step(venv)
    assert dones[0]
    np.testing.assert_array_equal(infos[0]["terminal_observation"], [11, -11])
    with pytest.raises(KeyError, match="'nope'"):
        VecExtractDictObs(DummyVecEnv([lambda: CounterEnv(1, dict_obs=True)]), key="nope")
