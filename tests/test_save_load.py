"""Saving and loading whole models (PPO on CartPole) and policies: exactness, safety, strictness."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import gymnasium as gym
import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_baselines3 import PPO
from mlx_baselines3.common import serialization as ser
from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.common.save_util import load_from_zip_file
from mlx_baselines3.common.serialization import PickleNotAllowedError, SaveFormatError, StateDictMismatchError
from mlx_baselines3.common.utils import LinearSchedule

TINY = dict(n_steps=16, batch_size=16, n_epochs=1)
OBS = np.random.default_rng(123).uniform(-0.2, 0.2, size=(8, 4)).astype(np.float32)


def _make_model(**kwargs) -> PPO:
    return PPO("MlpPolicy", gym.make("CartPole-v1"), **{"seed": 0, **TINY, **kwargs})


def _numpy_params(model: PPO) -> dict[str, dict[str, np.ndarray]]:
    return {
        name: {k: np.array(v) for k, v in group.items()} for name, group in model.get_parameters().items()
    }


def _assert_same_params(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        assert set(a[name]) == set(b[name]), name
        for key in a[name]:
            assert a[name][key].dtype == b[name][key].dtype, (name, key)
            assert a[name][key].tobytes() == b[name][key].tobytes(), (name, key)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PPO trained for 4 iterations, saved once."""
    model = _make_model()
    model.learn(64)
    path = tmp_path_factory.mktemp("models") / "ppo_cartpole"
    model.save(path)
    return model, path.with_suffix(".zip")


def _rewrite(src, dst, replace: dict[str, bytes | None]) -> None:
    """Copy a zip, replacing (bytes) or dropping (None) entries, adding new ones."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename in replace:
                continue
            zout.writestr(item, zin.read(item))
        for name, content in replace.items():
            if content is not None:
                zout.writestr(name, content)


# ---------------------------------------------------------------------------------------------
# Exact round trip
# ---------------------------------------------------------------------------------------------


def test_zip_layout_and_plain_json(trained) -> None:
    _, path = trained
    assert path.exists()  # ".zip" appended
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        data = json.loads(archive.read("data.json"))  # strict JSON, no pickle anywhere
        system_info = archive.read("system_info.txt").decode()
    assert {"format_version", "data.json", "policy.safetensors", "policy.optimizer.safetensors"} <= names
    assert not any(name.startswith("pickled/") for name in names)
    assert data["pickled"] == {}
    assert data["data"]["n_steps"] == 16 and data["data"]["num_timesteps"] == 64
    assert data["data"]["action_space"] == {
        "__type__": "space",
        "space": "Discrete",
        "n": 2,
        "start": 0,
        "dtype": "int64",
    }
    for word in ("mlx_baselines3", "MLX", "Numpy", "Gymnasium", "Python", "OS", "MLX device"):
        assert word in system_info


def test_load_gives_identical_parameters_optimizer_state_and_predictions(trained) -> None:
    model, path = trained
    loaded = PPO.load(path)  # no env: enough to predict
    _assert_same_params(_numpy_params(model), _numpy_params(loaded))
    assert (
        int(np.array(loaded.policy.optimizer.state["step"])) == model._n_updates * 1
    )  # one step per minibatch
    actions, _ = model.predict(OBS, deterministic=True)
    loaded_actions, _ = loaded.predict(OBS, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    obs_mx = mx.array(OBS)
    for a, b in zip(
        model.policy.forward(obs_mx, deterministic=True), loaded.policy.forward(obs_mx, deterministic=True)
    ):
        assert np.array(a).tobytes() == np.array(b).tobytes()
    for name in (
        "num_timesteps",
        "_n_updates",
        "_episode_num",
        "_total_timesteps",
        "_num_timesteps_at_start",
        "seed",
    ):
        assert getattr(loaded, name) == getattr(model, name), name
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.n_steps == 16 and loaded.batch_size == 16 and loaded.n_envs == 1
    assert loaded.env is None
    assert [ep["r"] for ep in loaded.ep_info_buffer] == [ep["r"] for ep in model.ep_info_buffer]


def test_training_continues_exactly_as_the_original_would(trained, tmp_path) -> None:
    model, path = trained
    # Two copies loaded from one file train identically.
    model_a = PPO.load(path, env=gym.make("CartPole-v1"))
    model_b = PPO.load(path, env=gym.make("CartPole-v1"))
    # MLX's PRNG is global: seed right before each run.
    model_a.set_random_seed(7)
    model_a.learn(16, reset_num_timesteps=False)
    model_b.set_random_seed(7)
    model_b.learn(16, reset_num_timesteps=False)
    _assert_same_params(_numpy_params(model_a), _numpy_params(model_b))

    # The original (never saved/loaded) model takes the same step as its loaded copy.
    original = _make_model()
    original.learn(64)
    original.save(tmp_path / "snapshot")
    copy = PPO.load(tmp_path / "snapshot", env=gym.make("CartPole-v1"))
    original.set_env(gym.make("CartPole-v1"))
    before = _numpy_params(original)
    original.set_random_seed(11)
    original.learn(16, reset_num_timesteps=False)
    copy.set_random_seed(11)
    copy.learn(16, reset_num_timesteps=False)
    after = _numpy_params(original)
    assert any(before["policy"][k].tobytes() != after["policy"][k].tobytes() for k in before["policy"])
    _assert_same_params(after, _numpy_params(copy))
    assert copy.num_timesteps == original.num_timesteps == 80
    assert copy._n_updates == original._n_updates == 5
    assert int(np.array(copy.policy.optimizer.state["step"])) == 5


def test_force_reset_false_keeps_the_last_observation(trained) -> None:
    model, path = trained
    kept = PPO.load(path, env=gym.make("CartPole-v1"), force_reset=False)
    np.testing.assert_array_equal(kept._last_obs, model._last_obs)
    reset = PPO.load(path, env=gym.make("CartPole-v1"))
    assert reset._last_obs is None


def test_kwargs_override_stored_arguments(trained) -> None:
    _, path = trained
    loaded = PPO.load(path, env=gym.make("CartPole-v1"), n_steps=32, tensorboard_log=None, my_attr=5)
    assert loaded.n_steps == 32 and loaded.rollout_buffer.buffer_size == 32
    assert loaded.my_attr == 5
    with pytest.raises(ValueError, match="policy kwargs do not equal"):
        PPO.load(path, policy_kwargs=dict(net_arch=[8]))


def test_mismatched_env_is_refused_with_both_spaces_named(trained) -> None:
    _, path = trained
    with pytest.raises(ValueError) as info:
        PPO.load(path, env=gym.make("Acrobot-v1"))
    message = str(info.value)
    assert "observation space" in message
    assert str(gym.make("CartPole-v1").observation_space) in message
    assert str(gym.make("Acrobot-v1").observation_space) in message


def test_mismatched_action_space_is_refused(trained) -> None:
    _, path = trained

    class ThreeActions(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.action_space = gym.spaces.Discrete(3)

    with pytest.raises(ValueError, match="action space.*Discrete\\(2\\).*Discrete\\(3\\)"):
        PPO.load(path, env=ThreeActions(gym.make("CartPole-v1")))


def test_file_object_and_print_system_info(trained, capsys) -> None:
    model, path = trained
    with open(path, "rb") as file:
        loaded = PPO.load(file, print_system_info=True)
    assert "SAVED MODEL SYSTEM INFO" in capsys.readouterr().out
    _assert_same_params(_numpy_params(model), _numpy_params(loaded))


# ---------------------------------------------------------------------------------------------
# Pickled objects: refused by default
# ---------------------------------------------------------------------------------------------


class _WriteFileOnUnpickle:
    """Unpickling this runs ``open(path, 'w').write('pwned')``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


def _crafted(path, dst, marker) -> None:
    with zipfile.ZipFile(path) as archive:
        header = json.loads(archive.read("data.json"))
    header["data"]["learning_rate"] = {"__type__": "pickled", "key": "learning_rate"}
    header["pickled"] = {"learning_rate": "pickled/0.pkl"}
    payload = pickle.dumps(_WriteFileOnUnpickle(str(marker)))
    _rewrite(path, dst, {"data.json": json.dumps(header).encode(), "pickled/0.pkl": payload})


def test_pickle_payload_is_never_run_without_opt_in(trained, tmp_path) -> None:
    _, path = trained
    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "crafted.zip"
    _crafted(path, crafted, marker)

    with pytest.raises(PickleNotAllowedError, match="\\['learning_rate'\\].*allow_pickle=True"):
        PPO.load(crafted)
    assert not marker.exists()
    with pytest.raises(PickleNotAllowedError):
        load_from_zip_file(crafted)
    assert not marker.exists()

    loaded = PPO.load(crafted, custom_objects={"learning_rate": 1e-3})  # replaced, never unpickled
    assert loaded.learning_rate == 1e-3
    assert not marker.exists()

    loaded.set_parameters(crafted)  # arrays only: the pickled entry is not touched
    assert not marker.exists()

    # The payload is real: opting in runs it (then the bogus learning rate fails to build a model).
    with pytest.raises(Exception):  # noqa: B017
        PPO.load(crafted, allow_pickle=True)
    assert marker.read_text() == "pwned"


def test_array_entries_are_never_unpickled(trained, tmp_path) -> None:
    _, path = trained
    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "crafted_arrays.zip"
    _rewrite(path, crafted, {"policy.safetensors": pickle.dumps(_WriteFileOnUnpickle(str(marker)))})
    with pytest.raises(SaveFormatError, match="policy.safetensors"):
        PPO.load(crafted)
    assert not marker.exists()


def test_lambda_goes_to_a_pickled_entry_that_needs_opt_in(tmp_path) -> None:
    model = _make_model(learning_rate=lambda progress: 1e-3 * progress)
    model.save(tmp_path / "lambda")
    with zipfile.ZipFile(tmp_path / "lambda.zip") as archive:
        assert "pickled/0.pkl" in archive.namelist()
    with pytest.raises(PickleNotAllowedError, match="learning_rate"):
        PPO.load(tmp_path / "lambda")
    loaded = PPO.load(tmp_path / "lambda", allow_pickle=True)
    assert loaded.lr_schedule(0.5) == pytest.approx(5e-4)
    replaced = PPO.load(tmp_path / "lambda", custom_objects={"learning_rate": 2e-4})
    assert replaced.lr_schedule(0.5) == pytest.approx(2e-4)


def test_schedules_and_mlx_classes_are_stored_as_json(tmp_path) -> None:
    policy_kwargs = dict(net_arch=dict(pi=[16], vf=[16]), activation_fn=nn.ReLU)
    model = _make_model(
        learning_rate=LinearSchedule(1e-3, 1e-4, 0.5),
        clip_range=LinearSchedule(0.3, 0.1, 1.0),
        policy_kwargs=policy_kwargs,
    )
    model.save(tmp_path / "json_only")
    with zipfile.ZipFile(tmp_path / "json_only.zip") as archive:
        assert not any(name.startswith("pickled/") for name in archive.namelist())
    loaded = PPO.load(tmp_path / "json_only")  # allow_pickle=False
    assert loaded.policy_kwargs == policy_kwargs
    assert isinstance(loaded.policy.activation_fn, type) and loaded.policy.activation_fn is nn.ReLU
    for progress in (1.0, 0.6, 0.2):
        assert loaded.lr_schedule(progress) == model.lr_schedule(progress)
        assert loaded.clip_range(progress) == model.clip_range(progress)
    _assert_same_params(_numpy_params(model), _numpy_params(loaded))


# ---------------------------------------------------------------------------------------------
# Atomic saves
# ---------------------------------------------------------------------------------------------


def test_crash_in_the_middle_of_a_save_keeps_the_previous_model(trained, tmp_path, monkeypatch) -> None:
    model, _ = trained
    target = tmp_path / "model.zip"
    model.save(target)
    previous = target.read_bytes()
    other = _make_model(seed=1)

    calls = {"n": 0}
    original_writestr = zipfile.ZipFile.writestr

    def crashing_writestr(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # format_version and policy.safetensors are already in the temp file
            raise RuntimeError("simulated crash")
        return original_writestr(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", crashing_writestr)
    with pytest.raises(RuntimeError, match="simulated crash"):
        other.save(target)
    monkeypatch.undo()
    assert calls["n"] == 3
    assert target.read_bytes() == previous
    assert sorted(os.listdir(tmp_path)) == ["model.zip"]  # no temp file left behind
    _assert_same_params(_numpy_params(model), _numpy_params(PPO.load(target)))


# ---------------------------------------------------------------------------------------------
# Strict loads
# ---------------------------------------------------------------------------------------------


def _policy_arrays(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        return ser.safetensors_loads(archive.read("policy.safetensors"))[0]


def test_truncated_file_is_a_clear_error(trained, tmp_path) -> None:
    _, path = trained
    blob = path.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(SaveFormatError, match="truncated"):
        PPO.load(tmp_path / "truncated.zip")
    (tmp_path / "notzip.zip").write_bytes(b"PK but not really a zip file")
    with pytest.raises(SaveFormatError, match="not a zip archive"):
        PPO.load(tmp_path / "notzip.zip")


def test_unknown_format_version_is_a_clear_error(trained, tmp_path) -> None:
    _, path = trained
    _rewrite(path, tmp_path / "v2.zip", {"format_version": b"2\n"})
    with pytest.raises(SaveFormatError, match="format version '2'"):
        PPO.load(tmp_path / "v2.zip")


def test_missing_and_unexpected_keys_are_listed(trained, tmp_path) -> None:
    model, path = trained
    arrays = _policy_arrays(path)
    name = sorted(arrays)[0]
    arrays["extra.weight"] = arrays.pop(name)
    _rewrite(path, tmp_path / "keys.zip", {"policy.safetensors": ser.safetensors_dumps(arrays)})
    with pytest.raises(StateDictMismatchError) as info:
        PPO.load(tmp_path / "keys.zip")
    assert f"missing keys ['{name}']" in str(info.value)
    assert "unexpected keys ['extra.weight']" in str(info.value)
    with pytest.raises(StateDictMismatchError, match="missing keys"):
        model.set_parameters(tmp_path / "keys.zip")

    _rewrite(path, tmp_path / "no_optimizer.zip", {"policy.optimizer.safetensors": None})
    with pytest.raises(SaveFormatError, match="no 'policy.optimizer.safetensors' entry"):
        PPO.load(tmp_path / "no_optimizer.zip")


def test_mis_shaped_arrays_are_listed_and_nothing_is_loaded(trained, tmp_path) -> None:
    model, path = trained
    arrays = _policy_arrays(path)
    name = next(k for k, v in arrays.items() if v.ndim == 2)
    shape = arrays[name].shape
    arrays[name] = arrays[name].T.copy()
    _rewrite(path, tmp_path / "shapes.zip", {"policy.safetensors": ser.safetensors_dumps(arrays)})
    expected = f"{name}: expected {shape}, got {shape[::-1]}"
    with pytest.raises(StateDictMismatchError, match=expected.replace("(", "\\(").replace(")", "\\)")):
        PPO.load(tmp_path / "shapes.zip")
    before = _numpy_params(model)
    with pytest.raises(StateDictMismatchError, match="mis-shaped"):
        model.set_parameters(tmp_path / "shapes.zip")
    _assert_same_params(before, _numpy_params(model))  # all or nothing


def test_wrong_architecture_fails_loudly(trained) -> None:
    _, path = trained
    small = _make_model(policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(StateDictMismatchError):
        small.set_parameters(path)


# ---------------------------------------------------------------------------------------------
# get_parameters / set_parameters
# ---------------------------------------------------------------------------------------------


def test_get_and_set_parameters(trained, tmp_path) -> None:
    model, path = trained
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    assert set(params["policy"]) == set(model.policy.state_dict())
    assert "step" in params["policy.optimizer"] and "learning_rate" in params["policy.optimizer"]

    fresh = _make_model(seed=3)
    fresh.set_parameters(params)
    _assert_same_params(_numpy_params(model), _numpy_params(fresh))
    np.testing.assert_array_equal(
        fresh.predict(OBS, deterministic=True)[0], model.predict(OBS, deterministic=True)[0]
    )

    from_file = _make_model(seed=4)
    from_file.set_parameters(str(path))
    _assert_same_params(_numpy_params(model), _numpy_params(from_file))

    with pytest.raises(ValueError, match="do not match agents' parameters"):
        fresh.set_parameters({"policy": params["policy"]})
    fresh.set_parameters({"policy": params["policy"]}, exact_match=False)
    with pytest.raises(ValueError, match="invalid object name"):
        fresh.set_parameters({"nope": {}}, exact_match=False)

    partial = {k: v for k, v in params["policy"].items() if k.startswith("value_net")}
    fresh.set_parameters({"policy": partial}, exact_match=False)
    with pytest.raises(StateDictMismatchError, match="missing keys"):
        fresh.set_parameters({"policy": partial, "policy.optimizer": params["policy.optimizer"]})


def test_load_from_zip_file(trained) -> None:
    model, path = trained
    data, params, variables = load_from_zip_file(path)
    assert variables is None
    assert data is not None and data["n_steps"] == 16 and data["observation_space"] == model.observation_space
    _assert_same_params(_numpy_params(model), params)


# ---------------------------------------------------------------------------------------------
# Policies alone
# ---------------------------------------------------------------------------------------------


def test_policy_save_and_load(trained, tmp_path) -> None:
    model, path = trained
    model.policy.save(tmp_path / "policy.bin")
    assert (tmp_path / "policy.bin").exists()  # path used as given
    policy = ActorCriticPolicy.load(tmp_path / "policy.bin")
    assert type(policy) is type(model.policy)
    for key, value in model.policy.state_dict().items():
        assert np.array(value).tobytes() == np.array(policy.state_dict()[key]).tobytes()
    np.testing.assert_array_equal(
        policy.predict(OBS, deterministic=True)[0], model.predict(OBS, deterministic=True)[0]
    )
    with pytest.raises(SaveFormatError, match="holds a 'policy' file"):
        PPO.load(tmp_path / "policy.bin")
    with pytest.raises(SaveFormatError, match="holds a 'algorithm' file"):
        ActorCriticPolicy.load(path)


# ---------------------------------------------------------------------------------------------
# Custom classes, include / exclude, other algorithms
# ---------------------------------------------------------------------------------------------


def test_custom_extractor_class_needs_custom_objects_or_opt_in(tmp_path) -> None:
    from mlx_baselines3.common.layers import FlattenExtractor

    class MyExtractor(FlattenExtractor):
        pass

    model = _make_model(policy_kwargs=dict(features_extractor_class=MyExtractor))
    model.save(tmp_path / "custom")
    key = "policy_kwargs.features_extractor_class"
    with pytest.raises(PickleNotAllowedError, match=key):
        PPO.load(tmp_path / "custom")
    replaced = PPO.load(tmp_path / "custom", custom_objects={key: MyExtractor})
    assert replaced.policy.features_extractor_class is MyExtractor
    _assert_same_params(_numpy_params(model), _numpy_params(replaced))
    unpickled = PPO.load(tmp_path / "custom", allow_pickle=True)
    assert unpickled.policy.features_extractor_class.__name__ == "MyExtractor"

    model.policy.save(tmp_path / "custom_policy")
    with pytest.raises(PickleNotAllowedError, match="features_extractor_class"):
        ActorCriticPolicy.load(tmp_path / "custom_policy")
    policy = ActorCriticPolicy.load(
        tmp_path / "custom_policy", custom_objects={"features_extractor_class": MyExtractor}
    )
    assert isinstance(policy.features_extractor, MyExtractor)


def test_include_and_exclude(trained, tmp_path) -> None:
    model, _ = trained
    model.my_counter = 42
    model.save(tmp_path / "inc", include=["my_counter"], exclude=["ep_info_buffer", "n_steps"])
    del model.my_counter
    loaded = PPO.load(tmp_path / "inc")
    assert loaded.my_counter == 42
    assert len(loaded.ep_info_buffer or []) == 0
    assert loaded.n_steps == 2048  # excluded constructor argument: default


def test_file_of_another_algorithm_is_refused(trained) -> None:
    from mlx_baselines3.common.save_util import load_algorithm

    _, path = trained

    class A2C:
        pass

    with pytest.raises(SaveFormatError, match="holds a PPO model, it cannot be loaded with A2C"):
        load_algorithm(A2C, path)


# ---------------------------------------------------------------------------------------------
# Algorithm-level functions on a minimal SAC-like algorithm (several modules and optimizers,
# extra state, Dict observations), independent of PPO
# ---------------------------------------------------------------------------------------------


class _TwoNets:
    """The smallest object that follows the BaseAlgorithm saving contract."""

    def __init__(self, env=None, hidden: int = 4, _init_setup_model: bool = True) -> None:
        self._constructor_args = {"hidden": hidden}
        self.hidden = hidden
        self.env = env
        self.observation_space = gym.spaces.Dict(
            {"pos": gym.spaces.Box(-1, 1, (3,)), "id": gym.spaces.Discrete(4)}
        )
        self.action_space = gym.spaces.Box(-1, 1, (2,))
        self.n_envs = 1
        self.num_timesteps = 0
        self._last_obs = None
        self.obs_mean = np.zeros(3)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        import mlx.optimizers as optim

        self.actor = nn.Linear(3, self.hidden)
        self.actor.optimizer = optim.Adam(learning_rate=1e-2)
        self.actor.optimizer.init(self.actor.trainable_parameters())
        self.critic = nn.Sequential(nn.Linear(3, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        self.critic_optimizer = optim.SGD(learning_rate=0.1, momentum=0.9)
        self.critic_optimizer.init(self.critic.trainable_parameters())

    def _get_mlx_save_params(self):
        return ["actor", "critic"], ["actor.optimizer", "critic_optimizer"]

    def _get_extra_state(self):
        return {"obs_mean": self.obs_mean}

    def _set_extra_state(self, state):
        self.obs_mean = state["obs_mean"]


def test_algorithm_functions_on_a_multi_module_algorithm(tmp_path) -> None:
    from mlx_baselines3.common.save_util import load_algorithm, save_algorithm

    mx.random.seed(5)
    model = _TwoNets(hidden=6)
    model.obs_mean = np.array([0.5, -1.0, 2.0])
    model.num_timesteps = 123
    model._last_obs = {"pos": np.ones((1, 3), np.float32), "id": np.array([2])}
    x = mx.ones((2, 3))
    for net, opt in ((model.actor, model.actor.optimizer), (model.critic, model.critic_optimizer)):
        _, grads = nn.value_and_grad(net, lambda m: (m(x) ** 2).sum())(net)
        opt.update(net, grads)
    save_algorithm(model, tmp_path / "two")
    loaded = load_algorithm(_TwoNets, tmp_path / "two")
    assert loaded.hidden == 6 and loaded.num_timesteps == 123
    assert loaded.observation_space == model.observation_space
    np.testing.assert_array_equal(loaded.obs_mean, model.obs_mean)
    np.testing.assert_array_equal(loaded._last_obs["pos"], model._last_obs["pos"])
    np.testing.assert_array_equal(loaded._last_obs["id"], model._last_obs["id"])
    _assert_same_params(
        {n: {k: np.array(v) for k, v in g.items()} for n, g in get_params(model).items()},
        {n: {k: np.array(v) for k, v in g.items()} for n, g in get_params(loaded).items()},
    )
    assert (
        "critic_optimizer" in get_params(loaded)
        and "layers.2.weight.v" in get_params(loaded)["critic_optimizer"]
    )

    # Extra state is checked strictly too.
    model.obs_mean = np.zeros(4)
    save_algorithm(model, tmp_path / "bad_extra")
    with pytest.raises(StateDictMismatchError, match="obs_mean: expected \\(3,\\), got \\(4,\\)"):
        load_algorithm(_TwoNets, tmp_path / "bad_extra")


def get_params(model):
    from mlx_baselines3.common.save_util import get_algorithm_parameters

    return get_algorithm_parameters(model)
