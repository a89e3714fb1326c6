"""VecFrameStack: stack the last observations of each env."""

from __future__ import annotations

from collections.abc import Mapping

from gymnasium import spaces

from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper
from mlx_baselines3.common.vec_env.stacked_observations import StackedObservations


class VecFrameStack(VecEnvWrapper):
    """Stack the last ``n_stack`` observations of each env along the channel axis.

    :param venv: the VecEnv to wrap (Box or Dict observation space)
    :param n_stack: number of observations to stack
    :param channels_order: ``"first"`` or ``"last"`` (or a dict per key); default: detect
        channel-first images, stack on the last axis otherwise
    """

    def __init__(self, venv: VecEnv, n_stack: int, channels_order: str | Mapping[str, str] | None = None):
        if not isinstance(venv.observation_space, (spaces.Box, spaces.Dict)):
            raise TypeError(
                "VecFrameStack only works with gym.spaces.Box and gym.spaces.Dict observation spaces, "
                f"got {venv.observation_space}"
            )
        self.stacked_obs = StackedObservations(venv.num_envs, n_stack, venv.observation_space, channels_order)
        super().__init__(venv, observation_space=self.stacked_obs.stacked_observation_space)

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        observations, infos = self.stacked_obs.update(observations, dones, infos)
        return observations, rewards, dones, infos

    def reset(self) -> VecEnvObs:
        observation = self.venv.reset()
        return self.stacked_obs.reset(observation)
