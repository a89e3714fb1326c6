"""make_vec_env, is_wrapped, unwrap_wrapper."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from mlx_baselines3.common.env_util import is_wrapped, make_vec_env, unwrap_wrapper
from mlx_baselines3.common.envs import IdentityEnv
from mlx_baselines3.common.monitor import Monitor
from mlx_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv


def test_make_vec_env_basics_and_seeding():
    venv = make_vec_env("CartPole-v1", n_envs=3, seed=7)
    assert isinstance(venv, DummyVecEnv) and venv.num_envs == 3
    assert venv.env_is_wrapped(Monitor) == [True, True, True]
    assert venv.render_mode == "rgb_array"  # SB3's default for registered ids
    first = venv.reset()
    # Env i is seeded with seed + i at the first reset
    for i in range(3):
        ref, _ = gym.make("CartPole-v1").reset(seed=7 + i)
        np.testing.assert_array_equal(first[i], ref)
    again = make_vec_env("CartPole-v1", n_envs=3, seed=7).reset()
    np.testing.assert_array_equal(first, again)
    # The action spaces are seeded too
    samples = [env.action_space.sample() for env in venv.envs]
    ref_samples = [env.action_space.sample() for env in make_vec_env("CartPole-v1", n_envs=3, seed=7).envs]
    assert samples == ref_samples


def test_make_vec_env_callable_kwargs_wrapper_and_monitor_dir(tmp_path):
    class Marker(gym.Wrapper):
        def __init__(self, env, tag):
            super().__init__(env)
            self.tag = tag

    venv = make_vec_env(
        IdentityEnv,
        n_envs=2,
        start_index=3,
        env_kwargs={"dim": 4, "ep_length": 2},
        monitor_dir=str(tmp_path / "logs"),
        wrapper_class=Marker,
        wrapper_kwargs={"tag": "x"},
    )
    assert venv.get_attr("tag") == ["x", "x"]
    assert venv.get_attr("ep_length") == [2, 2]
    assert venv.observation_space.n == 4
    assert sorted(os.listdir(tmp_path / "logs")) == ["3.monitor.csv", "4.monitor.csv"]
    venv.reset()
    for _ in range(2):
        _, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert dones.all() and infos[0]["episode"]["l"] == 2
    venv.close()
    with pytest.raises(ValueError, match="n_envs"):
        make_vec_env("CartPole-v1", n_envs=0)


def test_make_vec_env_subproc():
    venv = make_vec_env(
        "CartPole-v1",
        n_envs=2,
        seed=0,
        vec_env_cls=SubprocVecEnv,
        vec_env_cls_kwargs={"start_method": "fork"},
    )
    try:
        ref = make_vec_env("CartPole-v1", n_envs=2, seed=0)
        np.testing.assert_array_equal(venv.reset(), ref.reset())
    finally:
        venv.close()


def test_is_wrapped_and_unwrap_wrapper():
    inner = Monitor(gym.make("CartPole-v1"))
    env = gym.wrappers.ClipReward(inner, -1, 1)
    assert is_wrapped(env, Monitor)
    assert unwrap_wrapper(env, Monitor) is inner
    assert not is_wrapped(gym.make("CartPole-v1"), Monitor)
    assert unwrap_wrapper(gym.make("CartPole-v1").unwrapped, Monitor) is None
