"""VecTransposeImage: channel-last images (H, W, C) to channel-first (C, H, W)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper


class VecTransposeImage(VecEnvWrapper):
    """Transpose image observations from (H, W, C) to (C, H, W), as SB3's CNN policies expect.

    Works on an image space or on the image keys of a Dict space; terminal observations in
    ``infos`` are transposed too.

    :param venv: the VecEnv to wrap
    :param skip: do nothing (lets callers wrap unconditionally and keep the type)
    """

    def __init__(self, venv: VecEnv, skip: bool = False):
        if not (is_image_space(venv.observation_space) or isinstance(venv.observation_space, spaces.Dict)):
            raise ValueError(
                f"The observation space must be an image or dictionary observation space, got {venv.observation_space}"
            )
        self.skip = skip
        if skip:
            super().__init__(venv)
            return
        observation_space: spaces.Space
        if isinstance(venv.observation_space, spaces.Dict):
            self.image_space_keys: list[str] = []
            observation_space = deepcopy(venv.observation_space)
            for key, space in observation_space.spaces.items():  # type: ignore[attr-defined]
                if is_image_space(space):
                    self.image_space_keys.append(key)
                    observation_space.spaces[key] = self.transpose_space(space, key)  # type: ignore[attr-defined]
        else:
            observation_space = self.transpose_space(venv.observation_space)  # type: ignore[arg-type]
        super().__init__(venv, observation_space=observation_space)

    @staticmethod
    def transpose_space(observation_space: spaces.Box, key: str = "") -> spaces.Box:
        """The channel-first version of a channel-last image space.

        :param observation_space: a (H, W, C) image space
        :param key: its key in a Dict space (for error messages)
        :return: the (C, H, W) space
        """
        if not is_image_space(observation_space):
            raise ValueError(f"The observation space {key} must be an image")
        if is_image_space_channels_first(observation_space):
            raise ValueError(f"The observation space {key} must follow the channel last convention")
        return spaces.Box(
            low=np.transpose(observation_space.low, (2, 0, 1)),
            high=np.transpose(observation_space.high, (2, 0, 1)),
            dtype=observation_space.dtype,  # type: ignore[arg-type]
        )

    @staticmethod
    def transpose_image(image: np.ndarray) -> np.ndarray:
        """Transpose one (H, W, C) image or a (N, H, W, C) batch to channel-first."""
        if len(image.shape) == 3:
            return np.transpose(image, (2, 0, 1))
        return np.transpose(image, (0, 3, 1, 2))

    def transpose_observations(self, observations: Any) -> Any:
        """Transpose an observation batch (or a single one, or a dict of them)."""
        if self.skip:
            return observations
        if isinstance(observations, dict):
            observations = dict(observations)
            for key in self.image_space_keys:
                observations[key] = self.transpose_image(observations[key])
            return observations
        return self.transpose_image(observations)

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        for idx, done in enumerate(dones):
            if done and "terminal_observation" in infos[idx]:
                infos[idx]["terminal_observation"] = self.transpose_observations(
                    infos[idx]["terminal_observation"]
                )
        return self.transpose_observations(observations), rewards, dones, infos

    def reset(self) -> VecEnvObs:
        return self.transpose_observations(self.venv.reset())

    def close(self) -> None:
        self.venv.close()
