"""The building blocks of the model file format, tested without any algorithm."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import gymnasium as gym
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from mlx_baselines3.common import serialization as ser
from mlx_baselines3.common.save_util import (
    load_module_state,
    load_optimizer_state,
    module_state_dict,
    optimizer_state_dict,
)
from mlx_baselines3.common.serialization import (
    NotJsonSerializable,
    PickleNotAllowedError,
    SaveFormatError,
    StateDictMismatchError,
)
from mlx_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8", "bool", "uint32", "uint64", "int8"]


def _example(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dtype)


def _parse_by_hand(blob: bytes) -> tuple[dict, bytes]:
    """Independent reading of the safetensors layout (spec: u64 LE length, JSON header, data)."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]), blob[8 + length :]


def test_safetensors_layout_matches_the_spec() -> None:
    arrays = {name: _example(name, (2, 3)) for name in DTYPES}
    arrays["scalar"] = np.array(1.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float32)
    blob = ser.safetensors_dumps(arrays, metadata={"note": "x"})
    (length,) = struct.unpack("<Q", blob[:8])
    assert length % 8 == 0  # padded header, so the data starts aligned
    header, data = _parse_by_hand(blob)
    assert header.pop("__metadata__") == {"note": "x"}
    codes = {"float32": "F32", "float64": "F64", "float16": "F16", "int32": "I32", "int64": "I64"}
    codes.update({"uint8": "U8", "bool": "BOOL", "uint32": "U32", "uint64": "U64", "int8": "I8"})
    for name in DTYPES:
        entry = header[name]
        assert entry["dtype"] == codes[name]
        assert entry["shape"] == [2, 3]
        begin, end = entry["data_offsets"]
        assert data[begin:end] == arrays[name].astype(arrays[name].dtype.newbyteorder("<")).tobytes()
    assert header["scalar"]["shape"] == []
    assert header["empty"]["data_offsets"][0] == header["empty"]["data_offsets"][1]


def test_safetensors_round_trip_is_bit_exact_for_numpy_and_mlx() -> None:
    arrays = {name: _example(name, (3, 2)) for name in DTYPES}
    arrays["nan_inf"] = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)
    arrays["mx_f32"] = mx.array([[1.25, -2.0]], dtype=mx.float32)
    arrays["mx_step"] = mx.array(7, dtype=mx.uint64)  # MLX optimizers count steps in uint64
    loaded, metadata = ser.safetensors_loads(ser.safetensors_dumps(arrays))
    assert metadata == {}
    assert set(loaded) == set(arrays)
    for name, original in arrays.items():
        expected = np.asarray(original)
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        assert loaded[name].tobytes() == expected.tobytes(), name
        assert loaded[name].flags.writeable


def test_safetensors_refuses_bfloat16_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="bfloat16"):
        ser.safetensors_dumps({"w": mx.zeros((2,), dtype=mx.bfloat16)})


def _with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 1000) + b"{}", "exceeds"),
        (struct.pack("<Q", 4) + b"{not", "not valid JSON"),
        (
            _with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            "invalid data_offsets",
        ),
        (
            _with_header({"a": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "unsupported dtype",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "needs 12 bytes",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "invalid shape",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
            "gap or overlap",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
            "cover 4 bytes",
        ),
        (_with_header({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "exactly the fields"),
        (_with_header({"__metadata__": {"a": 1}}, b""), "strings to strings"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_safetensors_reader_rejects_malformed_input(blob: bytes, message: str) -> None:
    with pytest.raises(SaveFormatError, match=message):
        ser.safetensors_loads(blob, "test-blob")


def test_safetensors_reader_rejects_overlapping_and_duplicate_entries() -> None:
    overlapping = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    with pytest.raises(SaveFormatError, match="gap or overlap"):
        ser.safetensors_loads(_with_header(overlapping, b"\0" * 12))
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    with pytest.raises(SaveFormatError, match="duplicate key"):
        ser.safetensors_loads(struct.pack("<Q", len(raw)) + raw + b"\0")


# ---------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------

SPACES = [
    gym.spaces.Box(low=-1.0, high=2.0, shape=(3, 2), dtype=np.float32),
    gym.spaces.Box(low=np.array([-np.inf, 0.0]), high=np.array([np.inf, 0.1]), dtype=np.float64),
    gym.spaces.Box(low=0, high=255, shape=(4, 4, 3), dtype=np.uint8),
    gym.spaces.Box(
        low=np.array([-1.5, -2.5], dtype=np.float32), high=np.array([1e-7, 3.0], dtype=np.float32)
    ),
    gym.spaces.Discrete(5),
    gym.spaces.Discrete(3, start=-2),
    gym.spaces.MultiDiscrete([3, 4, 2]),
    gym.spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]), start=np.array([[1, 0], [-1, 2]])),
    gym.spaces.MultiBinary(4),
    gym.spaces.MultiBinary([2, 3]),
    gym.spaces.Tuple([gym.spaces.Discrete(2), gym.spaces.Box(-1, 1, (2,))]),
    gym.spaces.Dict(
        {
            "vec": gym.spaces.Box(-1, 1, (3,)),
            "nested": gym.spaces.Dict({"a": gym.spaces.Discrete(4), "b": gym.spaces.MultiBinary(2)}),
        }
    ),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_spaces_round_trip_through_strict_json(space: gym.spaces.Space) -> None:
    text = json.dumps(ser.space_to_json(space), allow_nan=False)
    rebuilt = ser.space_from_json(json.loads(text))
    assert type(rebuilt) is type(space)
    assert rebuilt == space
    assert rebuilt.dtype == space.dtype
    if isinstance(space, gym.spaces.Box):
        np.testing.assert_array_equal(rebuilt.low, space.low)  # exact, inf included
        np.testing.assert_array_equal(rebuilt.high, space.high)
    if isinstance(space, gym.spaces.Dict):
        assert list(rebuilt.spaces) == list(space.spaces)  # key order kept


def test_unsupported_and_invalid_spaces() -> None:
    with pytest.raises(NotJsonSerializable, match="Text"):
        ser.space_to_json(gym.spaces.Text(5))
    with pytest.raises(SaveFormatError, match="Unknown space type"):
        ser.space_from_json({"space": "Graph"})
    with pytest.raises(SaveFormatError, match="Invalid space description"):
        ser.space_from_json({"space": "Discrete"})


# ---------------------------------------------------------------------------------------------
# JSON values
# ---------------------------------------------------------------------------------------------


def _round_trip(value: object) -> object:
    encoded, pickled = ser.encode_json(value, allow_pickle=False)
    assert pickled == {}
    return ser.decode_json(json.loads(json.dumps(encoded, allow_nan=False)))


def test_plain_values_round_trip() -> None:
    value = {
        "floats": [1.5, float("inf"), float("-inf")],
        "tuple": (1, (2, "x")),
        "int_keys": {1: "a", (2, 3): "b"},
        "reserved": {"__type__": "not a marker"},
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "dtype": np.float32,
        "dtype_instance": np.dtype("uint8"),
        "np_scalar": np.float64(0.25),
        "none": None,
        "bool": True,
    }
    result = _round_trip(value)
    assert isinstance(result, dict)
    assert result["floats"] == [1.5, float("inf"), float("-inf")]
    assert result["tuple"] == (1, (2, "x"))
    assert result["int_keys"] == {1: "a", (2, 3): "b"}
    assert result["reserved"] == {"__type__": "not a marker"}
    np.testing.assert_array_equal(result["array"], value["array"])
    assert result["array"].dtype == np.int32
    assert result["dtype"] is np.float32
    assert result["dtype_instance"] == np.dtype("uint8")
    assert result["np_scalar"] == 0.25
    assert result["none"] is None and result["bool"] is True
    assert np.isnan(_round_trip(float("nan")))  # type: ignore[arg-type]


def test_schedules_round_trip_as_json_with_the_same_values() -> None:
    schedules = [
        ConstantSchedule(3e-4),
        LinearSchedule(1.0, 0.1, 0.5),
        FloatSchedule(LinearSchedule(2.0, 0.0, 1.0)),
        FloatSchedule(0.2),
    ]
    encoded, pickled = ser.encode_json(schedules, allow_pickle=False)
    assert pickled == {}
    assert "utils:LinearSchedule" in json.dumps(encoded)
    rebuilt = ser.decode_json(encoded)
    for original, copy in zip(schedules, rebuilt):
        assert type(copy) is type(original)
        for progress in (1.0, 0.75, 0.5, 0.0):
            assert copy(progress) == original(progress)


def test_allow_listed_classes_and_functions_are_described_by_import_path() -> None:
    from mlx_baselines3.common.layers import FlattenExtractor

    value = {"act": nn.Tanh, "relu": nn.relu, "opt": optim.Adam, "fe": FlattenExtractor}
    encoded, _ = ser.encode_json(value)
    assert encoded["act"] == {"__type__": "class", "path": "mlx.nn.layers.activations:Tanh"}
    assert encoded["opt"]["path"] == "mlx.optimizers.optimizers:Adam"
    assert _round_trip(value) == value


def test_objects_without_json_description_are_pickled_only_when_allowed() -> None:
    class LocalExtractor:
        pass

    value = {"lr": lambda p: 0.1 * p, "cls": LocalExtractor, "ok": 1}
    with pytest.raises(NotJsonSerializable):
        ser.encode_json(value, allow_pickle=False)
    encoded, pickled = ser.encode_json(value, allow_pickle=True)
    assert set(pickled) == {"lr", "cls"}
    assert ser.find_pickled_keys(encoded) == ["lr", "cls"]
    with pytest.raises(SaveFormatError, match="was not provided"):
        ser.decode_json(encoded)
    assert ser.decode_json(encoded, pickled={"lr": 1.0, "cls": int}) == {"lr": 1.0, "cls": int, "ok": 1}


@pytest.mark.parametrize(
    "path",
    [
        "os:system",
        "builtins:eval",
        "subprocess:Popen",
        "mlx_baselines3_evil.module:Thing",
        "mlx.nnx:Thing",
        # an attribute chain through an allow-listed module that ends in another module
        "mlx_baselines3.common.serialization:os.system",
        "mlx_baselines3.common.serialization:importlib.import_module",
    ],
)
def test_import_paths_outside_the_allow_list_are_refused(path: str) -> None:
    with pytest.raises(SaveFormatError, match="Refusing to import"):
        ser.import_from_path(path, "function")
    with pytest.raises(SaveFormatError, match="Refusing to import"):
        ser.decode_json({"__type__": "instance", "class": path, "state": {}})


def test_import_path_errors() -> None:
    with pytest.raises(SaveFormatError, match="Malformed"):
        ser.import_from_path("mlx.nn.Tanh")
    with pytest.raises(SaveFormatError, match="Cannot import"):
        ser.import_from_path("mlx_baselines3.common.utils:NoSuchThing")
    with pytest.raises(SaveFormatError, match="not a class"):
        ser.import_from_path("mlx_baselines3.common.utils:set_random_seed", "class")


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path) -> None:
    target = tmp_path / "sub" / "file.bin"
    ser.atomic_write_bytes(target, b"first")
    ser.atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_keeps_the_previous_file(tmp_path) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="crash"):
        with ser.atomic_open(target) as file:
            file.write(b"partial new content")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_failure_of_the_rename_cleans_up(tmp_path, monkeypatch) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"previous")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ser.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        ser.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------


def test_archive_suffix_rules(tmp_path) -> None:
    ser.write_archive(tmp_path / "model", {"a.txt": b"x"})
    assert (tmp_path / "model.zip").exists()
    assert ser.read_archive(tmp_path / "model")["a.txt"] == b"x"  # .zip tried
    ser.write_archive(tmp_path / "model.bin", {"a.txt": b"y"})
    assert ser.read_archive(str(tmp_path / "model.bin"))["a.txt"] == b"y"
    with pytest.raises(FileNotFoundError):
        ser.read_archive(tmp_path / "missing")
    buffer = io.BytesIO()
    ser.write_archive(buffer, {"a.txt": b"z"})
    buffer.seek(0)
    assert ser.read_archive(buffer)["a.txt"] == b"z"


def test_archive_integrity_errors(tmp_path) -> None:
    good = tmp_path / "good.zip"
    ser.write_archive(good, {"data.bin": bytes(range(256)) * 64})
    blob = good.read_bytes()

    (tmp_path / "truncated.zip").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(SaveFormatError, match="truncated"):
        ser.read_archive(tmp_path / "truncated.zip")

    (tmp_path / "text.zip").write_text("hello, not a zip")
    with pytest.raises(SaveFormatError, match="not a zip archive"):
        ser.read_archive(tmp_path / "text.zip")

    with zipfile.ZipFile(tmp_path / "future.zip", "w") as archive:
        archive.writestr("format_version", "99")
    with pytest.raises(SaveFormatError, match="format version '99'"):
        ser.read_archive(tmp_path / "future.zip")

    with zipfile.ZipFile(tmp_path / "sb3.zip", "w") as archive:
        archive.writestr("_stable_baselines3_version", "2.4.0")
        archive.writestr("policy.pth", b"")
    with pytest.raises(SaveFormatError, match="Stable-Baselines3"):
        ser.read_archive(tmp_path / "sb3.zip")


def test_json_and_arrays_helpers_round_trip(tmp_path) -> None:
    data = {
        "clip_obs": 10.0,
        "gamma": 0.99,
        "norm_obs_keys": ("a", "b"),
        "space": gym.spaces.Box(-1, 1, (2,)),
    }
    arrays = {"obs_rms.mean": np.arange(3.0), "obs_rms.count": np.array(4.0), "returns": mx.zeros((2,))}
    ser.save_json_and_arrays(tmp_path / "vecnormalize.pkl", data, arrays, kind="VecNormalize")
    assert (tmp_path / "vecnormalize.pkl").exists()  # path used as given
    loaded, loaded_arrays = ser.load_json_and_arrays(tmp_path / "vecnormalize.pkl", kind="VecNormalize")
    assert loaded == data
    assert set(loaded_arrays) == set(arrays)
    np.testing.assert_array_equal(loaded_arrays["obs_rms.mean"], np.arange(3.0))
    with pytest.raises(SaveFormatError, match="not a 'Other'"):
        ser.load_json_and_arrays(tmp_path / "vecnormalize.pkl", kind="Other")
    with pytest.raises(TypeError, match="no JSON description"):
        ser.save_json_and_arrays(tmp_path / "bad", {"f": lambda: 0}, {}, kind="VecNormalize")
    assert not (tmp_path / "bad").exists()


def test_json_and_arrays_refuses_pickled_entries(tmp_path) -> None:
    header = {"kind": "VecNormalize", "data": {"x": {"__type__": "pickled", "key": "x"}}}
    with zipfile.ZipFile(tmp_path / "crafted", "w") as archive:
        archive.writestr("format_version", "1")
        archive.writestr("data.json", json.dumps(header))
        archive.writestr("arrays.safetensors", ser.safetensors_dumps({}))
    with pytest.raises(PickleNotAllowedError):
        ser.load_json_and_arrays(tmp_path / "crafted")


# ---------------------------------------------------------------------------------------------
# Strict state dicts
# ---------------------------------------------------------------------------------------------


def test_check_state_dict_names_every_problem() -> None:
    expected = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (4,)}
    received = {"a.weight": np.zeros((3, 2)), "a.bias": np.zeros(2), "c.weight": np.zeros(1)}
    with pytest.raises(StateDictMismatchError) as info:
        ser.check_state_dict(expected, received, what="policy")
    message = str(info.value)
    assert "policy" in message
    assert "missing keys ['b.weight']" in message
    assert "unexpected keys ['c.weight']" in message
    assert "a.weight: expected (2, 3), got (3, 2)" in message
    ser.check_state_dict(expected, {"a.bias": np.zeros(2)}, strict=False)  # subset is fine when not strict
    with pytest.raises(StateDictMismatchError, match="mis-shaped"):
        ser.check_state_dict(expected, {"a.bias": np.zeros(3)}, strict=False)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_module_state_load_is_strict_and_all_or_nothing() -> None:
    mx.random.seed(0)
    source, target = _mlp(), _mlp()
    state = {k: np.array(v) for k, v in module_state_dict(source).items()}
    load_module_state(target, state)
    for key, value in module_state_dict(target).items():
        assert np.array(value).tobytes() == state[key].tobytes()
    before = {k: np.array(v) for k, v in module_state_dict(target).items()}
    broken = dict(state)
    broken["layers.2.bias"] = np.zeros(5, dtype=np.float32)
    broken["layers.0.weight"] = state["layers.0.weight"] + 1
    with pytest.raises(StateDictMismatchError, match="layers.2.bias: expected \\(2,\\), got \\(5,\\)"):
        load_module_state(target, broken, what="policy")
    for key, value in module_state_dict(target).items():  # nothing was loaded
        np.testing.assert_array_equal(np.array(value), before[key])


def test_optimizer_state_round_trip_keeps_the_state_dict_identity() -> None:
    mx.random.seed(0)
    model = _mlp()
    optimizer = optim.Adam(learning_rate=1e-2)
    optimizer.init(model.trainable_parameters())

    def loss_fn(m, x):
        return (m(x) ** 2).mean()

    grad_fn = nn.value_and_grad(model, loss_fn)
    x = mx.ones((5, 3))
    for _ in range(3):
        _, grads = grad_fn(model, x)
        optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    saved = ser.safetensors_loads(ser.safetensors_dumps(optimizer_state_dict(optimizer)))[0]
    assert saved["step"].dtype == np.uint64 and int(saved["step"]) == 3

    other = optim.Adam(learning_rate=1.0)
    other.init(model.trainable_parameters())
    state_object = other.state
    load_optimizer_state(other, saved)
    assert other.state is state_object
    for key, value in optimizer_state_dict(other).items():
        assert np.array(value).tobytes() == saved[key].tobytes(), key
    assert float(other.learning_rate) == pytest.approx(1e-2)

    fresh = optim.Adam(learning_rate=1e-2)  # never initialised: takes the stored state as is
    load_optimizer_state(fresh, saved)
    assert set(optimizer_state_dict(fresh)) == set(saved)

    wrong = dict(saved)
    wrong.pop("layers.0.bias.m")
    with pytest.raises(StateDictMismatchError, match="missing keys \\['layers.0.bias.m'\\]"):
        load_optimizer_state(other, wrong, what="policy.optimizer")
