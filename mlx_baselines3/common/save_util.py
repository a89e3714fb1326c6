"""Saving and loading algorithms and policies (the zip format of ``docs/save_format.md``).

``BaseAlgorithm.save/load/get_parameters/set_parameters`` and ``BasePolicy.save/load`` are thin
wrappers over :func:`save_algorithm`, :func:`load_algorithm`, :func:`get_algorithm_parameters`,
:func:`set_algorithm_parameters`, :func:`save_policy` and :func:`load_policy`.

Safety: loading never unpickles anything unless the caller passes ``allow_pickle=True``; values
that have no JSON description are stored in separate pickled entries and can also be replaced
through ``custom_objects`` without being unpickled. Writes are atomic; loads are strict.
The format building blocks live in :mod:`mlx_baselines3.common.serialization`.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_baselines3.common.serialization import (
    DATA_ENTRY,
    PICKLED_PREFIX,
    SYSTEM_INFO_ENTRY,
    JsonDecoder,
    JsonEncoder,
    PathOrFile,
    PickleNotAllowedError,
    SaveFormatError,
    StateDictMismatchError,
    check_state_dict,
    find_pickled_keys,
    get_system_info,
    json_dumps,
    read_archive,
    read_json_entry,
    safetensors_dumps,
    safetensors_loads,
    write_archive,
)

T = TypeVar("T")

#: Training counters stored with every algorithm (when the model has them).
COUNTER_ATTRIBUTES: tuple[str, ...] = (
    "num_timesteps",
    "_total_timesteps",
    "_num_timesteps_at_start",
    "_n_updates",
    "_episode_num",
    "seed",
    "_current_progress_remaining",
)
#: Episode statistics stored when they have a JSON description.
EPISODE_BUFFERS: tuple[str, ...] = ("ep_info_buffer", "ep_success_buffer")
#: Rollout state (last observation), restored when loading without env or with force_reset=False.
ROLLOUT_ATTRIBUTES: tuple[str, ...] = ("_last_obs", "_last_episode_starts", "_last_original_obs")

EXTRA_STATE_ENTRY = "extra_state.safetensors"
ROLLOUT_STATE_ENTRY = "rollout_state.safetensors"
_RESERVED_ENTRIES = {DATA_ENTRY, SYSTEM_INFO_ENTRY, EXTRA_STATE_ENTRY, ROLLOUT_STATE_ENTRY}


# ---------------------------------------------------------------------------------------------
# Attribute helpers (SB3 names)
# ---------------------------------------------------------------------------------------------


def recursive_getattr(obj: Any, attr: str, *args: Any) -> Any:
    """``getattr`` over a dotted path (``recursive_getattr(model, "policy.optimizer")``)."""
    for part in attr.split("."):
        obj = getattr(obj, part, *args)
    return obj


def recursive_setattr(obj: Any, attr: str, value: Any) -> None:
    """``setattr`` over a dotted path."""
    head, _, last = attr.rpartition(".")
    setattr(recursive_getattr(obj, head) if head else obj, last, value)


# ---------------------------------------------------------------------------------------------
# Module and optimizer state
# ---------------------------------------------------------------------------------------------


def module_state_dict(module: Any) -> dict[str, mx.array]:
    """A module's parameters (trainable or not) as a flat ``{dotted.name: array}`` dict."""
    return dict(tree_flatten(module.parameters()))


def _as_mx(value: Any, dtype: Any = None) -> mx.array:
    array = value if isinstance(value, mx.array) else mx.array(np.asarray(value))
    return array.astype(dtype) if dtype is not None and array.dtype != dtype else array


def load_module_state(
    module: Any, state: Mapping[str, Any], what: str = "module", strict: bool = True
) -> None:
    """Load a flat state dict into ``module`` in place, after checking it.

    Values are cast to the dtype of the parameter they replace. Nothing is loaded when the check
    fails.

    :param module: an ``mlx.nn.Module``
    :param state: name -> array (numpy or MLX)
    :param what: name of the module, for error messages
    :param strict: when False, missing and unexpected keys are allowed (shapes are still checked)
    :raises StateDictMismatchError: naming missing / unexpected / mis-shaped keys
    """
    current = module_state_dict(module)
    check_state_dict({k: tuple(v.shape) for k, v in current.items()}, state, what=what, strict=strict)
    updates = [(k, _as_mx(v, current[k].dtype)) for k, v in state.items() if k in current]
    if updates:
        module.update(tree_unflatten(updates))
        mx.eval([v for _, v in updates])


def optimizer_state_dict(optimizer: optim.Optimizer) -> dict[str, mx.array]:
    """An MLX optimizer's state (step count, learning rate, per-parameter moments) as a flat dict."""
    return dict(tree_flatten(optimizer.state))


def _assign_in_place(tree: dict[str, Any], flat: Mapping[str, mx.array]) -> None:
    """Write flat ``{dotted.key: array}`` leaves into ``tree``, keeping its containers (and so their
    identities and the lengths of its lists), creating missing containers as needed."""
    for key, value in flat.items():
        parts = key.split(".")
        node: Any = tree
        for part, following in zip(parts[:-1], parts[1:]):
            wants_list = following.isdigit()
            if isinstance(node, list):
                slot: Any = int(part)
                while len(node) <= slot:
                    node.append({})
            else:
                slot = part
                node.setdefault(slot, {})
            child = node[slot]
            if not isinstance(child, (dict, list)) or (wants_list and isinstance(child, dict) and not child):
                node[slot] = [] if wants_list else {}
            node = node[slot]
        last = parts[-1]
        if isinstance(node, list):
            index = int(last)
            while len(node) <= index:
                node.append({})
            node[index] = value
        else:
            node[last] = value


def load_optimizer_state(
    optimizer: optim.Optimizer, state: Mapping[str, Any], what: str = "optimizer"
) -> None:
    """Restore an MLX optimizer's state in place (the dict identity is kept, so compiled steps that
    declared ``optimizer.state`` as their state see the new values).

    The check is strict when the optimizer is already initialised (its keys and shapes must match);
    an uninitialised optimizer takes the stored per-parameter state as is.

    :param optimizer: the optimizer
    :param state: flat name -> array, as from :func:`optimizer_state_dict`
    :param what: name for error messages
    :raises StateDictMismatchError: naming missing / unexpected / mis-shaped keys
    """
    current = optimizer_state_dict(optimizer)
    initialised = any("." in key for key in current) or not any("." in key for key in state)
    if initialised:
        expected = {k: tuple(v.shape) for k, v in current.items()}
        check_state_dict(expected, state, what=what, strict=True)
    else:
        top = {k: tuple(v.shape) for k, v in current.items()}
        check_state_dict(top, {k: v for k, v in state.items() if "." not in k}, what=what, strict=True)
    _assign_in_place(
        optimizer.state, {k: _as_mx(v, current[k].dtype if k in current else None) for k, v in state.items()}
    )
    mx.eval(optimizer.state)


def _check_state(target: Any, state: Mapping[str, Any], what: str, strict: bool) -> None:
    """Validate without loading (used to check everything before loading anything)."""
    if isinstance(target, optim.Optimizer):
        current = optimizer_state_dict(target)
        if any("." in key for key in current):
            check_state_dict({k: tuple(v.shape) for k, v in current.items()}, state, what=what, strict=True)
    else:
        current = module_state_dict(target)
        check_state_dict({k: tuple(v.shape) for k, v in current.items()}, state, what=what, strict=strict)


def _load_state(target: Any, state: Mapping[str, Any], what: str, strict: bool) -> None:
    if isinstance(target, optim.Optimizer):
        load_optimizer_state(target, state, what=what)
    else:
        load_module_state(target, state, what=what, strict=strict)


# ---------------------------------------------------------------------------------------------
# Header helpers
# ---------------------------------------------------------------------------------------------


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode_items(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, bytes]]:
    """Encode each top-level value; return (encoded, pickled key -> entry name, entries)."""
    encoder = JsonEncoder(allow_pickle=True)
    encoded = {key: encoder.encode(value, key) for key, value in data.items()}
    index = {key: f"{PICKLED_PREFIX}{i}.pkl" for i, key in enumerate(encoder.pickled)}
    entries = {index[key]: payload for key, payload in encoder.pickled.items()}
    return encoded, index, entries


def _decode_items(
    encoded: Mapping[str, Any],
    pickled_index: Mapping[str, str],
    entries: Mapping[str, bytes],
    custom_objects: Mapping[str, Any] | None,
    allow_pickle: bool,
    source: str,
) -> dict[str, Any]:
    """Decode the top-level values, taking replacements from ``custom_objects`` (never unpickled)."""
    custom = dict(custom_objects or {})
    to_decode = {key: value for key, value in encoded.items() if key not in custom}
    resolved: dict[str, Any] = {}
    refused: list[str] = []
    for key in find_pickled_keys(list(to_decode.values())):
        if key in custom:
            resolved[key] = custom[key]
        elif not allow_pickle:
            refused.append(key)
        else:
            entry = pickled_index.get(key)
            if entry is None or entry not in entries:
                raise SaveFormatError(f"{source}: the pickled entry for {key!r} is missing")
            import cloudpickle

            resolved[key] = cloudpickle.loads(entries[entry])
    if refused:
        raise PickleNotAllowedError(
            f"{source} stores {refused} as pickled Python objects (they have no JSON description). "
            "Unpickling runs arbitrary code, so it is refused by default. Either pass replacements, e.g. "
            f"custom_objects={{{refused[0]!r}: ...}}, or, only if you trust this file, load it with "
            "allow_pickle=True."
        )
    decoder = JsonDecoder(resolved)
    data = {key: decoder.decode(value) for key, value in to_decode.items()}
    for key, value in custom.items():
        if key in encoded:
            data[key] = value
    return data


def _read_header(entries: Mapping[str, bytes], kind: str, source: str) -> dict[str, Any]:
    header = read_json_entry(entries, DATA_ENTRY, source)
    if not isinstance(header, dict) or not isinstance(header.get("data"), dict):
        raise SaveFormatError(f"{source}: {DATA_ENTRY} is not a valid description")
    if header.get("kind") != kind:
        hints = {
            "algorithm": "load it with the algorithm's load(), e.g. PPO.load(path)",
            "policy": "load it with the policy class's load(), e.g. ActorCriticPolicy.load(path)",
        }
        found = str(header.get("kind"))
        raise SaveFormatError(f"{source} holds a {found!r} file, not a {kind!r} file: {hints.get(found, '')}")
    return header


def _arrays_entry(entries: Mapping[str, bytes], name: str, source: str) -> dict[str, np.ndarray]:
    if name not in entries:
        raise SaveFormatError(f"{source} has no {name!r} entry (truncated or incomplete file?)")
    arrays, _ = safetensors_loads(entries[name], f"{source}:{name}")
    return arrays


def _source(path_or_file: PathOrFile) -> str:
    if isinstance(path_or_file, (str, bytes)) or hasattr(path_or_file, "__fspath__"):
        return repr(str(path_or_file))
    return repr(getattr(path_or_file, "name", "<file object>"))


def _save_params(model: Any) -> tuple[list[str], list[str]]:
    getter = getattr(model, "_get_mlx_save_params", None)
    if getter is None:
        return ["policy"], ["policy.optimizer"]
    modules, optimizers = getter()
    return list(modules), list(optimizers)


def _nested_arrays(name: str, value: Any) -> tuple[str, dict[str, np.ndarray]] | None:
    """Rollout state -> (structure, arrays); None when it has no array description."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return "array", {name: value}
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for k, v in value.items()
    ):
        return "dict", {f"{name}/{k}": v for k, v in value.items()}
    return None


# ---------------------------------------------------------------------------------------------
# Algorithms
# ---------------------------------------------------------------------------------------------


def save_algorithm(
    model: Any,
    path: PathOrFile,
    exclude: Iterable[str] | None = None,
    include: Iterable[str] | None = None,
) -> None:
    """Save an algorithm to a zip file, atomically (``.zip`` is appended when the path has no suffix).

    Stored: the constructor arguments (``model._constructor_args``), the spaces, ``n_envs``, the
    training counters, the episode statistics, the arrays of every module and optimizer of
    ``model._get_mlx_save_params()``, ``model._get_extra_state()``, the last observation, and a
    system description.

    :param model: the algorithm
    :param path: file path or open binary file
    :param exclude: names of stored values to leave out (constructor arguments, counters, ...)
    :param include: names of additional model attributes to store (restored by ``setattr``)
    """
    excluded = set(exclude or [])
    included = [name for name in (include or []) if name not in excluded]
    constructor_args = getattr(model, "_constructor_args", None)
    if not isinstance(constructor_args, dict):
        raise TypeError(f"{type(model).__name__} has no _constructor_args: it cannot be saved")
    constructor_args = {
        k: v
        for k, v in constructor_args.items()
        if k not in ("self", "env", "_init_setup_model") and k not in excluded
    }
    data: dict[str, Any] = dict(constructor_args)
    for name in ("observation_space", "action_space", "n_envs", *COUNTER_ATTRIBUTES):
        if name not in excluded and hasattr(model, name):
            data[name] = getattr(model, name)
    for name in included:
        data[name] = recursive_getattr(model, name)

    encoder = JsonEncoder(allow_pickle=False)
    for name in EPISODE_BUFFERS:
        buffer = getattr(model, name, None)
        if name in excluded or buffer is None:
            continue
        try:
            encoder.encode(list(buffer))
        except TypeError:
            continue  # statistics only: skipped rather than pickled
        data[name] = list(buffer)

    encoded, pickled_index, entries = _encode_items(data)
    modules, optimizers = _save_params(model)
    for name in modules:
        entries[f"{name}.safetensors"] = safetensors_dumps(module_state_dict(recursive_getattr(model, name)))
    for name in optimizers:
        entries[f"{name}.safetensors"] = safetensors_dumps(
            optimizer_state_dict(recursive_getattr(model, name))
        )
    clash = sorted({f"{n}.safetensors" for n in modules + optimizers} & _RESERVED_ENTRIES)
    if clash:
        raise ValueError(f"Module names clash with reserved entries: {clash}")

    extra_getter = getattr(model, "_get_extra_state", None)
    extra = dict(extra_getter()) if extra_getter is not None else {}
    if extra:
        entries[EXTRA_STATE_ENTRY] = safetensors_dumps(extra)

    rollout_structure: dict[str, str] = {}
    rollout_arrays: dict[str, np.ndarray] = {}
    for name in ROLLOUT_ATTRIBUTES:
        described = None if name in excluded else _nested_arrays(name, getattr(model, name, None))
        if described is not None:
            rollout_structure[name], arrays = described
            rollout_arrays.update(arrays)
    if rollout_arrays:
        entries[ROLLOUT_STATE_ENTRY] = safetensors_dumps(rollout_arrays)

    from mlx_baselines3.version import __version__

    header = {
        "kind": "algorithm",
        "algorithm": _class_path(type(model)),
        "algorithm_lineage": [
            b.__name__ for b in type(model).__mro__ if b.__module__ not in ("builtins", "abc")
        ],
        "mlx_baselines3_version": __version__,
        "constructor_args": list(constructor_args),
        "included": included,
        "modules": modules,
        "optimizers": optimizers,
        "extra_state": bool(extra),
        "rollout_state": rollout_structure,
        "pickled": pickled_index,
        "data": encoded,
    }
    _, system_text = get_system_info(print_info=False)
    entries[DATA_ENTRY] = json_dumps(header)
    entries[SYSTEM_INFO_ENTRY] = system_text.encode("utf-8")
    write_archive(path, entries, suffix="zip")


def _check_space(name: str, saved: Any, actual: Any) -> None:
    if saved != actual:
        raise ValueError(
            f"The env's {name.replace('_', ' ')} does not match the saved model's: "
            f"the model was saved with {saved}, the env has {actual}"
        )


def _print_system_info(entries: Mapping[str, bytes]) -> None:
    print("== CURRENT SYSTEM INFO ==")
    get_system_info(print_info=True)
    print("== SAVED MODEL SYSTEM INFO ==")
    print(entries.get(SYSTEM_INFO_ENTRY, b"(not stored)\n").decode("utf-8", errors="replace"))


def load_algorithm(
    cls: type[T],
    path: PathOrFile,
    env: Any = None,
    custom_objects: dict[str, Any] | None = None,
    print_system_info: bool = False,
    force_reset: bool = True,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> T:
    """Rebuild an algorithm saved with :func:`save_algorithm` (SB3's ``load`` semantics).

    The model is constructed from the stored constructor arguments (``kwargs`` that are
    constructor arguments override them; other ``kwargs`` are set as attributes before
    ``_setup_model``), then every array is restored strictly.

    :param cls: the algorithm class
    :param path: file path (``.zip`` tried when missing) or open binary file
    :param env: env to train on, checked against the stored spaces (a mismatch raises a
        ``ValueError`` naming both); None is enough to predict
    :param custom_objects: replacements for stored values (top-level names such as
        ``"learning_rate"``, or the dotted keys of pickled entries); they are used as given and
        the stored values are never unpickled
    :param print_system_info: print the system that saved the model and the current one
    :param force_reset: with an env, start the next ``learn`` from a reset instead of the stored
        last observation
    :param allow_pickle: unpickle the stored Python objects that have no JSON description (only for
        trusted files)
    :return: the model
    :raises PickleNotAllowedError: when pickled entries are needed and not allowed
    :raises SaveFormatError: for a corrupt, truncated or unknown-version file
    :raises StateDictMismatchError: when stored arrays do not match the rebuilt model
    """
    entries = read_archive(path, suffix="zip")
    source = _source(path)
    if print_system_info:
        _print_system_info(entries)
    header = _read_header(entries, "algorithm", source)
    stored_lineage = [str(name) for name in header.get("algorithm_lineage", [])]
    own_lineage = [base.__name__ for base in cls.__mro__]
    if stored_lineage and cls.__name__ not in stored_lineage and stored_lineage[0] not in own_lineage:
        raise SaveFormatError(
            f"{source} holds a {stored_lineage[0]} model, it cannot be loaded with {cls.__name__}"
        )
    data = _decode_items(
        header["data"], header.get("pickled", {}), entries, custom_objects, allow_pickle, source
    )
    if "policy_kwargs" in kwargs and (kwargs["policy_kwargs"] or {}) != (data.get("policy_kwargs") or {}):
        raise ValueError(
            "The specified policy kwargs do not equal the stored policy kwargs. "
            f"Stored kwargs: {data.get('policy_kwargs')}, specified kwargs: {kwargs['policy_kwargs']}"
        )
    if "observation_space" not in data or "action_space" not in data:
        raise SaveFormatError(f"{source} does not store the observation and action spaces")
    observation_space, action_space = data["observation_space"], data["action_space"]

    if env is not None:
        if isinstance(env, str):
            import gymnasium as gym

            env = gym.make(env)
        wrap = getattr(cls, "_wrap_env", None)
        if wrap is not None:
            env = wrap(env, data.get("verbose", 0))
        _check_space("observation_space", observation_space, env.observation_space)
        _check_space("action_space", action_space, env.action_space)

    init_params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in init_params.values())
    constructor_args = {k: data[k] for k in header.get("constructor_args", []) if k in data}
    late_attributes: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in init_params or takes_any:
            constructor_args[key] = value
        else:
            late_attributes[key] = value
    deferred_setup = "_init_setup_model" in init_params
    if deferred_setup:
        constructor_args["_init_setup_model"] = False
    model: Any = cls(env=env, **constructor_args)  # type: ignore[call-arg]

    model.observation_space = observation_space
    model.action_space = action_space
    model.n_envs = env.num_envs if env is not None else data.get("n_envs", 1)
    for name in (*COUNTER_ATTRIBUTES, *header.get("included", [])):
        if name in data:
            recursive_setattr(model, name, data[name])
    for name, value in late_attributes.items():
        setattr(model, name, value)
    if deferred_setup:
        model._setup_model()

    _restore_arrays(model, header, entries, source)
    window = getattr(model, "_stats_window_size", 100)
    for name in EPISODE_BUFFERS:
        if name in data and isinstance(data[name], list):
            setattr(model, name, deque(data[name], maxlen=window))
    if env is None or not force_reset:
        _restore_rollout_state(model, header, entries, source)
    else:
        model._last_obs = None
    if getattr(model, "use_sde", False) and hasattr(model.policy, "reset_noise"):
        model.policy.reset_noise()
    return model


def _restore_arrays(model: Any, header: Mapping[str, Any], entries: Mapping[str, bytes], source: str) -> None:
    """Check every stored module/optimizer/extra array against ``model``, then load them all."""
    modules, optimizers = _save_params(model)
    stored_modules, stored_optimizers = list(header.get("modules", [])), list(header.get("optimizers", []))
    if set(modules) != set(stored_modules) or set(optimizers) != set(stored_optimizers):
        raise StateDictMismatchError(
            f"{source} stores modules {stored_modules} and optimizers {stored_optimizers}, but "
            f"{type(model).__name__} has modules {modules} and optimizers {optimizers}"
        )
    plan = []
    for name in modules + optimizers:
        target = recursive_getattr(model, name)
        arrays = _arrays_entry(entries, f"{name}.safetensors", source)
        _check_state(target, arrays, what=f"{name!r} from {source}", strict=True)
        plan.append((name, target, arrays))

    extra_getter = getattr(model, "_get_extra_state", None)
    expected_extra = dict(extra_getter()) if extra_getter is not None else {}
    stored_extra = _arrays_entry(entries, EXTRA_STATE_ENTRY, source) if header.get("extra_state") else {}
    check_state_dict(
        {k: tuple(np.shape(v)) for k, v in expected_extra.items()},
        stored_extra,
        what=f"extra state from {source}",
        strict=True,
    )
    for name, target, arrays in plan:
        _load_state(target, arrays, what=name, strict=True)
    if stored_extra:
        model._set_extra_state(stored_extra)


def _restore_rollout_state(
    model: Any, header: Mapping[str, Any], entries: Mapping[str, bytes], source: str
) -> None:
    structure = header.get("rollout_state") or {}
    if not structure:
        return
    arrays = _arrays_entry(entries, ROLLOUT_STATE_ENTRY, source)
    for name, kind in structure.items():
        if name not in ROLLOUT_ATTRIBUTES:
            continue
        if kind == "array" and name in arrays:
            setattr(model, name, arrays[name])
        elif kind == "dict":
            prefix = f"{name}/"
            setattr(model, name, {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})


def get_algorithm_parameters(model: Any) -> dict[str, dict[str, mx.array]]:
    """SB3's ``get_parameters``: ``{"policy": {name: array}, "policy.optimizer": {name: array}, ...}``.

    :param model: the algorithm
    :return: one flat dict per module and optimizer of ``model._get_mlx_save_params()``
    """
    modules, optimizers = _save_params(model)
    params: dict[str, dict[str, mx.array]] = {}
    for name in modules:
        params[name] = module_state_dict(recursive_getattr(model, name))
    for name in optimizers:
        params[name] = optimizer_state_dict(recursive_getattr(model, name))
    return params


def _parameters_from_file(path: PathOrFile) -> dict[str, dict[str, np.ndarray]]:
    entries = read_archive(path, suffix="zip")
    source = _source(path)
    header = _read_header(entries, "algorithm", source)
    return {
        name: _arrays_entry(entries, f"{name}.safetensors", source)
        for name in list(header.get("modules", [])) + list(header.get("optimizers", []))
    }


def set_algorithm_parameters(
    model: Any,
    load_path_or_dict: PathOrFile | Mapping[str, Mapping[str, Any]],
    exact_match: bool = True,
) -> None:
    """SB3's ``set_parameters``: load module / optimizer arrays from a dict or a saved model file.

    Everything is checked before anything is loaded, so a mismatch never half-loads a model.
    Reading a file never unpickles anything.

    :param model: the algorithm
    :param load_path_or_dict: a :func:`get_algorithm_parameters`-style dict, or a model file
    :param exact_match: require every module and optimizer, with exactly its keys (when False,
        objects may be left out and modules may load a subset of keys; shapes are always checked)
    :raises ValueError: for an unknown object name, or missing objects when ``exact_match``
    :raises StateDictMismatchError: naming missing / unexpected / mis-shaped keys
    """
    if isinstance(load_path_or_dict, Mapping):
        params: Mapping[str, Mapping[str, Any]] = load_path_or_dict
    else:
        params = _parameters_from_file(load_path_or_dict)
    modules, optimizers = _save_params(model)
    needed = set(modules) | set(optimizers)
    if exact_match and set(params) != needed:
        raise ValueError(
            f"Names of parameters do not match agents' parameters: expected {sorted(needed)}, got {sorted(params)}"
        )
    plan = []
    for name, state in params.items():
        try:
            target = recursive_getattr(model, name)
        except AttributeError as error:
            raise ValueError(f"Key {name} is an invalid object name.") from error
        if not isinstance(target, optim.Optimizer) and not hasattr(target, "parameters"):
            raise ValueError(
                f"Key {name} is an invalid object name: it is neither a module nor an optimizer."
            )
        _check_state(target, state, what=repr(name), strict=exact_match)
        plan.append((name, target, state))
    for name, target, state in plan:
        _load_state(target, state, what=repr(name), strict=exact_match)


def load_from_zip_file(
    load_path: PathOrFile,
    load_data: bool = True,
    custom_objects: dict[str, Any] | None = None,
    device: Any = "auto",
    verbose: int = 0,
    print_system_info: bool = False,
    allow_pickle: bool = False,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, np.ndarray]], None]:
    """SB3's ``load_from_zip_file``: (data, params, None) from a model file, without building a model.

    :param load_path: file path or open binary file
    :param load_data: decode the stored values (constructor arguments, spaces, counters)
    :param custom_objects: replacements for stored values (see :func:`load_algorithm`)
    :param device: accepted for SB3 compatibility
    :param verbose: accepted for SB3 compatibility
    :param print_system_info: print the saved and current system description
    :param allow_pickle: unpickle pickled entries (trusted files only)
    :return: (data or None, {object name: {array name: numpy array}}, None)
    """
    entries = read_archive(load_path, suffix="zip")
    source = _source(load_path)
    if print_system_info:
        _print_system_info(entries)
    header = _read_header(entries, "algorithm", source)
    data = None
    if load_data:
        data = _decode_items(
            header["data"], header.get("pickled", {}), entries, custom_objects, allow_pickle, source
        )
    params = {
        name: _arrays_entry(entries, f"{name}.safetensors", source)
        for name in list(header.get("modules", [])) + list(header.get("optimizers", []))
    }
    return data, params, None


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------


def save_policy(policy: Any, path: PathOrFile) -> None:
    """Save a policy alone: its constructor arguments as JSON and its parameters (no optimizer state).

    The file is a zip (``data.json``, ``policy.safetensors``, ...) written atomically; the path is
    used as given (no suffix appended, as SB3's ``policy.save``).

    :param policy: a policy with ``_get_constructor_parameters()``
    :param path: file path or open binary file
    """
    params = dict(policy._get_constructor_parameters())
    init_params = inspect.signature(type(policy).__init__).parameters
    if "lr_schedule" in init_params and "lr_schedule" not in params:
        # Needed to rebuild the policy, not to use it: a constant at the current learning rate.
        from mlx_baselines3.common.utils import ConstantSchedule

        optimizer = getattr(policy, "optimizer", None)
        learning_rate = float(optimizer.learning_rate) if optimizer is not None else 0.0
        params["lr_schedule"] = ConstantSchedule(learning_rate)
    encoded, pickled_index, entries = _encode_items(params)
    from mlx_baselines3.version import __version__

    header = {
        "kind": "policy",
        "policy_class": _class_path(type(policy)),
        "mlx_baselines3_version": __version__,
        "pickled": pickled_index,
        "data": encoded,
    }
    _, system_text = get_system_info(print_info=False)
    entries[DATA_ENTRY] = json_dumps(header)
    entries["policy.safetensors"] = safetensors_dumps(module_state_dict(policy))
    entries[SYSTEM_INFO_ENTRY] = system_text.encode("utf-8")
    write_archive(path, entries, suffix=None)


def load_policy(
    cls: type[T],
    path: PathOrFile,
    custom_objects: dict[str, Any] | None = None,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> T:
    """Rebuild a policy saved with :func:`save_policy` and load its parameters strictly.

    :param cls: the policy class
    :param path: file path or open binary file
    :param custom_objects: replacements for stored constructor arguments (never unpickled)
    :param allow_pickle: unpickle stored objects without a JSON description (trusted files only)
    :param kwargs: ignored (SB3's ``device``)
    :return: the policy
    """
    entries = read_archive(path, suffix=None)
    source = _source(path)
    header = _read_header(entries, "policy", source)
    data = _decode_items(
        header["data"], header.get("pickled", {}), entries, custom_objects, allow_pickle, source
    )
    policy: Any = cls(**data)
    load_module_state(
        policy, _arrays_entry(entries, "policy.safetensors", source), what=f"policy from {source}"
    )
    return policy


__all__ = [
    "COUNTER_ATTRIBUTES",
    "get_algorithm_parameters",
    "load_algorithm",
    "load_from_zip_file",
    "load_module_state",
    "load_optimizer_state",
    "load_policy",
    "module_state_dict",
    "optimizer_state_dict",
    "recursive_getattr",
    "recursive_setattr",
    "save_algorithm",
    "save_policy",
    "set_algorithm_parameters",
]
