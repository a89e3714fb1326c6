"""RunningMeanStd and VecNormalize against numpy references; safe, strict, atomic save / load."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.running_mean_std import RunningMeanStd
from mlx_baselines3.common.serialization import (
    PickleNotAllowedError,
    SaveFormatError,
    load_json_and_arrays,
    safetensors_dumps,
    save_json_and_arrays,
)
from mlx_baselines3.common.vec_env import (
    DummyVecEnv,
    VecNormalize,
    sync_envs_normalization,
    unwrap_vec_normalize,
)
from mlx_baselines3.common.vec_env.vec_frame_stack import VecFrameStack


class NoisyEnv(gym.Env):
    """Observations with a non-zero mean and non-unit scale; episodes of 5 steps."""

    def __init__(self, dict_obs: bool = False):
        box = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.dict_obs = dict_obs
        self.observation_space = spaces.Dict({"x": box, "d": spaces.Discrete(3)}) if dict_obs else box
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self):
        x = (self.np_random.normal(size=2) * np.array([3.0, 0.5]) + np.array([10.0, -2.0])).astype(np.float32)
        return {"x": x, "d": 1} if self.dict_obs else x

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = float(self.np_random.normal() * 5 + 1)
        return self._obs(), reward, False, self.t >= 5, {}


def _make(n_envs=2, dict_obs=False, seed=0):
    venv = DummyVecEnv([lambda: NoisyEnv(dict_obs) for _ in range(n_envs)])
    venv.seed(seed)
    return venv


def _stats_with_prior(data: np.ndarray, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``data`` plus RunningMeanStd's prior (weight eps, mean 0, var 1)."""
    n = len(data)
    mean = data.sum(0) / (n + eps)
    var = (eps * 1.0 + (data.astype(np.float64) ** 2).sum(0)) / (n + eps) - mean**2
    return mean, var


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 30)]
    eps = 1e-4
    rms = RunningMeanStd(epsilon=eps, shape=(4,))
    for batch in batches:
        rms.update(batch)
    data = np.concatenate(batches)
    n = len(data)
    # The prior is a pseudo-sample of weight eps with mean 0 and variance 1
    expected_mean, expected_var = _stats_with_prior(data, eps)
    np.testing.assert_allclose(rms.mean, expected_mean, rtol=1e-10)
    np.testing.assert_allclose(rms.var, expected_var, rtol=1e-10)
    assert rms.count == pytest.approx(n + eps)
    # Nearly the plain numpy statistics
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-4)


def test_running_mean_std_combine_and_shape_error():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(5, 3))
    rms_ab = RunningMeanStd(shape=(3,))
    rms_ab.update(np.concatenate([a, b]))
    rms_a, rms_b = RunningMeanStd(shape=(3,)), RunningMeanStd(epsilon=0.0, shape=(3,))
    rms_a.update(a)
    rms_b.update(b)
    rms_a.combine(rms_b)
    np.testing.assert_allclose(rms_a.mean, rms_ab.mean)
    np.testing.assert_allclose(rms_a.var, rms_ab.var)
    with pytest.raises(ValueError, match="shape"):
        rms_a.update(np.zeros((4, 2)))


def test_obs_and_reward_normalisation_match_numpy():
    gamma, eps = 0.9, 1e-8
    venv = VecNormalize(_make(), gamma=gamma, epsilon=eps, clip_obs=100.0, clip_reward=100.0)
    raw_obs = [venv.reset()]
    raw_obs[0] = venv.get_original_obs()
    returns = np.zeros(2)
    all_returns = []
    for _ in range(12):
        obs, rewards, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        original = venv.get_original_obs()
        raw_obs.append(original)
        raw_rewards = venv.get_original_reward()
        returns = returns * gamma + raw_rewards
        all_returns.append(returns.copy())
        returns[dones] = 0
        data = np.concatenate(raw_obs).astype(np.float64)
        # Statistics include the current step
        expected_mean, expected_var = _stats_with_prior(data)
        np.testing.assert_allclose(venv.obs_rms.mean, expected_mean, rtol=1e-9)
        np.testing.assert_allclose(venv.obs_rms.var, expected_var, rtol=1e-7)
        expected_obs = (original - venv.obs_rms.mean) / np.sqrt(venv.obs_rms.var + eps)
        np.testing.assert_allclose(obs, expected_obs, rtol=1e-5, atol=1e-5)
        assert obs.dtype == np.float32
        _, ret_var = _stats_with_prior(np.concatenate(all_returns))
        np.testing.assert_allclose(venv.ret_rms.var, ret_var, rtol=1e-7)
        np.testing.assert_allclose(rewards, raw_rewards / np.sqrt(venv.ret_rms.var + eps), rtol=1e-5)
        for i in np.flatnonzero(dones):
            # The terminal observation is normalised with the same statistics
            assert infos[i]["terminal_observation"].dtype == np.float32
            assert np.abs(infos[i]["terminal_observation"]).max() < 10
    assert np.abs(venv.obs_rms.mean - [10.0, -2.0]).max() < 3.0


def test_clipping_and_unnormalize():
    venv = VecNormalize(_make(), clip_obs=0.5, clip_reward=0.1)
    venv.reset()
    for _ in range(5):
        obs, rewards, _, _ = venv.step(np.zeros(2, dtype=np.int64))
        assert np.abs(obs).max() <= 0.5 and np.abs(rewards).max() <= 0.1 + 1e-7
    x = np.array([[9.0, -2.5], [11.0, -1.9]], np.float32)
    big = VecNormalize(_make(), clip_obs=1e6)
    big.reset()
    big.step(np.zeros(2, dtype=np.int64))
    np.testing.assert_allclose(big.unnormalize_obs(big.normalize_obs(x)), x, rtol=1e-5)
    r = np.array([1.0, -3.0])
    np.testing.assert_allclose(big.unnormalize_reward(big.normalize_reward(r)), r, rtol=1e-6)


def test_training_false_freezes_statistics():
    venv = VecNormalize(_make())
    venv.reset()
    venv.step(np.zeros(2, dtype=np.int64))
    venv.training = False
    mean, ret_var = venv.obs_rms.mean.copy(), venv.ret_rms.var.copy()
    venv.step(np.zeros(2, dtype=np.int64))
    venv.reset()
    np.testing.assert_array_equal(venv.obs_rms.mean, mean)
    np.testing.assert_array_equal(venv.ret_rms.var, ret_var)


def test_dict_observations_and_norm_obs_keys():
    venv = VecNormalize(_make(dict_obs=True), norm_obs_keys=["x"])
    obs = venv.reset()
    assert set(venv.obs_rms) == {"x"}
    np.testing.assert_array_equal(obs["d"], [1, 1])  # not normalised
    with pytest.raises(ValueError, match="norm_obs_keys"):
        VecNormalize(_make(dict_obs=True))  # the Discrete key cannot be normalised
    with pytest.raises(ValueError, match="'nope'"):
        VecNormalize(_make(dict_obs=True), norm_obs_keys=["nope"])
    with pytest.raises(ValueError, match="Dict"):
        VecNormalize(_make(), norm_obs_keys=["x"])


def _trained(dict_obs=False, **kwargs):
    venv = VecNormalize(_make(dict_obs=dict_obs), norm_obs_keys=["x"] if dict_obs else None, **kwargs)
    venv.reset()
    for _ in range(6):
        venv.step(np.ones(2, dtype=np.int64))
    return venv


def _assert_same_statistics(loaded, venv):
    for name, rms in venv._named_obs_rms().items():
        other = loaded._named_obs_rms()[name]
        np.testing.assert_array_equal(other.mean, rms.mean)
        np.testing.assert_array_equal(other.var, rms.var)
        assert other.count == rms.count
    np.testing.assert_array_equal(loaded.ret_rms.var, venv.ret_rms.var)
    assert loaded.ret_rms.count == venv.ret_rms.count


def test_save_load_roundtrip_uses_shared_format_without_pickle(tmp_path, monkeypatch):
    venv = _trained(gamma=0.95, clip_obs=7.0, clip_reward=3.0, epsilon=1e-6)
    venv.training = False
    path = tmp_path / "sub" / "vecnormalize.pkl"
    venv.save(path)
    assert path.exists()  # the path is used as given, as SB3 does (no suffix added)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert names == {"format_version", "data.json", "arrays.safetensors", "system_info.txt"}
        header = json.loads(archive.read("data.json"))
    assert header["kind"] == "VecNormalize"
    assert header["data"]["config"]["clip_obs"] == 7.0
    # the arrays are plain safetensors, readable by the shared reader
    data, arrays = load_json_and_arrays(path, kind="VecNormalize")
    assert set(arrays) == {"obs_rms.mean", "obs_rms.var", "ret_rms.mean", "ret_rms.var"}
    np.testing.assert_array_equal(arrays["obs_rms.mean"], venv.obs_rms.mean)

    # Loading never unpickles anything
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used on load")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    loaded = VecNormalize.load(path, _make())
    assert (loaded.gamma, loaded.clip_obs, loaded.clip_reward, loaded.epsilon) == (0.95, 7.0, 3.0, 1e-6)
    assert loaded.norm_reward and loaded.norm_obs and not loaded.training
    _assert_same_statistics(loaded, venv)
    x = np.array([[9.0, -2.5], [11.0, -1.9]], np.float32)
    np.testing.assert_array_equal(loaded.normalize_obs(x), venv.normalize_obs(x))
    r = np.array([1.0, -3.0])
    np.testing.assert_array_equal(loaded.normalize_reward(r), venv.normalize_reward(r))
    assert unwrap_vec_normalize(VecFrameStack(loaded, 2)) is loaded


def test_save_load_dict_observations_and_file_objects():
    venv = _trained(dict_obs=True, norm_reward=False)
    buffer = io.BytesIO()
    venv.save(buffer)
    buffer.seek(0)
    loaded = VecNormalize.load(buffer, _make(dict_obs=True))
    assert loaded.norm_obs_keys == ["x"] and set(loaded.obs_rms) == {"x"} and not loaded.norm_reward
    _assert_same_statistics(loaded, venv)
    obs = {"x": np.array([[9.0, -2.5], [11.0, -1.9]], np.float32), "d": np.array([1, 2])}
    out, expected = loaded.normalize_obs(obs), venv.normalize_obs(obs)
    np.testing.assert_array_equal(out["x"], expected["x"])
    np.testing.assert_array_equal(out["d"], [1, 2])


def test_save_without_obs_normalisation_round_trips(tmp_path):
    venv = _trained(norm_obs=False)
    venv.save(tmp_path / "v")
    _, arrays = load_json_and_arrays(tmp_path / "v")
    assert set(arrays) == {"ret_rms.mean", "ret_rms.var"}
    loaded = VecNormalize.load(tmp_path / "v", _make())
    assert not loaded.norm_obs
    np.testing.assert_array_equal(loaded.ret_rms.var, venv.ret_rms.var)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "v.pkl"
    first = _trained()
    first.save(path)
    before = path.read_bytes()
    original_writestr = zipfile.ZipFile.writestr

    def failing_writestr(self, name, *args, **kwargs):
        if str(getattr(name, "filename", name)) == "arrays.safetensors":
            raise OSError("disk full")
        return original_writestr(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    second = _trained(gamma=0.5)
    with pytest.raises(OSError, match="disk full"):
        second.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["v.pkl"]  # and no temporary file is left behind
    assert VecNormalize.load(path, _make()).gamma == 0.99


def test_load_is_strict(tmp_path):
    venv = VecNormalize(_make())
    venv.save(tmp_path / "v.zip")

    class WideEnv(NoisyEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)

    with pytest.raises(ValueError, match=r"obs_rms.mean' has shape \(2,\).*expects \(3,\)"):
        VecNormalize.load(tmp_path / "v.zip", DummyVecEnv([WideEnv]))
    with pytest.raises(ValueError, match="keys"):  # a Box save cannot wrap a Dict env
        VecNormalize.load(tmp_path / "v.zip", _make(dict_obs=True))
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(SaveFormatError, match="not a zip"):
        VecNormalize.load(tmp_path / "junk.zip", _make())
    content = (tmp_path / "v.zip").read_bytes()
    (tmp_path / "truncated.zip").write_bytes(content[: len(content) // 2])
    with pytest.raises(SaveFormatError, match="truncated"):
        VecNormalize.load(tmp_path / "truncated.zip", _make())
    with pytest.raises(FileNotFoundError):
        VecNormalize.load(tmp_path / "missing.pkl", _make())
    save_json_and_arrays(tmp_path / "other.zip", {"x": 1}, {}, kind="Other")
    with pytest.raises(SaveFormatError, match="holds a 'Other', not a 'VecNormalize'"):
        VecNormalize.load(tmp_path / "other.zip", _make())

    data, arrays = venv.get_state()
    data["format_version"] = 99
    save_json_and_arrays(tmp_path / "newer.zip", data, arrays, kind="VecNormalize")
    with pytest.raises(SaveFormatError, match="newer version"):
        VecNormalize.load(tmp_path / "newer.zip", _make())
    data, arrays = venv.get_state()
    data["config"]["surprise"] = 1
    save_json_and_arrays(tmp_path / "unknown.zip", data, arrays, kind="VecNormalize")
    with pytest.raises(SaveFormatError, match=r"unknown VecNormalize settings \['surprise'\]"):
        VecNormalize.load(tmp_path / "unknown.zip", _make())
    data, arrays = venv.get_state()
    del data["counts"]["obs_rms"]
    save_json_and_arrays(tmp_path / "nocount.zip", data, arrays, kind="VecNormalize")
    with pytest.raises(ValueError, match="no count for 'obs_rms'"):
        VecNormalize.load(tmp_path / "nocount.zip", _make())

    data, arrays = venv.get_state()
    del arrays["obs_rms.var"]
    with pytest.raises(ValueError, match=r"missing arrays \['obs_rms.var'\]"):
        venv.set_state(data, arrays)
    data, arrays = venv.get_state()
    arrays["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected arrays \['extra'\]"):
        venv.set_state(data, arrays)
    # A rejected state changes nothing (all checks run before any statistic is replaced)
    other_data, other_arrays = _trained(gamma=0.5).get_state()
    other_arrays["obs_rms.var"] = np.ones(3)
    ret_var = venv.ret_rms.var.copy()
    with pytest.raises(ValueError, match="obs_rms.var"):
        venv.set_state(other_data, other_arrays)
    assert other_arrays["ret_rms.var"] != ret_var
    np.testing.assert_array_equal(venv.ret_rms.var, ret_var)


def test_load_refuses_pickled_settings(tmp_path):
    header = {"kind": "VecNormalize", "data": {"config": {"__type__": "pickled", "key": "config"}}}
    with zipfile.ZipFile(tmp_path / "crafted.pkl", "w") as archive:
        archive.writestr("format_version", "1")
        archive.writestr("data.json", json.dumps(header))
        archive.writestr("arrays.safetensors", safetensors_dumps({}))
        archive.writestr("pickled/config", pickle.dumps({"gamma": 0.5}))
    with pytest.raises(PickleNotAllowedError):
        VecNormalize.load(tmp_path / "crafted.pkl", _make())


def test_sync_envs_normalization():
    train = VecNormalize(_make())
    train.reset()
    train.step(np.zeros(2, dtype=np.int64))
    evaluation = VecNormalize(_make(seed=1), training=False, norm_reward=False)
    sync_envs_normalization(train, evaluation)
    np.testing.assert_array_equal(evaluation.obs_rms.mean, train.obs_rms.mean)
    assert evaluation.obs_rms is not train.obs_rms  # a copy
    assert not evaluation.training and not evaluation.norm_reward
    with pytest.raises(TypeError, match="synchronizing"):
        sync_envs_normalization(train, _make())


def test_pickle_and_set_venv():
    import pickle

    venv = VecNormalize(_make())
    venv.reset()
    clone = pickle.loads(pickle.dumps(venv))
    assert clone.venv is None
    clone.set_venv(_make())
    np.testing.assert_array_equal(clone.obs_rms.mean, venv.obs_rms.mean)
    with pytest.raises(ValueError, match="already initialized"):
        clone.set_venv(_make())
