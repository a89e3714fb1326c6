"""Vectorised environments and their wrappers (SB3's ``stable_baselines3.common.vec_env``)."""

from __future__ import annotations

from copy import deepcopy
from typing import TypeVar

from mlx_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
    VecEnvWrapper,
    tile_images,
)
from mlx_baselines3.common.vec_env.dummy_vec_env import DummyVecEnv
from mlx_baselines3.common.vec_env.stacked_observations import StackedObservations
from mlx_baselines3.common.vec_env.subproc_vec_env import SubprocVecEnv, SubprocVecEnvError
from mlx_baselines3.common.vec_env.vec_check_nan import VecCheckNan
from mlx_baselines3.common.vec_env.vec_extract_dict_obs import VecExtractDictObs
from mlx_baselines3.common.vec_env.vec_frame_stack import VecFrameStack
from mlx_baselines3.common.vec_env.vec_monitor import VecMonitor
from mlx_baselines3.common.vec_env.vec_normalize import VecNormalize
from mlx_baselines3.common.vec_env.vec_transpose import VecTransposeImage

VecEnvWrapperT = TypeVar("VecEnvWrapperT", bound=VecEnvWrapper)


def unwrap_vec_wrapper(env: VecEnv, vec_wrapper_class: type[VecEnvWrapperT]) -> VecEnvWrapperT | None:
    """Return the outermost VecEnv wrapper of type ``vec_wrapper_class`` around ``env``.

    :param env: the (wrapped) VecEnv
    :param vec_wrapper_class: the wrapper type to look for
    :return: the wrapper, or None if there is none
    """
    env_tmp: VecEnv = env
    while isinstance(env_tmp, VecEnvWrapper):
        if isinstance(env_tmp, vec_wrapper_class):
            return env_tmp
        env_tmp = env_tmp.venv
    return None


def unwrap_vec_normalize(env: VecEnv) -> VecNormalize | None:
    """Return the :class:`VecNormalize` wrapper around ``env``, if any.

    :param env: the (wrapped) VecEnv
    """
    return unwrap_vec_wrapper(env, VecNormalize)


def is_vecenv_wrapped(env: VecEnv, vec_wrapper_class: type[VecEnvWrapper]) -> bool:
    """Tell whether ``env`` is wrapped, at any depth, with ``vec_wrapper_class``.

    :param env: the (wrapped) VecEnv
    :param vec_wrapper_class: the wrapper type to look for
    """
    return unwrap_vec_wrapper(env, vec_wrapper_class) is not None


def sync_envs_normalization(env: VecEnv, eval_env: VecEnv) -> None:
    """Copy the normalisation statistics of ``env`` into ``eval_env`` (e.g. before evaluating).

    Every :class:`VecNormalize` in the two wrapper stacks is matched level by level.

    :param env: the training VecEnv
    :param eval_env: the evaluation VecEnv
    """
    env_tmp, eval_env_tmp = env, eval_env
    while isinstance(env_tmp, VecEnvWrapper):
        if not isinstance(eval_env_tmp, VecEnvWrapper):
            raise TypeError(
                "Error while synchronizing normalization: the evaluation env has fewer VecEnv wrappers "
                f"than the training env ({type(env_tmp).__name__} has no counterpart)"
            )
        if isinstance(env_tmp, VecNormalize):
            if not isinstance(eval_env_tmp, VecNormalize):
                raise TypeError(
                    "Error while synchronizing normalization: the training env has a VecNormalize wrapper "
                    f"where the evaluation env has {type(eval_env_tmp).__name__}"
                )
            # Only the statistics are copied; the flags (training, norm_reward) stay as they are
            if hasattr(env_tmp, "obs_rms"):
                eval_env_tmp.obs_rms = deepcopy(env_tmp.obs_rms)
            eval_env_tmp.ret_rms = deepcopy(env_tmp.ret_rms)
        env_tmp = env_tmp.venv
        eval_env_tmp = eval_env_tmp.venv


__all__ = [
    "CloudpickleWrapper",
    "VecEnv",
    "VecEnvIndices",
    "VecEnvObs",
    "VecEnvStepReturn",
    "VecEnvWrapper",
    "tile_images",
    "DummyVecEnv",
    "SubprocVecEnv",
    "SubprocVecEnvError",
    "StackedObservations",
    "VecCheckNan",
    "VecExtractDictObs",
    "VecFrameStack",
    "VecMonitor",
    "VecNormalize",
    "VecTransposeImage",
    "unwrap_vec_wrapper",
    "unwrap_vec_normalize",
    "is_vecenv_wrapped",
    "sync_envs_normalization",
]
