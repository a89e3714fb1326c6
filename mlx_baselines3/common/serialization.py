"""Building blocks of the model file format, independent of any algorithm.

Everything here is safe to run on an untrusted file: nothing is unpickled, and classes named in
a file are re-imported only from an allow-list of module prefixes.

* Atomic writes: :func:`atomic_open`, :func:`atomic_write_bytes`.
* Arrays: :func:`safetensors_dumps` / :func:`safetensors_loads` (the safetensors layout, written
  and validated here in numpy).
* Plain values as JSON: :func:`encode_json` / :func:`decode_json` (floats incl. inf/nan, tuples,
  numpy arrays and dtypes, gymnasium spaces, allow-listed classes/functions/instances such as the
  schedules of :mod:`mlx_baselines3.common.utils`). Values that cannot be described go to
  separate pickled entries, refused on load unless the caller opts in.
* Spaces: :func:`space_to_json` / :func:`space_from_json`.
* Strict state-dict checks: :func:`check_state_dict`.
* Zip archives: :func:`write_archive` / :func:`read_archive`, and the generic pair
  :func:`save_json_and_arrays` / :func:`load_json_and_arrays` for small savable objects
  (e.g. ``VecNormalize`` statistics).

The layout of a model file is described in ``docs/save_format.md``.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import json
import math
import os
import pathlib
import platform
import secrets
import struct
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, BinaryIO

import gymnasium as gym
import numpy as np

PathLike = str | os.PathLike
#: A path, or an open binary file object (SB3 accepts both).
PathOrFile = str | os.PathLike | IO[bytes]

#: Version of the archive layout written by this release; ``read_archive`` refuses others.
FORMAT_VERSION = 1
#: Name of the zip entry holding the format version.
FORMAT_VERSION_ENTRY = "format_version"
#: Name of the zip entry holding the JSON description.
DATA_ENTRY = "data.json"
#: Name of the zip entry holding the system description of the machine that saved the file.
SYSTEM_INFO_ENTRY = "system_info.txt"
#: Folder (inside the zip) of pickled entries.
PICKLED_PREFIX = "pickled/"

#: Classes, functions and instances named in a file are re-imported only from these modules
#: (a module matches when its name equals a prefix or starts with ``prefix + "."``).
SAFE_IMPORT_PREFIXES: tuple[str, ...] = ("mlx_baselines3", "mlx.nn", "mlx.optimizers")

_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SaveFormatError(ValueError):
    """A file is not a valid mlx_baselines3 file (truncated, not a zip, wrong version, bad entry)."""


class PickleNotAllowedError(SaveFormatError):
    """A file holds pickled entries and the caller did not opt in to unpickling them."""


class StateDictMismatchError(ValueError):
    """Arrays in a file do not match the arrays of the object they are loaded into."""


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def _fsync_dir(folder: pathlib.Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; rename it over ``path`` on success.

    The temporary file lives in the same folder (so the final ``os.replace`` is atomic), is
    flushed and fsynced before the rename, and is removed if the ``with`` body raises. Either
    the complete new file or the previous file is at ``path``, never a partial one. Missing parent
    folders are created.

    :param path: final location of the file
    :return: a context manager yielding the open temporary file
    """
    target = pathlib.Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"Cannot write to {str(target)!r}: it is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            # os.open with 0o666 honours the umask, unlike mkstemp (0o600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`).

    :param path: final location of the file
    :param data: the complete file content
    """
    with atomic_open(path) as file:
        file.write(data)


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

_ST_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_NUMPY_TO_ST: dict[str, str] = {dt.newbyteorder("=").name: code for code, dt in _ST_TO_NUMPY.items()}


def to_numpy(array: Any, name: str = "array") -> np.ndarray:
    """Convert an ``mx.array`` / numpy array / scalar to a numpy array (a copy for MLX arrays).

    :param array: the value
    :param name: used in the error message
    :return: the numpy array
    """
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("mlx"):
        dtype_name = str(getattr(array, "dtype", ""))
        if "bfloat16" in dtype_name:
            raise TypeError(f"Cannot save {name!r}: bfloat16 arrays are not supported; cast them to float32")
    return np.asarray(array)


def safetensors_dumps(arrays: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise named arrays in the safetensors layout.

    Layout: 8-byte little-endian header length ``N``, ``N`` bytes of JSON header
    (``{name: {"dtype", "shape", "data_offsets"}}`` plus optional ``"__metadata__"`` of strings,
    padded with spaces to a multiple of 8), then the raw little-endian bytes of every array.

    :param arrays: name -> array (numpy or ``mx.array``); supported dtypes: bool, (u)int8/16/32/64,
        float16/32/64
    :param metadata: optional string -> string metadata
    :return: the file content
    """
    header: dict[str, Any] = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(arrays):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"Invalid array name {name!r}")
        array = to_numpy(arrays[name], name)
        code = _NUMPY_TO_ST.get(array.dtype.newbyteorder("=").name)
        if code is None:
            raise TypeError(
                f"Cannot save array {name!r} of dtype {array.dtype}; supported: {sorted(_NUMPY_TO_ST)}"
            )
        raw = np.ascontiguousarray(array, dtype=_ST_TO_NUMPY[code]).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SaveFormatError(f"duplicate key {key!r} in JSON")
        result[key] = value
    return result


def safetensors_loads(data: bytes, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse and validate safetensors bytes.

    The header must be valid JSON with known dtypes, non-negative integer shapes, and data
    offsets that match the shapes and cover the data buffer exactly, without gaps or overlaps.

    :param data: the file content
    :param source: name used in error messages
    :return: (name -> writable native-endian numpy array, metadata)
    :raises SaveFormatError: on any malformed input
    """

    def fail(reason: str) -> SaveFormatError:
        return SaveFormatError(f"Invalid safetensors data in {source}: {reason}")

    if len(data) < 8:
        raise fail(f"{len(data)} bytes is too short for the 8-byte header length (truncated?)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise fail(f"header length {header_len} exceeds the {len(data) - 8} bytes that follow (truncated?)")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as error:
        raise fail(f"header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise fail("__metadata__ must map strings to strings")
    buffer = memoryview(data)[8 + header_len :]
    spans: list[tuple[int, int, str]] = []
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"entry {name!r} must have exactly the fields dtype, shape, data_offsets")
        dtype = _ST_TO_NUMPY.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise fail(f"entry {name!r} has unsupported dtype {info['dtype']!r}")
        shape = info["shape"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise fail(f"entry {name!r} has invalid shape {shape!r}")
        offsets = info["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= len(buffer)
        ):
            raise fail(
                f"entry {name!r} has invalid data_offsets {offsets!r} (buffer has {len(buffer)} bytes)"
            )
        count = math.prod(shape)
        if offsets[1] - offsets[0] != count * dtype.itemsize:
            raise fail(
                f"entry {name!r}: shape {shape} of {info['dtype']} needs {count * dtype.itemsize} bytes, "
                f"data_offsets span {offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], name))
        array = np.frombuffer(buffer[offsets[0] : offsets[1]], dtype=dtype).reshape(shape)
        arrays[name] = array.astype(dtype.newbyteorder("="), copy=True)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise fail(f"entry {name!r} starts at byte {begin}, expected {position} (gap or overlap)")
        position = end
    if position != len(buffer):
        raise fail(f"the arrays cover {position} bytes but the data buffer has {len(buffer)}")
    return arrays, metadata


# ---------------------------------------------------------------------------------------------
# Import paths (allow-listed)
# ---------------------------------------------------------------------------------------------


def is_safe_module(module: str, prefixes: tuple[str, ...] = SAFE_IMPORT_PREFIXES) -> bool:
    """Whether objects of ``module`` may be re-imported by name when loading a file."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def object_import_path(obj: Any) -> str | None:
    """Return ``"module:qualname"`` for a class/function importable from an allow-listed module.

    :param obj: a class or function
    :return: the import path, or None when ``obj`` cannot be re-imported safely by name
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if not is_safe_module(module):
        return None
    try:
        resolved = _resolve(module, qualname)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if resolved is obj else None


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_from_path(path: str, kind: str = "class") -> Any:
    """Re-import an object described by :func:`object_import_path`, refusing non-allow-listed modules.

    The resolved object must report the same module and qualified name as the path (so an
    attribute chain cannot reach into another module), and must be a class when ``kind`` is
    ``"class"``.

    :param path: ``"module:qualname"``
    :param kind: ``"class"`` or ``"function"``
    :return: the object
    :raises SaveFormatError: when the path is malformed, not allow-listed or not importable
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise SaveFormatError(f"Malformed import path {path!r} (expected 'module:qualname')")
    module, qualname = path.split(":")
    if not is_safe_module(module):
        raise SaveFormatError(
            f"Refusing to import {path!r}: only modules under {list(SAFE_IMPORT_PREFIXES)} may be imported "
            "when loading a file. Pass the object through custom_objects instead."
        )
    try:
        obj = _resolve(module, qualname)
    except (ImportError, AttributeError) as error:
        raise SaveFormatError(f"Cannot import {path!r} named in the file: {error}") from None
    if getattr(obj, "__module__", None) != module or getattr(obj, "__qualname__", None) != qualname:
        raise SaveFormatError(f"Refusing to import {path!r}: it resolves to an object defined elsewhere")
    if kind == "class" and not isinstance(obj, type):
        raise SaveFormatError(f"{path!r} is not a class")
    if kind == "function" and (isinstance(obj, type) or not callable(obj)):
        raise SaveFormatError(f"{path!r} is not a function")
    return obj


# ---------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------


class NotJsonSerializable(TypeError):
    """A value has no JSON description (it must be pickled, or left out)."""


def _scalar_to_json(value: Any) -> Any:
    """A Python/numpy scalar as JSON; non-finite floats as strings."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _scalar_from_json(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("nan", "inf", "-inf"):
            raise SaveFormatError(f"Invalid number {value!r}")
        return float(value)
    if not isinstance(value, (bool, int, float)):
        raise SaveFormatError(f"Invalid number {value!r}")
    return value


def ndarray_to_json(array: np.ndarray) -> dict[str, Any]:
    """Describe a numpy array as ``{"dtype", "shape", "data"}`` (``data``: flat list, or one value
    when all elements are equal). Non-finite floats are written as ``"inf"``, ``"-inf"``, ``"nan"``.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise NotJsonSerializable(f"numpy arrays of dtype {array.dtype} have no JSON description")
    flat = array.reshape(-1)
    if flat.size > 0 and (np.all(flat == flat[0]) or (array.dtype.kind == "f" and np.all(np.isnan(flat)))):
        data: Any = _scalar_to_json(flat[0])
    else:
        data = [_scalar_to_json(v) for v in flat.tolist()]
    return {"dtype": array.dtype.newbyteorder("=").name, "shape": list(array.shape), "data": data}


def ndarray_from_json(obj: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`ndarray_to_json`."""
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(d) for d in obj["shape"])
        data = obj["data"]
    except (KeyError, TypeError) as error:
        raise SaveFormatError(f"Invalid array description {obj!r}: {error}") from None
    if dtype.kind not in "biuf" or any(d < 0 for d in shape):
        raise SaveFormatError(f"Invalid array description {obj!r}")
    if isinstance(data, list):
        values = [_scalar_from_json(v) for v in data]
        if len(values) != math.prod(shape):
            raise SaveFormatError(f"Array description has {len(values)} values for shape {shape}")
        return np.array(values, dtype=dtype).reshape(shape)
    return np.full(shape, _scalar_from_json(data), dtype=dtype)


def space_to_json(space: gym.spaces.Space) -> dict[str, Any]:
    """Describe a gymnasium space as JSON.

    Supported (exact types, not subclasses): Box (dtype, shape, low, high), Discrete (n, start,
    dtype), MultiDiscrete (nvec, start, dtype), MultiBinary (n), Dict and Tuple (recursively).
    The space's random generator is not stored.

    :raises NotJsonSerializable: for other spaces
    """
    spaces = gym.spaces
    if type(space) is spaces.Box:
        return {
            "space": "Box",
            "dtype": space.dtype.name,
            "shape": list(space.shape),
            "low": ndarray_to_json(space.low),
            "high": ndarray_to_json(space.high),
        }
    if type(space) is spaces.Discrete:
        return {"space": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": space.dtype.name}
    if type(space) is spaces.MultiDiscrete:
        return {
            "space": "MultiDiscrete",
            "nvec": ndarray_to_json(space.nvec),
            "start": ndarray_to_json(space.start),
            "dtype": space.dtype.name,
        }
    if type(space) is spaces.MultiBinary:
        n = space.n
        return {
            "space": "MultiBinary",
            "n": int(n) if isinstance(n, (int, np.integer)) else [int(v) for v in n],
        }
    if type(space) is spaces.Dict:
        return {"space": "Dict", "spaces": [[key, space_to_json(sub)] for key, sub in space.spaces.items()]}
    if type(space) is spaces.Tuple:
        return {"space": "Tuple", "spaces": [space_to_json(sub) for sub in space.spaces]}
    raise NotJsonSerializable(f"{type(space).__name__} spaces have no JSON description")


def space_from_json(obj: Mapping[str, Any]) -> gym.spaces.Space:
    """Rebuild a gymnasium space from :func:`space_to_json` output.

    :raises SaveFormatError: when the description is invalid
    """
    spaces = gym.spaces
    try:
        kind = obj["space"]
        if kind == "Box":
            low = ndarray_from_json(obj["low"])
            high = ndarray_from_json(obj["high"])
            shape = tuple(int(d) for d in obj["shape"])
            return spaces.Box(
                low=low.reshape(shape), high=high.reshape(shape), shape=shape, dtype=np.dtype(obj["dtype"])
            )
        if kind == "Discrete":
            return spaces.Discrete(
                int(obj["n"]), start=int(obj["start"]), dtype=np.dtype(obj.get("dtype", "int64"))
            )
        if kind == "MultiDiscrete":
            return spaces.MultiDiscrete(
                ndarray_from_json(obj["nvec"]),
                dtype=np.dtype(obj["dtype"]),
                start=ndarray_from_json(obj["start"]),
            )
        if kind == "MultiBinary":
            n = obj["n"]
            return spaces.MultiBinary(int(n) if isinstance(n, int) else [int(v) for v in n])
        if kind == "Dict":
            return spaces.Dict({str(key): space_from_json(sub) for key, sub in obj["spaces"]})
        if kind == "Tuple":
            return spaces.Tuple([space_from_json(sub) for sub in obj["spaces"]])
    except SaveFormatError:
        raise
    except (KeyError, TypeError, ValueError, AssertionError) as error:
        raise SaveFormatError(f"Invalid space description {obj!r}: {error!r}") from None
    raise SaveFormatError(f"Unknown space type {kind!r}")


# ---------------------------------------------------------------------------------------------
# JSON values
# ---------------------------------------------------------------------------------------------

_TYPE = "__type__"


class JsonEncoder:
    """Turn Python values into plain JSON, sending what has no JSON description to pickled entries.

    Described in JSON: None, bool, int, str, float (incl. inf/nan), list, tuple, dict (any
    JSON-describable keys), numpy scalars/arrays/dtypes, gymnasium spaces, enums, classes and
    functions of allow-listed modules (by import path), and instances of allow-listed classes
    that use default pickling (by class path + attribute dict; e.g. the schedules).

    :param allow_pickle: when True, a value without a JSON description is pickled with
        cloudpickle into :attr:`pickled` (key: its dotted path); when False it raises
        :class:`NotJsonSerializable`.
    """

    def __init__(self, allow_pickle: bool = True) -> None:
        self.allow_pickle = allow_pickle
        #: dotted path -> pickled bytes
        self.pickled: dict[str, bytes] = {}

    def encode(self, value: Any, path: str = "") -> Any:
        """Encode ``value`` found at dotted ``path``."""
        try:
            return self._encode(value, path)
        except NotJsonSerializable as error:
            if not self.allow_pickle:
                if getattr(error, "located", False):
                    raise
                located = NotJsonSerializable(
                    f"value at {path or '<root>'!r} has no JSON description: {error}"
                )
                located.located = True  # type: ignore[attr-defined]
                raise located from None
            return self._pickle(value, path)

    def _pickle(self, value: Any, path: str) -> dict[str, Any]:
        import cloudpickle

        key = path or "<root>"
        try:
            self.pickled[key] = cloudpickle.dumps(value)
        except Exception as error:
            raise TypeError(
                f"Cannot save {key!r}: it has no JSON description and cannot be pickled ({error})"
            ) from error
        return {_TYPE: "pickled", "key": key}

    def _child(self, value: Any, path: str, key: Any) -> Any:
        return self.encode(value, f"{path}.{key}" if path else str(key))

    def _encode(self, value: Any, path: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, enum.Enum):
            enum_path = object_import_path(type(value))
            if enum_path is None:
                raise NotJsonSerializable(
                    f"enum {type(value).__qualname__} is not from an allow-listed module"
                )
            return {_TYPE: "enum", "class": enum_path, "value": self._encode(value.value, path)}
        if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
            encoded = _scalar_to_json(value)
            return {_TYPE: "float", "value": encoded} if isinstance(encoded, str) else encoded
        if isinstance(value, np.ndarray):
            return {_TYPE: "ndarray", **ndarray_to_json(value)}
        if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
            dtype = np.dtype(value)
            if dtype.kind not in "biufc":
                raise NotJsonSerializable(f"dtype {dtype} has no JSON description")
            return {_TYPE: "dtype", "name": dtype.name, "as_type": isinstance(value, type)}
        if isinstance(value, gym.spaces.Space):
            return {_TYPE: "space", **space_to_json(value)}
        if isinstance(value, tuple) and type(value) is tuple:
            return {_TYPE: "tuple", "items": [self._child(v, path, i) for i, v in enumerate(value)]}
        if type(value) is list:
            return [self._child(v, path, i) for i, v in enumerate(value)]
        if type(value) is dict:
            if all(isinstance(k, str) for k in value) and _TYPE not in value:
                return {k: self._child(v, path, k) for k, v in value.items()}
            return {
                _TYPE: "dict",
                "items": [[self._encode(k, path), self._child(v, path, k)] for k, v in value.items()],
            }
        if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
            import_path = object_import_path(value)
            if import_path is None:
                raise NotJsonSerializable(f"{value!r} is not importable from an allow-listed module")
            return {_TYPE: "class" if isinstance(value, type) else "function", "path": import_path}
        return self._encode_instance(value, path)

    def _encode_instance(self, value: Any, path: str) -> Any:
        cls = type(value)
        cls_path = object_import_path(cls)
        if (
            cls_path is None
            or isinstance(value, (dict, list, tuple, set))
            or not hasattr(value, "__dict__")
            or "__slots__" in cls.__dict__
            or cls.__reduce_ex__ is not object.__reduce_ex__
            or getattr(cls, "__getstate__", None) is not getattr(object, "__getstate__", None)
            or getattr(cls, "__setstate__", None) is not None
        ):
            raise NotJsonSerializable(f"{cls.__qualname__} instances have no JSON description")
        state = {k: self._child(v, path, k) for k, v in vars(value).items()}
        return {_TYPE: "instance", "class": cls_path, "state": state}


class JsonDecoder:
    """Inverse of :class:`JsonEncoder`.

    :param pickled: dotted key -> already-resolved object for ``pickled`` placeholders (the
        caller decides whether and how those objects are obtained)
    """

    def __init__(self, pickled: Mapping[str, Any] | None = None) -> None:
        self.pickled = pickled or {}

    def decode(self, obj: Any) -> Any:
        """Decode a JSON value."""
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, list):
            return [self.decode(v) for v in obj]
        if not isinstance(obj, dict):
            raise SaveFormatError(f"Unexpected JSON value {obj!r}")
        if _TYPE not in obj:
            return {k: self.decode(v) for k, v in obj.items()}
        kind = obj[_TYPE]
        try:
            return self._decode_typed(kind, obj)
        except SaveFormatError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise SaveFormatError(f"Invalid {kind!r} description {obj!r}: {error!r}") from None

    def _decode_typed(self, kind: str, obj: dict[str, Any]) -> Any:
        if kind == "float":
            return float(_scalar_from_json(obj["value"]))
        if kind == "tuple":
            return tuple(self.decode(v) for v in obj["items"])
        if kind == "dict":
            return {self.decode(k): self.decode(v) for k, v in obj["items"]}
        if kind == "ndarray":
            return ndarray_from_json(obj)
        if kind == "dtype":
            dtype = np.dtype(obj["name"])
            return dtype.type if obj.get("as_type") else dtype
        if kind == "space":
            return space_from_json(obj)
        if kind in ("class", "function"):
            return import_from_path(obj["path"], kind)
        if kind == "enum":
            return import_from_path(obj["class"], "class")(self.decode(obj["value"]))
        if kind == "instance":
            cls = import_from_path(obj["class"], "class")
            instance = cls.__new__(cls)
            instance.__dict__.update({str(k): self.decode(v) for k, v in obj["state"].items()})
            return instance
        if kind == "pickled":
            key = obj["key"]
            if key not in self.pickled:
                raise SaveFormatError(f"Pickled entry {key!r} was not provided")
            return self.pickled[key]
        raise SaveFormatError(f"Unknown JSON value type {kind!r}")


def encode_json(value: Any, allow_pickle: bool = False) -> tuple[Any, dict[str, bytes]]:
    """Describe ``value`` as plain JSON (see :class:`JsonEncoder`).

    :param value: the value
    :param allow_pickle: pickle what has no JSON description instead of raising
    :return: (JSON value, dotted key -> pickled bytes)
    """
    encoder = JsonEncoder(allow_pickle=allow_pickle)
    return encoder.encode(value), encoder.pickled


def decode_json(obj: Any, pickled: Mapping[str, Any] | None = None) -> Any:
    """Rebuild a value from :func:`encode_json` output (pickled placeholders come from ``pickled``)."""
    return JsonDecoder(pickled).decode(obj)


def find_pickled_keys(obj: Any) -> list[str]:
    """Return the keys of every ``pickled`` placeholder in a JSON value, in document order."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, dict):
            if node.get(_TYPE) == "pickled":
                found.append(str(node.get("key")))
                return
            for v in node.values():
                walk(v)

    walk(obj)
    return found


# ---------------------------------------------------------------------------------------------
# Strict state-dict checks
# ---------------------------------------------------------------------------------------------


def check_state_dict(
    expected: Mapping[str, tuple[int, ...]],
    received: Mapping[str, Any],
    what: str = "state dict",
    strict: bool = True,
) -> None:
    """Raise :class:`StateDictMismatchError` listing every missing, unexpected or mis-shaped key.

    :param expected: name -> shape of the arrays of the target object
    :param received: name -> array (anything with ``.shape``) to be loaded
    :param what: name of the target, for the message (e.g. ``"policy"``)
    :param strict: when False, missing and unexpected keys are allowed (shapes are still checked)
    """
    missing = sorted(set(expected) - set(received))
    unexpected = sorted(set(received) - set(expected))
    wrong = sorted(
        f"{k}: expected {tuple(expected[k])}, got {tuple(received[k].shape)}"
        for k in set(expected) & set(received)
        if tuple(received[k].shape) != tuple(expected[k])
    )
    problems = []
    if strict and missing:
        problems.append(f"missing keys {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong:
        problems.append(f"mis-shaped arrays [{'; '.join(wrong)}]")
    if problems:
        raise StateDictMismatchError(f"Cannot load {what}: " + ", ".join(problems))


# ---------------------------------------------------------------------------------------------
# Zip archives
# ---------------------------------------------------------------------------------------------


def resolve_save_path(path: PathLike, suffix: str | None = "zip") -> pathlib.Path:
    """SB3's rule: append ``.suffix`` when the path has no suffix."""
    result = pathlib.Path(path)
    if suffix and result.suffix == "":
        result = pathlib.Path(f"{result}.{suffix}")
    return result


def resolve_load_path(path: PathLike, suffix: str | None = "zip") -> pathlib.Path:
    """SB3's rule: use ``path`` if it exists, else ``path.suffix`` if that exists."""
    result = pathlib.Path(path)
    if not result.exists() and suffix:
        candidate = pathlib.Path(f"{result}.{suffix}")
        if candidate.exists():
            return candidate
    if not result.exists():
        raise FileNotFoundError(
            f"No such file: {str(result)!r}" + (f" (nor with .{suffix})" if suffix else "")
        )
    if result.is_dir():
        raise IsADirectoryError(f"{str(result)!r} is a folder, not a saved file")
    return result


def _zip_bytes(entries: Mapping[str, bytes]) -> Callable[[IO[bytes]], None]:
    def write(file: IO[bytes]) -> None:
        with zipfile.ZipFile(file, mode="w") as archive:
            for name, content in entries.items():
                compression = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
                archive.writestr(name, content, compress_type=compression)

    return write


def write_archive(path_or_file: PathOrFile, entries: Mapping[str, bytes], suffix: str | None = "zip") -> None:
    """Write a zip archive of ``entries`` (name -> bytes), atomically when given a path.

    A ``format_version`` entry is added. ``.safetensors`` entries are stored, others deflated.

    :param path_or_file: target path (``.suffix`` appended when it has none) or open binary file
    :param entries: entry name -> content
    :param suffix: suffix appended to a path without one (None: never)
    """
    all_entries = {FORMAT_VERSION_ENTRY: f"{FORMAT_VERSION}\n".encode(), **entries}
    writer = _zip_bytes(all_entries)
    if isinstance(path_or_file, (str, os.PathLike)):
        with atomic_open(resolve_save_path(path_or_file, suffix)) as file:
            writer(file)
    else:
        writer(path_or_file)


def _describe(path_or_file: PathOrFile) -> str:
    if isinstance(path_or_file, (str, os.PathLike)):
        return repr(str(path_or_file))
    return repr(getattr(path_or_file, "name", "<file object>"))


def read_archive(path_or_file: PathOrFile, suffix: str | None = "zip") -> dict[str, bytes]:
    """Read every entry of an archive written by :func:`write_archive`, checking its integrity.

    :param path_or_file: path (``.suffix`` tried when the path does not exist) or open binary file
    :param suffix: suffix tried for a missing path
    :return: entry name -> bytes
    :raises SaveFormatError: for a non-zip or truncated file (CRC errors included), or a missing or
        unknown format version
    :raises FileNotFoundError: when no file exists at the path
    """
    source = path_or_file
    if isinstance(path_or_file, (str, os.PathLike)):
        source = resolve_load_path(path_or_file, suffix)
    name = _describe(source)
    try:
        with zipfile.ZipFile(source, mode="r") as archive:  # type: ignore[arg-type]
            entries = {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error, OSError, ValueError) as error:
        if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise SaveFormatError(
            f"{name} is not a valid mlx_baselines3 file: not a zip archive, or truncated/corrupted ({error})"
        ) from None
    if FORMAT_VERSION_ENTRY not in entries:
        hint = ""
        if "_stable_baselines3_version" in entries or "policy.pth" in entries:
            hint = " It looks like a Stable-Baselines3 (PyTorch) file, which cannot be loaded here."
        raise SaveFormatError(
            f"{name} is not an mlx_baselines3 file: it has no '{FORMAT_VERSION_ENTRY}' entry.{hint}"
        )
    raw_version = entries[FORMAT_VERSION_ENTRY].decode("utf-8", errors="replace").strip()
    if raw_version != str(FORMAT_VERSION):
        raise SaveFormatError(
            f"{name} has format version {raw_version!r}; this release of mlx_baselines3 reads "
            f"format version {FORMAT_VERSION} only (the file was probably written by a newer release)"
        )
    return entries


def read_json_entry(entries: Mapping[str, bytes], name: str, source: str = "the file") -> Any:
    """Parse the JSON entry ``name`` of an archive (duplicate keys rejected)."""
    if name not in entries:
        raise SaveFormatError(f"{source} has no {name!r} entry")
    try:
        return json.loads(entries[name].decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as error:
        raise SaveFormatError(f"{source}: entry {name!r} is not valid JSON ({error})") from None


def json_dumps(obj: Any) -> bytes:
    """Serialise already-encoded JSON (strict: no NaN/inf literals)."""
    return json.dumps(obj, indent=1, allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# System information
# ---------------------------------------------------------------------------------------------


def get_system_info(print_info: bool = True) -> tuple[dict[str, str], str]:
    """Describe the software and machine (SB3's ``get_system_info``).

    :param print_info: print the description
    :return: (name -> version, text)
    """
    import mlx.core as mx

    from mlx_baselines3.version import __version__

    try:
        import cloudpickle

        cloudpickle_version = cloudpickle.__version__
    except ImportError:  # pragma: no cover
        cloudpickle_version = "not installed"
    backends = []
    for name in ("metal", "cuda"):
        module = getattr(mx, name, None)
        try:
            if module is not None and module.is_available():
                backends.append(name)
        except Exception:  # pragma: no cover - backend probes must never break a save
            pass
    info = {
        "OS": f"{platform.platform()} {platform.version()}",
        "Python": platform.python_version(),
        "mlx_baselines3": __version__,
        "MLX": getattr(mx, "__version__", "unknown"),
        "MLX device": str(mx.default_device()),
        "MLX backends": ", ".join(backends + ["cpu"]),
        "Numpy": np.__version__,
        "Gymnasium": gym.__version__,
        "Cloudpickle": cloudpickle_version,
    }
    from mlx_baselines3._blas import blas_info

    blas = blas_info()
    info["BLAS"] = f"{blas['version'] or blas['provider']} ({'active' if blas['active'] else blas['reason']})"
    from mlx_baselines3._jit import jit_info

    jit = jit_info()
    info["MLX CPU kernels"] = f"g++ {jit['flags']}" if jit["active"] else f"MLX's default flags ({jit['reason']})"
    from mlx_baselines3._malloc import malloc_info

    malloc = malloc_info()
    if malloc["provider"] is not None:
        hint = f" (LD_PRELOAD={malloc['available']} is faster)" if malloc["c_library"] and malloc["available"] else ""
        info["malloc"] = f"{malloc['provider']}{hint}"
    text = "".join(f"- {key}: {value}\n" for key, value in info.items())
    if print_info:
        print(text)
    return info, text


# ---------------------------------------------------------------------------------------------
# Generic savable objects (JSON + arrays)
# ---------------------------------------------------------------------------------------------


def save_json_and_arrays(
    path_or_file: PathOrFile,
    data: Mapping[str, Any],
    arrays: Mapping[str, Any],
    kind: str,
    suffix: str | None = None,
) -> None:
    """Save a small object as a zip of ``data.json`` + ``arrays.safetensors``, atomically.

    Meant for objects such as ``VecNormalize`` statistics: ``data`` holds plain settings (it may
    contain anything :class:`JsonEncoder` describes without pickling: numbers, strings, tuples,
    numpy arrays, spaces...), ``arrays`` the numeric state.

    :param path_or_file: target path or open binary file
    :param data: settings, described as JSON (never pickled; a value without a JSON description is
        a ``TypeError``)
    :param arrays: name -> numpy / ``mx.array``
    :param kind: a tag stored in the file and checked by :func:`load_json_and_arrays`
        (e.g. ``"VecNormalize"``)
    :param suffix: suffix appended to a path without one (None: keep the path as given, as SB3
        does for ``VecNormalize.save``)
    """
    try:
        encoded, _ = encode_json(dict(data), allow_pickle=False)
    except NotJsonSerializable as error:
        raise TypeError(f"Cannot save {kind}: {error}") from None
    header = {"kind": kind, "data": encoded}
    _, system_text = get_system_info(print_info=False)
    entries = {
        DATA_ENTRY: json_dumps(header),
        "arrays.safetensors": safetensors_dumps(arrays),
        SYSTEM_INFO_ENTRY: system_text.encode("utf-8"),
    }
    write_archive(path_or_file, entries, suffix=suffix)


def load_json_and_arrays(
    path_or_file: PathOrFile, kind: str | None = None, suffix: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Load what :func:`save_json_and_arrays` wrote, without unpickling anything.

    :param path_or_file: path or open binary file
    :param kind: when given, the tag the file must carry
    :param suffix: suffix tried when the path does not exist
    :return: (data, name -> numpy array)
    :raises SaveFormatError: for a corrupt file or a different ``kind``
    """
    entries = read_archive(path_or_file, suffix=suffix)
    source = _describe(path_or_file)
    header = read_json_entry(entries, DATA_ENTRY, source)
    if not isinstance(header, dict) or "data" not in header or "kind" not in header:
        raise SaveFormatError(f"{source}: {DATA_ENTRY} lacks 'kind'/'data'")
    if kind is not None and header["kind"] != kind:
        raise SaveFormatError(f"{source} holds a {header['kind']!r}, not a {kind!r}")
    if "arrays.safetensors" not in entries:
        raise SaveFormatError(f"{source} has no 'arrays.safetensors' entry")
    if find_pickled_keys(header["data"]):
        raise PickleNotAllowedError(
            f"{source} holds pickled entries, which are not allowed in a {header['kind']!r} file"
        )
    arrays, _ = safetensors_loads(entries["arrays.safetensors"], f"{source}:arrays.safetensors")
    return decode_json(header["data"]), arrays


__all__ = [
    "FORMAT_VERSION",
    "SAFE_IMPORT_PREFIXES",
    "JsonDecoder",
    "JsonEncoder",
    "NotJsonSerializable",
    "PickleNotAllowedError",
    "SaveFormatError",
    "StateDictMismatchError",
    "atomic_open",
    "atomic_write_bytes",
    "check_state_dict",
    "decode_json",
    "encode_json",
    "find_pickled_keys",
    "get_system_info",
    "import_from_path",
    "load_json_and_arrays",
    "ndarray_from_json",
    "ndarray_to_json",
    "object_import_path",
    "read_archive",
    "safetensors_dumps",
    "safetensors_loads",
    "save_json_and_arrays",
    "space_from_json",
    "space_to_json",
    "write_archive",
]
