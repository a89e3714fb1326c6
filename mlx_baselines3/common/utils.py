"""Small utilities shared by the algorithms: seeding, schedules, statistics, devices, run folders."""

from __future__ import annotations

import glob
import os
import random
import re
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import mlx.core as mx
import numpy as np

from mlx_baselines3.common.type_aliases import Schedule, TrainFreq, TrainFrequencyUnit

if TYPE_CHECKING:
    from mlx_baselines3.common.logger import Logger


def set_random_seed(seed: int, using_cuda: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator and MLX's global PRNG.

    :param seed: the seed
    :param using_cuda: accepted for SB3 compatibility; MLX uses one PRNG for every device.
    """
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


# ---------------------------------------------------------------------------------------------
# Schedules: callables of progress_remaining (1 -> 0). Classes (not closures) so that they can
# be described as JSON in a saved model.
# ---------------------------------------------------------------------------------------------


class ConstantSchedule:
    """A schedule that always returns ``val``."""

    def __init__(self, val: float) -> None:
        self.val = float(val)

    def __call__(self, progress_remaining: float) -> float:
        return self.val

    def __repr__(self) -> str:
        return f"ConstantSchedule(val={self.val})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConstantSchedule) and other.val == self.val


class LinearSchedule:
    """Linear interpolation from ``start`` to ``end`` over the first ``end_fraction`` of training.

    :param start: value at progress_remaining = 1
    :param end: value once ``end_fraction`` of training has passed
    :param end_fraction: fraction of training after which the value stays at ``end``
    """

    def __init__(self, start: float, end: float, end_fraction: float) -> None:
        self.start = float(start)
        self.end = float(end)
        self.end_fraction = float(end_fraction)

    def __call__(self, progress_remaining: float) -> float:
        progress = 1.0 - progress_remaining
        if self.end_fraction <= 0 or progress > self.end_fraction:
            return self.end
        return self.start + progress * (self.end - self.start) / self.end_fraction

    def __repr__(self) -> str:
        return f"LinearSchedule(start={self.start}, end={self.end}, end_fraction={self.end_fraction})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearSchedule) and (other.start, other.end, other.end_fraction) == (
            self.start,
            self.end,
            self.end_fraction,
        )


class FloatSchedule:
    """Wrap a schedule (or a constant) so that it always returns a Python float."""

    def __init__(self, value_schedule: Schedule | float) -> None:
        if isinstance(value_schedule, FloatSchedule):
            self.value_schedule: Schedule = value_schedule.value_schedule
        elif isinstance(value_schedule, (float, int)):
            self.value_schedule = ConstantSchedule(float(value_schedule))
        else:
            if not callable(value_schedule):
                raise TypeError(f"A schedule must be a float or a callable, got {value_schedule!r}")
            self.value_schedule = value_schedule

    def __call__(self, progress_remaining: float) -> float:
        return float(self.value_schedule(progress_remaining))

    def __repr__(self) -> str:
        return f"FloatSchedule({self.value_schedule!r})"


def get_schedule_fn(value_schedule: Schedule | float) -> Schedule:
    """Turn a constant or a callable into a schedule returning floats (SB3's helper)."""
    return FloatSchedule(value_schedule)


def get_linear_fn(start: float, end: float, end_fraction: float) -> Schedule:
    """SB3's name for :class:`LinearSchedule`."""
    return LinearSchedule(start, end, end_fraction)


def constant_fn(val: float) -> Schedule:
    """SB3's name for :class:`ConstantSchedule`."""
    return ConstantSchedule(val)


def linear_schedule(initial_value: float) -> Schedule:
    """Linear decay from ``initial_value`` to 0 (the RL-Zoo's ``lin_<value>``)."""
    return LinearSchedule(initial_value, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def safe_mean(arr: np.ndarray | list | deque) -> float:
    """Mean of ``arr``, or NaN when it is empty, without NumPy's empty-slice warning."""
    return float("nan") if len(arr) == 0 else float(np.mean(arr))


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]``; NaN when ``y_true`` has zero variance."""
    assert y_true.ndim == 1 and y_pred.ndim == 1
    var_y = np.var(y_true)
    return float("nan") if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y)


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def gpu_available() -> bool:
    """Whether MLX has a GPU backend here (Metal on a Mac, CUDA with ``mlx[cuda]``)."""
    try:
        return bool(mx.metal.is_available()) or bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
    except Exception:  # pragma: no cover - depends on the MLX build
        return False


def get_device(device: str | Any = "auto") -> mx.Device:
    """Resolve SB3-style device names to an MLX device.

    ``"auto"`` picks the GPU when MLX has one, otherwise the CPU. ``"cuda"``, ``"mps"`` and
    ``"gpu"`` all mean MLX's GPU and raise a clear error when there is none.
    """
    if isinstance(device, mx.Device):
        return device
    name = str(device).lower().split(":")[0]
    if name == "auto":
        return mx.Device(mx.gpu) if gpu_available() else mx.Device(mx.cpu)
    if name == "cpu":
        return mx.Device(mx.cpu)
    if name in ("gpu", "cuda", "mps", "metal"):
        if not gpu_available():
            # SB3 falls back to the CPU when CUDA is asked for and absent; say so.
            warnings.warn(
                f"device={device!r} was requested but MLX has no GPU backend here: using the CPU "
                "(install mlx[cuda13] on Linux with an NVIDIA GPU, or use an Apple-silicon Mac)",
                UserWarning,
                stacklevel=3,
            )
            return mx.Device(mx.cpu)
        return mx.Device(mx.gpu)
    raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu' or 'gpu'")


def obs_as_mx(obs: np.ndarray | dict[str, np.ndarray]) -> mx.array | dict[str, mx.array]:
    """Move a NumPy array (or a dict of them) to MLX (float64 becomes float32: GPUs lack float64).

    The one NumPy -> MLX conversion used for observations, rollouts and replay samples.
    """
    if isinstance(obs, dict):
        return {key: _to_mx(value) for key, value in obs.items()}
    return _to_mx(obs)


def _to_mx(value: np.ndarray) -> mx.array:
    value = np.asarray(value)
    if value.dtype == np.float64:
        value = value.astype(np.float32)
    return mx.array(value)


# SB3's name
obs_as_tensor = obs_as_mx


# ---------------------------------------------------------------------------------------------
# Parameter trees
# ---------------------------------------------------------------------------------------------


def polyak_update(params: Any, target_params: Any, tau: float | mx.array) -> Any:
    """Polyak averaging on parameter trees: returns ``tau * params + (1 - tau) * target_params``.

    Works on any matching pytrees of ``mx.array`` (e.g. ``module.parameters()``); apply the
    result with ``target_module.update(result)``.
    """
    from mlx.utils import tree_map

    if isinstance(tau, (int, float)) and tau == 1.0:
        # A copy: the online arrays themselves (the library never writes into an array, so sharing
        # them costs nothing; DQN's default copies every target_update_interval env steps).
        return tree_map(lambda p, t: p, params, target_params)
    return tree_map(lambda p, t: tau * p + (1.0 - tau) * t, params, target_params)


_IMMUTABLE_INFO_VALUES = (bool, int, float, str, bytes, type(None), np.bool_, np.number)


def copy_observation(obs: Any) -> Any:
    """``copy.deepcopy(obs)`` for an observation batch, without its generic machinery.

    Arrays are copied with ``ndarray.copy`` and dicts / OrderedDicts of arrays key by key (this is
    what ``deepcopy`` produces for them, at ~1/5 of its cost, which is paid on every env step);
    anything else goes to ``deepcopy``.
    """
    if isinstance(obs, np.ndarray):
        return obs.copy()
    if type(obs) in (dict, OrderedDict) and all(isinstance(value, np.ndarray) for value in obs.values()):
        return type(obs)((key, value.copy()) for key, value in obs.items())
    return deepcopy(obs)


def copy_infos(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``copy.deepcopy(infos)`` for a VecEnv's info dicts, shallow where that is the same thing.

    An info dict whose values are all immutable scalars (the common ``{"TimeLimit.truncated": False}``)
    is copied with ``dict``; if any info holds something else (a terminal observation, an episode
    record) the whole list goes through ``deepcopy``, as before.
    """
    if all(
        type(info) is dict and all(isinstance(value, _IMMUTABLE_INFO_VALUES) for value in info.values())
        for info in infos
    ):
        return [dict(info) for info in infos]
    return deepcopy(infos)


def zip_strict(*iterables: Iterable) -> Iterable:
    """``zip`` that raises when the iterables have different lengths."""
    return zip(*iterables, strict=True)


# ---------------------------------------------------------------------------------------------
# Logging folders
# ---------------------------------------------------------------------------------------------


def get_latest_run_id(log_path: str = "", log_name: str = "") -> int:
    """Highest ``N`` among folders ``{log_path}/{log_name}_N`` (0 when there is none)."""
    max_run_id = 0
    for path in glob.glob(os.path.join(log_path, f"{glob.escape(log_name)}_[0-9]*")):
        file_name = os.path.basename(path)
        match = re.fullmatch(re.escape(log_name) + r"_(\d+)", file_name)
        if match:
            max_run_id = max(max_run_id, int(match.group(1)))
    return max_run_id


def configure_logger(
    verbose: int = 0,
    tensorboard_log: str | None = None,
    tb_log_name: str = "",
    reset_num_timesteps: bool = True,
) -> Logger:
    """Build the logger an algorithm uses, as SB3 does (run folders ``{tb_log_name}_N``)."""
    from mlx_baselines3.common.logger import configure

    save_path, format_strings = None, ["stdout"]
    if tensorboard_log is not None:
        latest_run_id = get_latest_run_id(tensorboard_log, tb_log_name)
        if not reset_num_timesteps:
            # Continue in the same folder as the previous run
            latest_run_id -= 1
        save_path = os.path.join(tensorboard_log, f"{tb_log_name}_{latest_run_id + 1}")
        format_strings = ["stdout", "tensorboard"] if verbose >= 1 else ["tensorboard"]
    elif verbose == 0:
        format_strings = [""]
    return configure(save_path, format_strings=format_strings)


def check_for_correct_spaces(
    env: Any, observation_space: gym.spaces.Space, action_space: gym.spaces.Space
) -> None:
    """Raise a ValueError naming both spaces when ``env``'s spaces differ from the given ones."""
    if observation_space != env.observation_space:
        raise ValueError(
            f"Observation spaces do not match: the model expects {observation_space}, "
            f"the env has {env.observation_space}"
        )
    if action_space != env.action_space:
        raise ValueError(
            f"Action spaces do not match: the model expects {action_space}, the env has {env.action_space}"
        )


def should_collect_more_steps(
    train_freq: TrainFreq, num_collected_steps: int, num_collected_episodes: int
) -> bool:
    """Whether the off-policy collect loop should continue (SB3's semantics)."""
    if train_freq.unit == TrainFrequencyUnit.STEP:
        return num_collected_steps < train_freq.frequency
    if train_freq.unit == TrainFrequencyUnit.EPISODE:
        return num_collected_episodes < train_freq.frequency
    raise ValueError(f"The unit of train_freq must be 'step' or 'episode', not {train_freq.unit!r}")
