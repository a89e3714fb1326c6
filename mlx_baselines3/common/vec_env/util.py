"""Helpers to store and convert VecEnv observations (dict, tuple and array spaces)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.vec_env.base_vec_env import VecEnvObs


def copy_obs_dict(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Deep-copy a dict of numpy arrays.

    :param obs: a dict of arrays
    :return: the same keys with copied arrays
    """
    if not isinstance(obs, dict):
        raise TypeError(f"copy_obs_dict expects a dict of arrays, got {type(obs).__name__}")
    return OrderedDict([(key, np.copy(value)) for key, value in obs.items()])


def dict_to_obs(obs_space: spaces.Space, obs_dict: dict[Any, np.ndarray]) -> VecEnvObs:
    """Convert the internal storage (a dict keyed by sub-space) into the space's observation type.

    Storage keys are ``None`` for a plain space, the dict keys for a Dict space and the
    indices for a Tuple space.

    :param obs_space: the observation space
    :param obs_dict: the stored observations
    :return: an array, a dict of arrays or a tuple of arrays
    """
    if isinstance(obs_space, spaces.Dict):
        return obs_dict  # type: ignore[return-value]
    if isinstance(obs_space, spaces.Tuple):
        if len(obs_dict) != len(obs_space.spaces):
            raise ValueError(
                f"Tuple observation space has {len(obs_space.spaces)} parts but {len(obs_dict)} were stored"
            )
        return tuple(obs_dict[i] for i in range(len(obs_space.spaces)))
    if set(obs_dict.keys()) != {None}:
        raise ValueError("A plain observation space must be stored under the single key None")
    return obs_dict[None]


def obs_space_info(
    obs_space: spaces.Space,
) -> tuple[list[Any], dict[Any, tuple[int, ...]], dict[Any, np.dtype]]:
    """Keys, shapes and dtypes of the arrays that make up an observation.

    Dict and Tuple spaces are split into their sub-spaces (one level); any other space is
    stored under the key ``None``.

    :param obs_space: the observation space
    :return: (keys, shapes, dtypes)
    """
    subspaces: dict[Any, spaces.Space]
    if isinstance(obs_space, spaces.Dict):
        subspaces = dict(obs_space.spaces)
    elif isinstance(obs_space, spaces.Tuple):
        subspaces = dict(enumerate(obs_space.spaces))
    else:
        subspaces = {None: obs_space}
    keys: list[Any] = []
    shapes: dict[Any, tuple[int, ...]] = {}
    dtypes: dict[Any, np.dtype] = {}
    for key, box in subspaces.items():
        if isinstance(box, (spaces.Dict, spaces.Tuple)):
            raise NotImplementedError(f"Nested observation spaces are not supported (sub-space {key!r})")
        keys.append(key)
        shapes[key] = box.shape if box.shape is not None else ()
        dtypes[key] = box.dtype  # type: ignore[assignment]
    return keys, shapes, dtypes
