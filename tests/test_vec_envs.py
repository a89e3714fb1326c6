"""DummyVecEnv / SubprocVecEnv: SB3's VecEnv API, auto-reset, seeding, worker failures."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.monitor import Monitor
from mlx_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    SubprocVecEnvError,
    VecEnvWrapper,
    tile_images,
)

START_METHOD = "fork"


class CountingEnv(gym.Env):
    """Obs = [step count]; ends after ``ep_len`` steps, terminated or truncated; reward = action."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, ep_len: int = 3, terminate: bool = True, render_mode: str | None = None):
        self.observation_space = spaces.Box(0, 100, (1,), np.float32)
        self.action_space = spaces.Box(-10, 10, (1,), np.float32)
        self.ep_len, self.terminate, self.render_mode = ep_len, terminate, render_mode
        self.t = 0
        self.last_options: dict | None = None
        self.last_seed: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.last_seed, self.last_options = seed, options
        self.t = 0
        return np.array([0.0], np.float32), {"reset_marker": True}

    def step(self, action):
        self.t += 1
        done = self.t >= self.ep_len
        return (
            np.array([float(self.t)], np.float32),
            float(np.asarray(action).sum()),
            done and self.terminate,
            done and not self.terminate,
            {},
        )

    def render(self):
        return np.full((2, 2, 3), self.t, dtype=np.uint8)

    def double(self, x: int) -> int:
        return 2 * x


class RandomWalkEnv(gym.Env):
    """Stochastic env driven by its own np_random: random episode ends of both kinds."""

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = (self.np_random.normal(size=3) + action).astype(np.float32)
        terminated = bool(self.np_random.random() < 0.1)
        truncated = self.t >= 7
        return obs, float(obs[0]), terminated, truncated, {}


class FailingEnv(CountingEnv):
    def __init__(self, fail_at: int):
        super().__init__(ep_len=100)
        self.fail_at = fail_at

    def step(self, action):
        if self.t + 1 >= self.fail_at:
            raise ValueError("boom from the env")
        return super().step(action)


def _ones(n: int) -> np.ndarray:
    return np.ones((n, 1), np.float32)


@pytest.fixture(params=["dummy", "subproc"])
def vec_cls(request):
    if request.param == "dummy":
        return DummyVecEnv
    return lambda fns: SubprocVecEnv(fns, start_method=START_METHOD)


def test_auto_reset_terminal_observation_and_truncation(vec_cls):
    venv = vec_cls([lambda: CountingEnv(2, terminate=True), lambda: CountingEnv(3, terminate=False)])
    try:
        obs = venv.reset()
        assert obs.shape == (2, 1) and obs.dtype == np.float32
        assert venv.reset_infos == [{"reset_marker": True}, {"reset_marker": True}]
        obs, rew, done, infos = venv.step(_ones(2) * 2)
        np.testing.assert_array_equal(obs[:, 0], [1, 1])
        np.testing.assert_array_equal(rew, [2, 2])
        assert done.dtype == bool and not done.any()
        assert infos[0]["TimeLimit.truncated"] is False
        # env 0 terminates at step 2: obs is the next episode's first, terminal obs in info
        obs, rew, done, infos = venv.step(_ones(2))
        np.testing.assert_array_equal(done, [True, False])
        np.testing.assert_array_equal(obs[:, 0], [0, 2])
        np.testing.assert_array_equal(infos[0]["terminal_observation"], [2.0])
        assert infos[0]["TimeLimit.truncated"] is False  # terminated, not truncated
        assert "terminal_observation" not in infos[1]
        # env 1 is truncated at step 3
        obs, _, done, infos = venv.step(_ones(2))
        np.testing.assert_array_equal(done, [False, True])
        np.testing.assert_array_equal(obs[:, 0], [1, 0])
        np.testing.assert_array_equal(infos[1]["terminal_observation"], [3.0])
        assert infos[1]["TimeLimit.truncated"] is True
    finally:
        venv.close()


def test_seed_applies_at_next_reset_only(vec_cls):
    venv = vec_cls([RandomWalkEnv, RandomWalkEnv])
    try:
        assert venv.seed(5) == [5, 6]
        first = venv.reset()
        # Envs get different seeds, so different observations
        assert not np.allclose(first[0], first[1])
        second = venv.reset()  # not reseeded: continues the RNG stream
        assert not np.allclose(first, second)
        venv.seed(5)
        np.testing.assert_array_equal(venv.reset(), first)
        # Reference: the same env seeded directly with 5 and 6
        for i, seed in enumerate((5, 6)):
            ref_obs, _ = RandomWalkEnv().reset(seed=seed)
            np.testing.assert_array_equal(first[i], ref_obs)
    finally:
        venv.close()


def test_set_options_and_attr_methods():
    venv = DummyVecEnv([CountingEnv, lambda: Monitor(CountingEnv(ep_len=5))])
    venv.set_options({"a": 1})
    venv.reset()
    assert venv.get_attr("last_options") == [{"a": 1}, {"a": 1}]
    venv.reset()  # options are used once
    assert venv.get_attr("last_options") == [None, None]
    venv.set_options([{"b": 1}, {"b": 2}])
    venv.reset()
    assert venv.get_attr("last_options") == [{"b": 1}, {"b": 2}]
    with pytest.raises(ValueError, match="2 environments"):
        venv.set_options([{}])
    # get_attr reaches through the Monitor wrapper
    assert venv.get_attr("ep_len") == [3, 5]
    assert venv.get_attr("ep_len", indices=1) == [5]
    venv.set_attr("ep_len", 7, indices=[0])
    assert venv.get_attr("ep_len") == [7, 5]
    assert venv.env_method("double", 4) == [8, 8]
    assert venv.env_method("double", x=1, indices=[1]) == [2]
    assert venv.env_is_wrapped(Monitor) == [False, True]
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")


def test_subproc_attr_methods():
    venv = SubprocVecEnv([CountingEnv, lambda: Monitor(CountingEnv(ep_len=5))], start_method=START_METHOD)
    try:
        assert venv.get_attr("ep_len") == [3, 5]
        venv.set_attr("ep_len", 9, indices=0)
        assert venv.get_attr("ep_len") == [9, 5]
        assert venv.env_method("double", 3, indices=[1]) == [6]
        assert venv.env_is_wrapped(Monitor) == [False, True]
        with pytest.raises(AttributeError, match="no_such_attribute"):
            venv.get_attr("no_such_attribute")
        venv.set_options({"z": 3})
        venv.reset()
        assert venv.get_attr("last_options") == [{"z": 3}, {"z": 3}]
    finally:
        venv.close()


def test_dict_observations(vec_cls):
    def make_dict_env():
        env = gym.make("CartPole-v1")
        return gym.wrappers.TransformObservation(
            env,
            lambda o: {"a": o, "b": np.int64(1)},
            spaces.Dict({"a": env.observation_space, "b": spaces.Discrete(3)}),
        )

    venv = vec_cls([make_dict_env, make_dict_env, make_dict_env])
    try:
        obs = venv.reset()
        assert set(obs) == {"a", "b"}
        assert obs["a"].shape == (3, 4) and obs["b"].shape == (3,)
    finally:
        venv.close()


def test_duplicate_env_instance_rejected():
    env = CountingEnv()
    with pytest.raises(ValueError, match="same environment instance"):
        DummyVecEnv([lambda: env, lambda: env])
    with pytest.raises(TypeError, match="gymnasium.Env"):
        DummyVecEnv([lambda: "not an env"])  # type: ignore[list-item,return-value]


def test_tile_images_layout():
    images = np.stack([np.full((2, 3, 1), i + 1, np.uint8) for i in range(3)])
    big = tile_images(images)
    # 3 images -> 2 rows x 2 columns, the last cell black
    assert big.shape == (4, 6, 1)
    np.testing.assert_array_equal(big[:2, :3, 0], 1)
    np.testing.assert_array_equal(big[:2, 3:, 0], 2)
    np.testing.assert_array_equal(big[2:, :3, 0], 3)
    np.testing.assert_array_equal(big[2:, 3:, 0], 0)


def test_render_rgb_array_tiles_the_envs():
    venv = DummyVecEnv([lambda: CountingEnv(render_mode="rgb_array") for _ in range(4)])
    venv.reset()
    assert venv.render_mode == "rgb_array"
    image = venv.render()
    assert image is not None and image.shape == (4, 4, 3)
    assert len(venv.get_images()) == 4


def test_vec_env_wrapper_attribute_forwarding():
    class Identity(VecEnvWrapper):
        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            return self.venv.step_wait()

    venv = DummyVecEnv([CountingEnv])
    wrapped = Identity(venv)
    assert wrapped.envs is venv.envs  # looked up on the inner VecEnv
    assert wrapped.unwrapped is venv
    with pytest.raises(AttributeError):
        _ = wrapped.does_not_exist


def test_subproc_matches_dummy_trajectories():
    n_envs = 3
    dummy = DummyVecEnv([RandomWalkEnv] * n_envs)
    subproc = SubprocVecEnv([RandomWalkEnv] * n_envs, start_method=START_METHOD)
    try:
        dummy.seed(123)
        subproc.seed(123)
        np.testing.assert_array_equal(dummy.reset(), subproc.reset())
        rng = np.random.default_rng(0)
        n_dones = 0
        for _ in range(40):
            actions = rng.integers(0, 2, size=n_envs)
            obs_d, rew_d, done_d, infos_d = dummy.step(actions)
            obs_s, rew_s, done_s, infos_s = subproc.step(actions)
            np.testing.assert_array_equal(obs_d, obs_s)
            np.testing.assert_array_equal(rew_d, rew_s)
            np.testing.assert_array_equal(done_d, done_s)
            assert rew_s.dtype == rew_d.dtype == np.float32
            for info_d, info_s in zip(infos_d, infos_s):
                assert info_d["TimeLimit.truncated"] == info_s["TimeLimit.truncated"]
                if "terminal_observation" in info_d:
                    np.testing.assert_array_equal(
                        info_d["terminal_observation"], info_s["terminal_observation"]
                    )
            n_dones += int(done_d.sum())
        assert n_dones > 5  # the comparison covered auto-resets
    finally:
        subproc.close()


def test_subproc_worker_exception_is_reported_quickly():
    venv = SubprocVecEnv([CountingEnv, lambda: FailingEnv(fail_at=2)], start_method=START_METHOD)
    try:
        venv.reset()
        venv.step(_ones(2))
        start = time.monotonic()
        with pytest.raises(SubprocVecEnvError, match="env 1") as excinfo:
            venv.step(_ones(2))
        assert time.monotonic() - start < 5
        assert excinfo.value.env_index == 1
        assert "boom from the env" in str(excinfo.value)
        # The other worker still answers: pipes stayed in sync
        assert venv.get_attr("t", indices=0) == [2]
    finally:
        venv.close()
    assert all(not p.is_alive() for p in venv.processes)


def test_subproc_killed_worker_is_reported_quickly():
    venv = SubprocVecEnv([CountingEnv, CountingEnv, CountingEnv], start_method=START_METHOD)
    try:
        venv.reset()
        os.kill(venv.processes[1].pid, signal.SIGKILL)  # type: ignore[arg-type]
        start = time.monotonic()
        with pytest.raises(SubprocVecEnvError, match="env 1") as excinfo:
            venv.step(_ones(3))
        assert time.monotonic() - start < 5
        assert "died" in str(excinfo.value) or "not running" in str(excinfo.value)
    finally:
        start = time.monotonic()
        venv.close()
        assert time.monotonic() - start < 5
    assert all(not p.is_alive() for p in venv.processes)


def test_subproc_env_construction_error():
    def bad_env() -> Any:
        raise RuntimeError("cannot build this env")

    start = time.monotonic()
    with pytest.raises(SubprocVecEnvError, match="cannot build this env"):
        SubprocVecEnv([bad_env], start_method=START_METHOD)
    assert time.monotonic() - start < 5


def test_subproc_close_reaps_workers_and_is_idempotent():
    venv = SubprocVecEnv([CountingEnv, CountingEnv], start_method=START_METHOD)
    venv.reset()
    venv.step_async(_ones(2))  # close while a step is pending
    venv.close()
    venv.close()
    assert all(not p.is_alive() for p in venv.processes)
    with pytest.raises(RuntimeError, match="closed"):
        venv.reset()


def test_subproc_forkserver_start_method():
    # The default start method (as SB3): envs are shipped with cloudpickle, lambdas included
    ep_len = 4
    venv = SubprocVecEnv([lambda: CountingEnv(ep_len)], start_method="forkserver")
    try:
        venv.reset()
        for _ in range(ep_len - 1):
            venv.step(_ones(1))
        _, _, done, infos = venv.step(_ones(1))
        assert done[0] and infos[0]["terminal_observation"][0] == ep_len
    finally:
        venv.close()
