"""Schedules, seeding, statistics helpers and device selection."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_baselines3 import PPO
from mlx_baselines3.common.utils import (
    ConstantSchedule,
    FloatSchedule,
    LinearSchedule,
    explained_variance,
    get_device,
    get_latest_run_id,
    get_schedule_fn,
    gpu_available,
    polyak_update,
    safe_mean,
    set_random_seed,
)


def test_linear_schedule_follows_progress_remaining():
    schedule = LinearSchedule(1.0, 0.1, 0.5)
    assert schedule(1.0) == 1.0
    assert schedule(0.75) == pytest.approx(0.55)
    assert schedule(0.5) == pytest.approx(0.1)
    assert schedule(0.0) == pytest.approx(0.1)
    assert ConstantSchedule(3.0)(0.2) == 3.0


def test_get_schedule_fn_wraps_constants_and_callables():
    assert get_schedule_fn(0.5)(0.3) == 0.5
    value = get_schedule_fn(lambda p: p * 2)(0.25)
    assert value == 0.5 and isinstance(value, float)
    assert isinstance(FloatSchedule(FloatSchedule(1.0)).value_schedule, ConstantSchedule)
    with pytest.raises(TypeError, match="schedule"):
        FloatSchedule("fast")


def test_set_random_seed_makes_numpy_and_mlx_reproducible():
    set_random_seed(7)
    a = (np.random.random(3), np.array(mx.random.uniform(shape=(3,))))
    set_random_seed(7)
    b = (np.random.random(3), np.array(mx.random.uniform(shape=(3,))))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_statistics_helpers():
    assert np.isnan(safe_mean([]))
    assert safe_mean([1, 2, 3]) == 2.0
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(np.zeros(4), y) == pytest.approx(1 - np.var(y) / np.var(y))
    assert np.isnan(explained_variance(y, np.ones(4)))


def test_polyak_update_on_trees():
    params = {"a": mx.array([1.0, 2.0]), "b": [mx.array(4.0)]}
    target = {"a": mx.array([0.0, 0.0]), "b": [mx.array(0.0)]}
    out = polyak_update(params, target, 0.25)
    np.testing.assert_allclose(np.array(out["a"]), [0.25, 0.5])
    np.testing.assert_allclose(np.array(out["b"][0]), 1.0)


def test_latest_run_id(tmp_path):
    for name in ("PPO_1", "PPO_3", "PPO_x", "A2C_7"):
        (tmp_path / name).mkdir()
    assert get_latest_run_id(str(tmp_path), "PPO") == 3
    assert get_latest_run_id(str(tmp_path), "DQN") == 0


def test_device_selection():
    assert get_device("cpu") == mx.Device(mx.cpu)
    assert get_device("auto") == (mx.Device(mx.gpu) if gpu_available() else mx.Device(mx.cpu))
    if not gpu_available():  # SB3 falls back to the CPU; we also warn
        with pytest.warns(UserWarning, match="no GPU backend here: using the CPU"):
            assert get_device("gpu") == mx.Device(mx.cpu)
        with pytest.warns(UserWarning, match="no GPU backend"):
            assert PPO("MlpPolicy", "CartPole-v1", device="cuda").device == mx.Device(mx.cpu)
    with pytest.raises(ValueError, match="Unknown device"):
        get_device("tpu")
    model = PPO("MlpPolicy", "CartPole-v1", device="cpu", n_steps=16, batch_size=16)
    assert model.device == mx.Device(mx.cpu)


def test_copy_observation_and_infos_match_deepcopy_and_are_independent():
    from collections import OrderedDict
    from copy import deepcopy

    from mlx_baselines3.common.utils import copy_infos, copy_observation

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    as_dict = OrderedDict(a=np.zeros((2, 2), dtype=np.uint8), b=np.ones(2))
    for obs in (array, as_dict, {"x": np.arange(3)}, [np.arange(2)]):
        copied = copy_observation(obs)
        assert type(copied) is type(obs)
        leaves = list(copied.values()) if isinstance(copied, dict) else [copied]
        sources = list(obs.values()) if isinstance(obs, dict) else [obs]
        for leaf, source in zip(leaves, sources):
            np.testing.assert_array_equal(leaf, source)
            assert not np.shares_memory(leaf, source)
    array_copy = copy_observation(array)
    array[0, 0] = 99.0
    assert array_copy[0, 0] == 0.0

    scalars = [{"TimeLimit.truncated": False}, {"TimeLimit.truncated": True, "n": 3, "s": "x"}]
    copied_infos = copy_infos(scalars)
    assert copied_infos == scalars and all(c is not s for c, s in zip(copied_infos, scalars))
    copied_infos[0]["new"] = 1
    assert "new" not in scalars[0]
    terminal = np.array([1.0, 2.0])
    rich = [{"terminal_observation": terminal, "episode": {"r": 1.0, "l": 2}}, {}]
    copied_rich = copy_infos(rich)
    assert (
        copied_rich[0]["episode"] == rich[0]["episode"]
        and copied_rich[0]["episode"] is not rich[0]["episode"]
    )
    assert not np.shares_memory(copied_rich[0]["terminal_observation"], terminal)
    assert repr(copied_rich) == repr(deepcopy(rich))
