"""StackedObservations: the frame-stacking buffer behind :class:`VecFrameStack`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from mlx_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first


class StackedObservations:
    """Keep the last ``n_stack`` observations of each env, concatenated along the channel axis.

    The newest observation is last. At a reset (and after an episode end) the stack is
    zeroed, so the first observations of an episode never see the previous episode. The
    terminal observation in ``infos`` is stacked with the frames of the episode that ended.

    :param num_envs: number of environments
    :param n_stack: number of observations to stack
    :param observation_space: a Box space or a Dict of Box spaces
    :param channels_order: ``"first"`` or ``"last"`` (or a dict of them per key); default:
        channel-first images are stacked on the first axis, everything else on the last
    """

    def __init__(
        self,
        num_envs: int,
        n_stack: int,
        observation_space: spaces.Box | spaces.Dict,
        channels_order: str | Mapping[str, str | None] | None = None,
    ):
        if n_stack < 1:
            raise ValueError(f"n_stack must be at least 1, got {n_stack}")
        self.n_stack = n_stack
        self.observation_space = observation_space
        self.stacked_observation_space: spaces.Space
        if isinstance(observation_space, spaces.Dict):
            if not isinstance(channels_order, Mapping):
                channels_order = {key: channels_order for key in observation_space.spaces.keys()}
            self.sub_stacked_observations = {
                key: StackedObservations(num_envs, n_stack, subspace, channels_order.get(key))  # type: ignore[arg-type]
                for key, subspace in observation_space.spaces.items()
            }
            self.stacked_observation_space = spaces.Dict(
                {key: sub.stacked_observation_space for key, sub in self.sub_stacked_observations.items()}
            )
        elif isinstance(observation_space, spaces.Box):
            if isinstance(channels_order, Mapping):
                raise TypeError("When the observation space is Box, channels_order can't be a dict.")
            self.channels_first, self.stack_dimension, self.stacked_shape, self.repeat_axis = (
                self.compute_stacking(n_stack, observation_space, channels_order)
            )
            low = np.repeat(observation_space.low, n_stack, axis=self.repeat_axis)
            high = np.repeat(observation_space.high, n_stack, axis=self.repeat_axis)
            self.stacked_observation_space = spaces.Box(
                low=low,
                high=high,
                dtype=observation_space.dtype,  # type: ignore[arg-type]
            )
            self.stacked_obs = np.zeros((num_envs, *self.stacked_shape), dtype=observation_space.dtype)
        else:
            raise TypeError(
                f"StackedObservations only supports Box and Dict as observation spaces. {observation_space} was provided."
            )

    @staticmethod
    def compute_stacking(
        n_stack: int, observation_space: spaces.Box, channels_order: str | None = None
    ) -> tuple[bool, int, tuple[int, ...], int]:
        """Where to stack for this space.

        :param n_stack: number of observations to stack
        :param observation_space: the Box space of one observation
        :param channels_order: ``"first"``, ``"last"`` or None (detect for images, else last)
        :return: (channels_first, stack dimension of a batch, stacked shape of one observation,
            axis to repeat along for one observation)
        """
        if channels_order is None:
            channels_first = is_image_space(observation_space) and is_image_space_channels_first(
                observation_space
            )
        else:
            if channels_order not in {"last", "first"}:
                raise ValueError(f"channels_order must be 'last' or 'first', got {channels_order!r}")
            channels_first = channels_order == "first"
        if len(observation_space.shape) == 0:
            raise ValueError("Cannot stack observations of a scalar (shape ()) Box space")
        # The batch adds one leading dimension
        stack_dimension = 1 if channels_first else -1
        repeat_axis = 0 if channels_first else -1
        stacked_shape = list(observation_space.shape)
        stacked_shape[repeat_axis] *= n_stack
        return channels_first, stack_dimension, tuple(stacked_shape), repeat_axis

    def reset(self, observation: Any) -> Any:
        """Start all stacks from zeros plus the first observation.

        :param observation: the batch of first observations (array or dict of arrays)
        :return: the stacked observations
        """
        if isinstance(observation, dict):
            return {key: self.sub_stacked_observations[key].reset(obs) for key, obs in observation.items()}
        self.stacked_obs[...] = 0
        n_channels = observation.shape[self.stack_dimension]
        if self.channels_first:
            self.stacked_obs[:, -n_channels:, ...] = observation
        else:
            self.stacked_obs[..., -n_channels:] = observation
        return self.stacked_obs.copy()

    def update(
        self, observations: Any, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> tuple[Any, list[dict]]:
        """Push new observations; zero the stacks of finished episodes.

        :param observations: the batch of new observations
        :param dones: which envs just ended an episode (their observation is the next episode's first)
        :param infos: the infos; their ``terminal_observation`` entries are replaced by stacked ones
        :return: the stacked observations and the updated infos
        """
        if isinstance(observations, dict):
            sub_infos = {
                key: [
                    {"terminal_observation": info["terminal_observation"][key]}
                    if "terminal_observation" in info
                    else {}
                    for info in infos
                ]
                for key in observations.keys()
            }
            stacked_obs, stacked_infos = {}, {}
            for key, obs in observations.items():
                stacked_obs[key], stacked_infos[key] = self.sub_stacked_observations[key].update(
                    obs, dones, sub_infos[key]
                )
            for env_idx in range(len(infos)):
                if "terminal_observation" in infos[env_idx]:
                    infos[env_idx]["terminal_observation"] = {
                        key: stacked_infos[key][env_idx]["terminal_observation"] for key in stacked_infos
                    }
            return stacked_obs, infos

        shift = -observations.shape[self.stack_dimension]
        self.stacked_obs = np.roll(self.stacked_obs, shift, axis=self.stack_dimension)
        for env_idx, done in enumerate(dones):
            if not done:
                continue
            if "terminal_observation" in infos[env_idx]:
                old_terminal = infos[env_idx]["terminal_observation"]
                # The older frames of the finished episode, after the roll
                if self.channels_first:
                    previous_stack = self.stacked_obs[env_idx, :shift, ...]
                else:
                    previous_stack = self.stacked_obs[env_idx, ..., :shift]
                infos[env_idx]["terminal_observation"] = np.concatenate(
                    (previous_stack, old_terminal), axis=self.repeat_axis
                )
            else:
                warnings.warn(
                    "VecFrameStack wrapping a VecEnv without terminal_observation info", stacklevel=2
                )
            self.stacked_obs[env_idx] = 0
        if self.channels_first:
            self.stacked_obs[:, shift:, ...] = observations
        else:
            self.stacked_obs[..., shift:] = observations
        return self.stacked_obs.copy(), infos
