"""Helpers to build vectorised environments and to inspect Gymnasium wrapper chains."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import gymnasium as gym

from mlx_baselines3.common.monitor import Monitor
from mlx_baselines3.common.vec_env.base_vec_env import VecEnv
from mlx_baselines3.common.vec_env.dummy_vec_env import DummyVecEnv
from mlx_baselines3.common.vec_env.subproc_vec_env import SubprocVecEnv

__all__ = ["make_vec_env", "is_wrapped", "unwrap_wrapper"]

WrapperT = TypeVar("WrapperT", bound=gym.Wrapper)


def unwrap_wrapper(env: gym.Env, wrapper_class: type[WrapperT]) -> WrapperT | None:
    """Return the outermost wrapper of type ``wrapper_class`` in the chain of ``env``.

    :param env: the (wrapped) environment
    :param wrapper_class: the wrapper type to look for
    :return: the wrapper, or None if the env is not wrapped with it
    """
    env_tmp: Any = env
    while isinstance(env_tmp, gym.Wrapper):
        if isinstance(env_tmp, wrapper_class):
            return env_tmp
        env_tmp = env_tmp.env
    return None


def is_wrapped(env: gym.Env, wrapper_class: type[gym.Wrapper]) -> bool:
    """Tell whether ``env`` is wrapped, at any depth, with ``wrapper_class``.

    :param env: the (wrapped) environment
    :param wrapper_class: the wrapper type to look for
    """
    return unwrap_wrapper(env, wrapper_class) is not None


def make_vec_env(
    env_id: str | Callable[..., gym.Env],
    n_envs: int = 1,
    seed: int | None = None,
    start_index: int = 0,
    monitor_dir: str | None = None,
    wrapper_class: Callable[..., gym.Env] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None,
    vec_env_cls_kwargs: dict[str, Any] | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
    wrapper_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """Create ``n_envs`` environments, each wrapped in a :class:`Monitor`, in a VecEnv.

    :param env_id: a registered Gymnasium id or a callable building the env
    :param n_envs: number of environments
    :param seed: base seed; env ``i`` is seeded with ``seed + start_index + i`` at the first
        reset (its action space too)
    :param start_index: index of the first env (used for seeds and monitor file names)
    :param monitor_dir: folder for the monitor CSV files (None: no file)
    :param wrapper_class: extra wrapper applied after the Monitor
    :param env_kwargs: keyword arguments of the env constructor / ``gym.make``
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``
    :param vec_env_cls_kwargs: keyword arguments of the VecEnv constructor
    :param monitor_kwargs: keyword arguments of :class:`Monitor`
    :param wrapper_kwargs: keyword arguments of ``wrapper_class``
    :return: the VecEnv
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be at least 1, got {n_envs}")
    env_kwargs = env_kwargs or {}
    vec_env_kwargs = vec_env_cls_kwargs or {}
    monitor_kwargs = monitor_kwargs or {}
    wrapper_kwargs = wrapper_kwargs or {}

    def make_env(rank: int) -> Callable[[], gym.Env]:
        def _init() -> gym.Env:
            if isinstance(env_id, str):
                # Default to rgb_array rendering (as SB3 does), unless the env refuses the keyword
                kwargs = {"render_mode": "rgb_array", **env_kwargs}
                try:
                    env = gym.make(env_id, **kwargs)
                except TypeError:
                    env = gym.make(env_id, **env_kwargs)
            else:
                env = env_id(**env_kwargs)
            if seed is not None:
                # Seeds the action space; the env itself is seeded by VecEnv.seed at reset
                env.action_space.seed(seed + rank)
            monitor_path = os.path.join(monitor_dir, str(rank)) if monitor_dir is not None else None
            if monitor_path is not None and monitor_dir is not None:
                os.makedirs(monitor_dir, exist_ok=True)
            env = Monitor(env, filename=monitor_path, **monitor_kwargs)
            if wrapper_class is not None:
                env = wrapper_class(env, **wrapper_kwargs)
            return env

        return _init

    if vec_env_cls is None:
        vec_env_cls = DummyVecEnv
    vec_env = vec_env_cls([make_env(i + start_index) for i in range(n_envs)], **vec_env_kwargs)
    # Seeds are applied at the next reset
    vec_env.seed(seed)
    return vec_env
