"""DummyVecEnv: steps its environments one after the other in the current process."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mlx_baselines3.common.utils import copy_infos
from mlx_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from mlx_baselines3.common.vec_env.util import copy_obs_dict, dict_to_obs, obs_space_info


def _check_env_instance(env: Any, index: int) -> gym.Env:
    """Make sure an env function returned a Gymnasium env."""
    if not isinstance(env, gym.Env):
        raise TypeError(
            f"The env function at index {index} returned {type(env).__name__}, not a gymnasium.Env. "
            "VecEnvs need Gymnasium environments (reset returns (obs, info), step returns 5 values)."
        )
    return env


class DummyVecEnv(VecEnv):
    """A VecEnv that calls its environments sequentially in the current Python process.

    Useful for simple environments, where the cost of inter-process communication would
    dominate, and for debugging.

    :param env_fns: functions that each build one environment
    :raises ValueError: if two functions return the same environment instance
    """

    actions: np.ndarray

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        if len(env_fns) == 0:
            raise ValueError("DummyVecEnv needs at least one env function")
        self.envs = [_check_env_instance(fn(), idx) for idx, fn in enumerate(env_fns)]
        if len({id(env.unwrapped) for env in self.envs}) != len(self.envs):
            raise ValueError(
                "The environment functions returned the same environment instance more than once. "
                "Each function must build a new env, e.g. `lambda: gym.make(...)` instead of "
                "`lambda: env`."
            )
        env = self.envs[0]
        super().__init__(len(env_fns), env.observation_space, env.action_space)
        obs_space = env.observation_space
        self.keys, shapes, dtypes = obs_space_info(obs_space)

        self.buf_obs = OrderedDict(
            [(key, np.zeros((self.num_envs, *tuple(shapes[key])), dtype=dtypes[key])) for key in self.keys]
        )
        self.buf_dones = np.zeros((self.num_envs,), dtype=bool)
        self.buf_rews = np.zeros((self.num_envs,), dtype=np.float32)
        self.buf_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        self.metadata = env.metadata

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        for env_idx in range(self.num_envs):
            obs, reward, terminated, truncated, info = self.envs[env_idx].step(self.actions[env_idx])
            self.buf_rews[env_idx] = reward
            self.buf_infos[env_idx] = info
            self.buf_dones[env_idx] = terminated or truncated
            # A time-limit end is not a true terminal state (bootstrapping needs this)
            info["TimeLimit.truncated"] = bool(truncated and not terminated)
            if self.buf_dones[env_idx]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[env_idx] = self.envs[env_idx].reset()
            self._save_obs(env_idx, obs)
        return (
            self._obs_from_buf(),
            np.copy(self.buf_rews),
            np.copy(self.buf_dones),
            copy_infos(self.buf_infos),
        )

    def reset(self) -> VecEnvObs:
        for env_idx in range(self.num_envs):
            maybe_options = {"options": self._options[env_idx]} if self._options[env_idx] else {}
            obs, self.reset_infos[env_idx] = self.envs[env_idx].reset(
                seed=self._seeds[env_idx], **maybe_options
            )
            self._save_obs(env_idx, obs)
        self._reset_seeds()
        self._reset_options()
        return self._obs_from_buf()

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` "
                "to obtain images.",
                stacklevel=2,
            )
            return [None for _ in self.envs]
        return [env.render() for env in self.envs]  # type: ignore[misc]

    def render(self, mode: str | None = None) -> np.ndarray | None:
        return super().render(mode=mode)

    def _save_obs(self, env_idx: int, obs: Any) -> None:
        for key in self.keys:
            if key is None:
                self.buf_obs[key][env_idx] = obs
            else:
                self.buf_obs[key][env_idx] = obs[key]

    def _obs_from_buf(self) -> VecEnvObs:
        return dict_to_obs(self.observation_space, copy_obs_dict(self.buf_obs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        target_envs = self._get_target_envs(indices)
        return [env.get_wrapper_attr(attr_name) for env in target_envs]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        target_envs = self._get_target_envs(indices)
        for env in target_envs:
            env.set_wrapper_attr(attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        target_envs = self._get_target_envs(indices)
        return [env.get_wrapper_attr(method_name)(*method_args, **method_kwargs) for env in target_envs]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        from mlx_baselines3.common import env_util

        target_envs = self._get_target_envs(indices)
        return [env_util.is_wrapped(env, wrapper_class) for env in target_envs]

    def _get_target_envs(self, indices: VecEnvIndices) -> list[gym.Env]:
        return [self.envs[i] for i in self._get_indices(indices)]
