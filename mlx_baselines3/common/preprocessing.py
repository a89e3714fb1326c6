"""Observation/action space helpers and observation preprocessing (MLX side)."""

from __future__ import annotations

import warnings

import mlx.core as mx
import numpy as np
from gymnasium import spaces

SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)


def is_image_space_channels_first(observation_space: spaces.Box) -> bool:
    """Guess whether an image space is channel-first (C, H, W): the smallest dim is first."""
    smallest_dimension = np.argmin(observation_space.shape).item()
    if smallest_dimension == 1:
        warnings.warn("Treating image space as channels-last, while second dimension was smallest of the three.", stacklevel=2)
    return smallest_dimension == 0


def is_image_space(
    observation_space: spaces.Space,
    check_channels: bool = False,
    normalized_image: bool = False,
) -> bool:
    """Whether ``observation_space`` is an image: a 3-D uint8 Box in [0, 255] (SB3's rule).

    :param check_channels: also require 1, 3 or 4 channels
    :param normalized_image: accept any dtype / bounds (images already scaled)
    """
    check_dtype = check_bounds = not normalized_image
    if isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3:
        if check_dtype and observation_space.dtype != np.uint8:
            return False
        incorrect_bounds = np.any(observation_space.low != 0) or np.any(observation_space.high != 255)
        if check_bounds and incorrect_bounds:
            return False
        if not check_channels:
            return True
        if is_image_space_channels_first(observation_space):
            n_channels = observation_space.shape[0]
        else:
            n_channels = observation_space.shape[-1]
        return n_channels in [1, 3, 4]
    return False


def maybe_transpose(observation: np.ndarray, observation_space: spaces.Space) -> np.ndarray:
    """Transpose a channel-last image observation to channel-first when the space is channel-first."""
    if is_image_space(observation_space):
        if not (observation.shape == observation_space.shape or observation.shape[1:] == observation_space.shape):
            transpose_obs = np.transpose(observation, (0, 3, 1, 2)) if observation.ndim == 4 else np.transpose(
                observation, (2, 0, 1)
            )
            if transpose_obs.shape[-3:] == observation_space.shape:
                observation = transpose_obs
    return observation


def check_for_nested_spaces(obs_space: spaces.Space) -> None:
    """Raise for Dict/Tuple spaces nested inside Dict/Tuple spaces (not supported, as in SB3)."""
    if isinstance(obs_space, (spaces.Dict, spaces.Tuple)):
        sub_spaces = obs_space.spaces.values() if isinstance(obs_space, spaces.Dict) else obs_space.spaces
        for sub_space in sub_spaces:
            if isinstance(sub_space, (spaces.Dict, spaces.Tuple)):
                raise NotImplementedError(
                    "Nested observation spaces are not supported (Tuple/Dict space inside Tuple/Dict space)."
                )


def check_observation_space(observation_space: spaces.Space) -> None:
    """Raise a clear error for observation spaces the policies cannot handle."""
    if not isinstance(observation_space, SUPPORTED_OBSERVATION_SPACES):
        raise NotImplementedError(
            f"Observation space {observation_space} ({type(observation_space).__name__}) is not supported: "
            f"use one of {[cls.__name__ for cls in SUPPORTED_OBSERVATION_SPACES]}"
        )
    check_for_nested_spaces(observation_space)
    if isinstance(observation_space, spaces.Dict):
        for key, sub_space in observation_space.spaces.items():
            if not isinstance(sub_space, SUPPORTED_OBSERVATION_SPACES):
                raise NotImplementedError(f"Observation space {sub_space} under key {key!r} is not supported")


def get_obs_shape(observation_space: spaces.Space) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
    """Shape of one observation as stored in buffers."""
    if isinstance(observation_space, spaces.Box):
        return observation_space.shape
    if isinstance(observation_space, spaces.Discrete):
        return (1,)
    if isinstance(observation_space, spaces.MultiDiscrete):
        return (len(observation_space.nvec),)
    if isinstance(observation_space, spaces.MultiBinary):
        return observation_space.shape
    if isinstance(observation_space, spaces.Dict):
        return {key: get_obs_shape(sub) for key, sub in observation_space.spaces.items()}  # type: ignore[misc]
    raise NotImplementedError(f"{observation_space} observation space is not supported")


def get_flattened_obs_dim(observation_space: spaces.Space) -> int:
    """Dimension of the observation once preprocessed and flattened (one-hot for discrete spaces)."""
    if isinstance(observation_space, spaces.MultiDiscrete):
        return int(sum(observation_space.nvec))
    if isinstance(observation_space, spaces.Discrete):
        return int(observation_space.n)
    return int(spaces.utils.flatdim(observation_space))


def get_action_dim(action_space: spaces.Space) -> int:
    """Number of action components stored per step."""
    if isinstance(action_space, spaces.Box):
        return int(np.prod(action_space.shape))
    if isinstance(action_space, spaces.Discrete):
        return 1
    if isinstance(action_space, spaces.MultiDiscrete):
        return len(action_space.nvec)
    if isinstance(action_space, spaces.MultiBinary):
        assert isinstance(action_space.n, int), "Multi-dimensional MultiBinary action space is not supported"
        return int(action_space.n)
    raise NotImplementedError(f"Action space {action_space} is not supported")


def _one_hot(indices: mx.array, num_classes: int) -> mx.array:
    return (indices[..., None] == mx.arange(num_classes)).astype(mx.float32)


def preprocess_obs(
    obs: mx.array | dict[str, mx.array],
    observation_space: spaces.Space,
    normalize_images: bool = True,
) -> mx.array | dict[str, mx.array]:
    """Turn raw observations into network inputs (float32).

    Images (uint8 Box) are scaled to [0, 1] when ``normalize_images``; Discrete becomes one-hot;
    MultiDiscrete the concatenation of one-hots; MultiBinary and other Box are cast to float32.
    """
    if isinstance(observation_space, spaces.Dict):
        assert isinstance(obs, dict), f"Expected a dict observation, got {type(obs)}"
        return {
            key: preprocess_obs(obs[key], sub_space, normalize_images)  # type: ignore[misc]
            for key, sub_space in observation_space.spaces.items()
        }
    assert isinstance(obs, mx.array)
    if isinstance(observation_space, spaces.Box):
        if normalize_images and is_image_space(observation_space):
            return obs.astype(mx.float32) / 255.0
        return obs.astype(mx.float32)
    if isinstance(observation_space, spaces.Discrete):
        start = int(observation_space.start)
        indices = obs.astype(mx.int32).reshape(-1) - start
        return _one_hot(indices, int(observation_space.n))
    if isinstance(observation_space, spaces.MultiDiscrete):
        nvec = [int(n) for n in np.asarray(observation_space.nvec).reshape(-1)]
        obs = obs.astype(mx.int32).reshape(-1, len(nvec))
        return mx.concatenate([_one_hot(obs[:, i], n) for i, n in enumerate(nvec)], axis=-1)
    if isinstance(observation_space, spaces.MultiBinary):
        return obs.astype(mx.float32)
    raise NotImplementedError(f"Preprocessing not implemented for {observation_space}")
