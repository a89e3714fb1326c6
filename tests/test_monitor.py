"""Monitor: episode statistics in info, CSV files, load_results."""

from __future__ import annotations

import csv
import json
import os

import gymnasium as gym
import numpy as np
import pytest

from mlx_baselines3.common.monitor import LoadMonitorResultsError, Monitor, get_monitor_files, load_results


def _run_episodes(env: gym.Env, n: int, seed: int = 0) -> list[dict]:
    episodes = []
    env.reset(seed=seed)
    env.action_space.seed(seed)
    rewards = 0.0
    length = 0
    while len(episodes) < n:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        rewards += float(reward)
        length += 1
        if terminated or truncated:
            episodes.append({"expected_r": rewards, "expected_l": length, **info["episode"]})
            rewards, length = 0.0, 0
            env.reset()
    return episodes


def test_monitor_episode_info_and_csv(tmp_path):
    path = str(tmp_path / "run")
    env = Monitor(gym.make("CartPole-v1"), path)
    episodes = _run_episodes(env, 3)
    for ep in episodes:
        assert ep["r"] == pytest.approx(ep["expected_r"]) and ep["l"] == ep["expected_l"]
        assert ep["t"] >= 0
    assert env.get_episode_rewards() == [ep["expected_r"] for ep in episodes]
    assert env.get_episode_lengths() == [ep["expected_l"] for ep in episodes]
    assert env.get_total_steps() == sum(ep["expected_l"] for ep in episodes)
    assert len(env.get_episode_times()) == 3
    env.close()
    file_name = path + ".monitor.csv"
    with open(file_name) as file:
        header = json.loads(file.readline()[1:])
        rows = list(csv.DictReader(file))
    assert header["env_id"] == "CartPole-v1" and "t_start" in header
    assert [int(row["l"]) for row in rows] == [ep["l"] for ep in episodes]
    assert [float(row["r"]) for row in rows] == [ep["r"] for ep in episodes]


def test_monitor_folder_filename_info_and_reset_keywords(tmp_path):
    class InfoEnv(gym.Wrapper):
        def reset(self, **kwargs):
            kwargs.pop("level", None)
            return self.env.reset(**kwargs)

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            info["score"] = 42
            return obs, reward, terminated, truncated, info

    env = Monitor(
        InfoEnv(gym.make("CartPole-v1")), str(tmp_path), reset_keywords=("level",), info_keywords=("score",)
    )
    with pytest.raises(ValueError, match="level"):
        env.reset()
    env.reset(level=3)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(0)
        done = terminated or truncated
    assert info["episode"]["score"] == 42 and info["episode"]["level"] == 3
    env.close()
    assert os.path.exists(tmp_path / "monitor.csv")
    with open(tmp_path / "monitor.csv") as file:
        file.readline()
        row = next(csv.DictReader(file))
    assert row["score"] == "42" and row["level"] == "3"


def test_monitor_early_reset_and_step_before_reset():
    env = Monitor(gym.make("CartPole-v1"), allow_early_resets=False)
    with pytest.raises(RuntimeError, match="needs reset"):
        env.step(0)
    env.reset()
    env.step(0)
    with pytest.raises(RuntimeError, match="allow_early_resets"):
        env.reset()


def test_load_results(tmp_path):
    pytest.importorskip("pandas")
    for rank in range(2):
        env = Monitor(gym.make("CartPole-v1"), str(tmp_path / str(rank)))
        _run_episodes(env, 2 + rank, seed=rank)
        env.close()
    assert len(get_monitor_files(str(tmp_path))) == 2
    data = load_results(str(tmp_path))
    assert len(data) == 5
    assert list(data["t"]) == sorted(data["t"])
    assert np.all(data["t"] >= 0) and np.all(data["l"] > 0)
    with pytest.raises(LoadMonitorResultsError):
        load_results(str(tmp_path / "empty"))


def test_results_writer_append(tmp_path):
    path = str(tmp_path / "a")
    env = Monitor(gym.make("CartPole-v1"), path)
    _run_episodes(env, 1)
    env.close()
    env = Monitor(gym.make("CartPole-v1"), path, override_existing=False)
    _run_episodes(env, 1)
    env.close()
    with open(path + ".monitor.csv") as file:
        lines = file.read().splitlines()
    assert lines[0].startswith("#") and lines[1] == "r,l,t"
    assert len(lines) == 4  # header lines once, two episodes
